"""One source of truth for configuration: `BAY_*` environment variables, then defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url


def _default_home() -> Path:
    return Path.home() / ".servicebay"


class Settings(BaseSettings):
    """An instance's settings; every field can be set as `BAY_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="BAY_", extra="ignore")

    home: Path = Field(default_factory=_default_home)
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the metadata database; SQLite under `home` when unset.",
    )
    master_key: str | None = Field(
        default=None,
        description="Base64 (urlsafe) 32-byte key; read from `home/master.key` when unset.",
        repr=False,
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8600, ge=1, le=65535)
    public_url: str | None = Field(
        default=None, description="The URL users reach the gateway at, for links."
    )
    log_format: Literal["json", "console"] = "console"
    log_level: str = "INFO"
    auth_cache_seconds: float = Field(
        default=2.0,
        ge=0,
        le=4.0,
        description="How long a key or grant lookup is reused; revocations apply after it.",
    )
    rate_limit_per_minute: int = Field(default=1200, ge=1)
    rate_limit_burst: int = Field(default=200, ge=1)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    audit_batch_max: int = Field(default=500, ge=1)
    templates_dir: Path | None = Field(
        default=None,
        description="The organisation's templates for `bay new`, a folder per template; "
        "`home/templates` when unset.",
    )
    domain: str | None = Field(
        default=None,
        description="Webhooks and apps are also served at `{name}.{domain}` (e.g. `bay.corp`).",
    )
    workers: int = Field(default=4, ge=1, le=256, description="Runs a worker node runs at once.")
    run_log_max_bytes: int = Field(
        default=5 * 1024 * 1024,
        ge=1024,
        description="A run's log is kept up to this size; the rest is dropped with a note.",
    )
    smtp_host: str | None = Field(
        default=None, description="The SMTP server alert e-mails go through; none when unset."
    )
    smtp_port: int = Field(
        default=25, ge=1, le=65535, description="25, 587 with STARTTLS, 465 with SSL."
    )
    smtp_username: str | None = Field(
        default=None, description="Log in to the SMTP server as this user, when set."
    )
    smtp_password: str | None = Field(
        default=None, repr=False, description="The SMTP user's password (never logged)."
    )
    smtp_from: str | None = Field(
        default=None,
        description="The alert e-mails' sender; `servicebay@<this host's name>` when unset.",
    )
    smtp_starttls: bool = Field(
        default=False, description="Upgrade the SMTP connection with STARTTLS (port 587)."
    )
    smtp_ssl: bool = Field(
        default=False, description="Speak SMTP over TLS from the start (port 465)."
    )
    alert_slack_secret: str | None = Field(
        default=None,
        pattern=r"^[A-Z_][A-Z0-9_]{0,127}$",
        description="The name of the secret holding the Slack incoming-webhook URL alerts "
        "are posted to; the secret must allow `alerts`.",
    )
    alert_webhook_url: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        repr=False,
        description="A URL each alert is POSTed to as JSON (it may carry a token: never logged).",
    )
    alert_retry_attempts: int = Field(
        default=3, ge=1, le=20, description="Tries per alert and channel before giving up."
    )
    alert_retry_backoff_seconds: float = Field(
        default=2.0,
        ge=0,
        le=300,
        description="The wait before a channel's second try, doubled after each try.",
    )
    alert_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="How long one try of one channel may take."
    )

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'servicebay.db'}"

    @property
    def resolved_database_url_display(self) -> str:
        """The database URL with any password masked, for messages and logs."""
        return make_url(self.resolved_database_url).render_as_string(hide_password=True)

    @property
    def resolved_templates_dir(self) -> Path:
        return self.templates_dir or self.home / "templates"

    @property
    def master_key_path(self) -> Path:
        return self.home / "master.key"

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")
