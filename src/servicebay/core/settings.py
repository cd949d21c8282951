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
