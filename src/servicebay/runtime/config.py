"""Deployment folders and their config files: `cron.json`, `webhook.json`,
`server_deployment.json`, `service.json`.

Analysts write these by hand, comments and all, so every problem is reported at once and
each one says where (file, line, column, field), what is wrong and how to fix it: a
missing comma names the line it belongs on, an unknown key suggests the one meant, a bad
cron line names the bad field. The article's spellings (`"build command"`) are accepted
beside their snake_case twins. The pydantic models are also the source of the JSON
Schemas published for editors (`docs/schemas/`).
"""

from __future__ import annotations

import argparse
import bisect
import difflib
import json
import re
import shlex
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal, TypeAlias

from annotated_types import Ge, Gt, Le, Lt
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from servicebay.core import jsonc
from servicebay.core.errors import InvalidInput
from servicebay.core.grants import EMAIL, MAX_EMAIL_LENGTH, NAME
from servicebay.core.secret_store import SECRET_NAME
from servicebay.runtime.bundle import BundleError, list_files
from servicebay.runtime.schedule import CronSchedule, ScheduleError, parse_cron, time_zone

DeploymentKind = Literal["cron", "webhook", "server", "service"]
CONFIG_FILES: dict[str, DeploymentKind] = {
    "cron.json": "cron",
    "webhook.json": "webhook",
    "server_deployment.json": "server",
    "service.json": "service",
}
README = "README.md"
REQUIREMENTS = "requirements.txt"
DEPLOYMENT_NAME = re.compile(rf"^{NAME}$")
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")
RESERVED_ENV = frozenset({"INTERNAL_API_KEY", "PORT"})
"""Set by the platform for every script, with every name starting `BAY_`."""
EDITOR_SCHEMA_KEY = "$schema"
"""Accepted and ignored at the top of any config file: it tells an editor the schema."""
MAX_SYNC_TIMEOUT = 300
"""A sync webhook's caller waits on an open HTTP request; longer work goes async."""


@dataclass(frozen=True)
class Problem:
    """One thing to fix: where (`line`/`column` 1-based, when known), what, and how."""

    file: str
    line: int | None
    column: int | None
    field: str | None
    message: str
    fix: str | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}:{self.column}"
        what = f"{self.field}: {self.message}" if self.field else self.message
        return f"{where}: {what}" + (f" (fix: {self.fix})" if self.fix else "")

    def as_error(self) -> dict[str, Any]:
        """The problem as an item of an HTTP 400's `errors`."""
        error: dict[str, Any] = {
            "loc": [self.file, *([self.field] if self.field else [])],
            "msg": self.message,
            "type": "value_error",
        }
        extra = {"line": self.line, "column": self.column, "fix": self.fix}
        return error | {name: value for name, value in extra.items() if value is not None}


class ConfigInvalid(InvalidInput):
    """One or more problems with a deployment's config; each is in `problems`."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        summary = f"{count} problem{'s' if count != 1 else ''}: " + "; ".join(
            str(problem) for problem in self.problems
        )
        super().__init__(summary, errors=[problem.as_error() for problem in self.problems])


class FolderInvalid(ConfigInvalid):
    """A deployment folder that cannot be deployed as it is."""


def _fail(
    message: str, fix: str, *, field: str | None = None, key: str | None = None
) -> PydanticCustomError:
    """A validation error carrying its fix, and optionally the field (for checks that
    span fields) or the nested key it is about, so the problem points at the right line."""
    context: dict[str, Any] = {"fix": fix}
    if field is not None:
        context["field"] = field
    if key is not None:
        context["key"] = key
    return PydanticCustomError("config", message, context)


def _deployment_name(name: str) -> str:
    if not DEPLOYMENT_NAME.fullmatch(name):
        better = re.sub(r"[^a-z0-9_-]+", "_", name.lower()).strip("_-")
        better = (better if better[:1].isalpha() else f"x{better}")[:63]
        raise _fail(
            f"{name!r} cannot be a name: it becomes a URL",
            f"use lowercase letters, digits, '_' or '-', starting with a letter, e.g. {better!r}",
        )
    return name


def _script(path: str) -> str:
    if "\\" in path:
        raise _fail(f"{path!r} uses '\\'", "separate folders with '/', e.g. 'jobs/report.py'")
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts:
        raise _fail(
            f"{path!r} is outside the deployment folder",
            "name a file inside the folder, relative to it, e.g. 'main.py'",
        )
    if pure.suffix != ".py":
        raise _fail(
            f"{path!r} is not a Python file",
            "name the .py file to run; to start any other program, deploy it with "
            "server_deployment.json and its start_command",
        )
    return pure.as_posix()


def _command(command: str) -> str:
    try:
        words = shlex.split(command)
    except ValueError as error:
        raise _fail(
            f"cannot be read as a command line: {error}", "close every quote you open"
        ) from None
    if not words:
        raise _fail("is empty", "write the command, e.g. 'python app.py'")
    return command


def _url_path(path: str) -> str:
    if not path.startswith("/") or any(char.isspace() for char in path):
        raise _fail(f"{path!r} is not a URL path", "start it with '/', e.g. '/healthz'")
    return path


def _static_folder(path: str) -> str:
    """A folder inside the deployment's, so the files served never leave it."""
    pure = PurePosixPath(path)
    if "\\" in path or not path.strip() or pure.is_absolute() or ".." in pure.parts:
        raise _fail(
            f"{path!r} is not a folder inside the deployment folder",
            "name the built folder relative to it, e.g. 'dist' (or '.' for the folder itself)",
        )
    return pure.as_posix()


def _environment(env: dict[str, str]) -> dict[str, str]:
    for name, value in env.items():
        if not ENV_NAME.fullmatch(name):
            raise _fail(
                f"{name!r} is not an environment variable name",
                "use UPPER_CASE letters, digits and '_', e.g. REPORT_CHANNEL",
                key=name,
            )
        if name in RESERVED_ENV or name.startswith("BAY_"):
            raise _fail(
                f"{name} is set by the platform",
                "pick another name: INTERNAL_API_KEY, PORT and every BAY_ variable are "
                "the platform's",
                key=name,
            )
        if "\x00" in value:
            raise _fail(f"the value of {name} holds a NUL character", "remove it", key=name)
    return env


def _secret_names(names: list[str]) -> list[str]:
    for name in names:
        if not SECRET_NAME.fullmatch(name):
            raise _fail(
                f"{name!r} is not a secret name",
                "name the secret as `bay secrets set` did: UPPER_CASE letters, digits "
                "and '_', e.g. SALESFORCE_API_KEY (never the secret's value)",
            )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise _fail(f"{', '.join(repeated)} listed twice", "list each secret once")
    return names


def _emails(addresses: list[str]) -> list[str]:
    for address in addresses:
        if len(address) > MAX_EMAIL_LENGTH or not EMAIL.fullmatch(address):
            raise _fail(f"{address!r} is not an e-mail address", "write it as name@example.com")
    return addresses


# `json_schema_extra` shows editors the rules the validators enforce with better words.
DeploymentName = Annotated[
    str,
    AfterValidator(_deployment_name),
    Field(json_schema_extra={"pattern": DEPLOYMENT_NAME.pattern}),
]
ScriptPath = Annotated[
    str,
    Field(min_length=1, json_schema_extra={"pattern": r"^[^/\\].*\.py$"}),
    AfterValidator(_script),
]
Command = Annotated[str, AfterValidator(_command), Field(json_schema_extra={"minLength": 1})]
Environment = Annotated[
    dict[str, str],
    AfterValidator(_environment),
    Field(
        json_schema_extra={"propertyNames": {"pattern": ENV_NAME.pattern}},
        description="Environment variables for the script, `NAME: value`. Names are "
        "UPPER_CASE; INTERNAL_API_KEY, PORT and BAY_* are the platform's. Put credentials "
        "in secrets, not here.",
        examples=[{"REPORT_CHANNEL": "#sales"}],
    ),
]
MemoryMb = Annotated[
    int,
    Field(
        ge=64,
        le=65_536,
        description="Memory limit of the process, in MiB; exceeding it ends the run.",
    ),
]
SecretNames = Annotated[
    list[str],
    AfterValidator(_secret_names),
    Field(json_schema_extra={"items": {"type": "string", "pattern": SECRET_NAME.pattern}}),
]


class _Model(BaseModel):
    """Unknown keys are errors: a typo must not silently fall back to a default. Values
    keep their JSON types (`"600"` is not a number)."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


NOTIFY = "Who hears about failures, besides the owner's e-mail."


class Notify(_Model):
    """Who hears about a failure (once per failure streak, and again on recovery)."""

    email: Annotated[list[str], AfterValidator(_emails)] = Field(
        default_factory=list,
        description="More addresses to e-mail, besides the deployment's owner.",
        examples=[["me@example.com"]],
    )
    slack: bool = Field(
        default=True, description="Post to the instance's Slack channel, when it has one."
    )
    webhook: bool = Field(
        default=True, description="Call the instance's alert webhook, when it has one."
    )


class CronConfig(_Model):
    """cron.json: run a Python script on a schedule."""

    cron_frequency: str = Field(
        min_length=1,
        description="When to run: five fields `minute hour day-of-month month day-of-week`, "
        "or a macro such as `@daily`, read in `timezone`.",
        examples=["0 9 * * 5"],
    )
    script_to_run: ScriptPath = Field(
        description="The Python file to run, relative to the folder.",
        examples=["instagram_followers_to_slack.py"],
    )
    timezone: str = Field(
        default="UTC",
        description="The IANA time zone `cron_frequency` is read in; daylight saving time "
        "is handled.",
        examples=["America/New_York"],
    )
    timeout_seconds: int = Field(
        default=600,
        ge=1,
        le=86_400,
        description="A run still going after this long is stopped (TERM, then KILL) and "
        "marked timed_out.",
    )
    retries: int = Field(
        default=0, ge=0, le=10, description="How many times a failed run is tried again."
    )
    retry_backoff_seconds: int = Field(
        default=30,
        ge=1,
        le=3_600,
        description="Wait before the first retry; each further retry waits twice as long.",
    )
    concurrency: Literal["skip", "queue", "allow"] = Field(
        default="skip",
        description="When a run is due while the previous one still runs: `skip` it, "
        "`queue` it to start after, or `allow` both at once.",
    )
    catch_up: Literal["none", "latest", "all"] = Field(
        default="latest",
        description="Due times missed while the platform was down: run `none` of them, "
        "only the `latest`, or `all`.",
    )
    memory_mb: MemoryMb = 1024
    env: Environment = Field(default_factory=dict)
    notify: Notify = Field(default_factory=Notify, description=NOTIFY)

    @field_validator("cron_frequency")
    @classmethod
    def _expression_is_valid(cls, expression: str) -> str:
        try:
            parse_cron(expression)  # which times match does not depend on the zone
        except ScheduleError as error:
            raise _schedule_problem(error) from None
        return expression

    @field_validator("timezone")
    @classmethod
    def _zone_is_known(cls, timezone: str) -> str:
        try:
            time_zone(timezone)
        except ScheduleError as error:
            raise _schedule_problem(error) from None
        return timezone

    def schedule(self) -> CronSchedule:
        return parse_cron(self.cron_frequency, self.timezone)


def _schedule_problem(error: ScheduleError) -> PydanticCustomError:
    """The schedule's own words, its message and its fix kept apart."""
    return _fail(str(error).removesuffix(error.fix).strip(), error.fix)


class WebhookConfig(_Model):
    """webhook.json: run a Python script for each call to /hooks/{sub_domain}."""

    sub_domain: DeploymentName = Field(
        description="The webhook's name: it answers at /hooks/{sub_domain} and at host "
        "{sub_domain}.{BAY_DOMAIN}.",
        examples=["salesforce_data_lookup"],
    )
    script_to_run: ScriptPath = Field(
        description="The Python file run for each call, relative to the folder.",
        examples=["webhook_microservice.py"],
    )
    auth: Literal["api_key", "public", "hmac-sha256"] = Field(
        default="api_key",
        description="Who may call: `api_key` (a ServiceBay key with invoke on "
        "webhook:{sub_domain}), `public` (anyone), or `hmac-sha256` (a body signed with "
        "the key held in `secret`, as SaaS webhooks do).",
    )
    secret: str | None = Field(
        default=None,
        validate_default=True,
        description="With auth hmac-sha256: the name of the secret holding the signing key.",
        examples=["STRIPE_WEBHOOK_SECRET"],
    )
    mode: Literal["sync", "async"] = Field(
        default="sync",
        description="`sync`: the caller waits and gets the script's response. `async`: "
        "the caller gets 202 with the run's id at once.",
    )
    timeout_seconds: int = Field(
        default=30,
        ge=1,
        le=86_400,
        description=f"A run still going after this long is stopped; at most "
        f"{MAX_SYNC_TIMEOUT} in sync mode.",
    )
    retries: int = Field(
        default=0,
        ge=0,
        le=10,
        description="Async mode only: how many times a failed run is tried again.",
    )
    retry_backoff_seconds: int = Field(
        default=30,
        ge=1,
        le=3_600,
        description="Wait before the first retry; each further retry waits twice as long.",
    )
    memory_mb: MemoryMb = 1024
    env: Environment = Field(default_factory=dict)
    notify: Notify = Field(default_factory=Notify, description=NOTIFY)

    @field_validator("secret")
    @classmethod
    def _secret_iff_signed(cls, secret: str | None, info: ValidationInfo) -> str | None:
        auth = info.data.get("auth")
        if auth == "hmac-sha256" and secret is None:
            raise _fail(
                "auth hmac-sha256 needs the secret that holds the signing key",
                'add "secret": "NAME_OF_THE_SECRET" (create it with `bay secrets set`)',
            )
        if secret is not None and auth in ("api_key", "public"):
            raise _fail(
                f"a secret signs calls only with auth hmac-sha256, not {auth}",
                'remove "secret", or set "auth": "hmac-sha256"',
            )
        if secret is not None and not SECRET_NAME.fullmatch(secret):
            raise _fail(
                f"{secret!r} is not a secret name",
                "name the secret (UPPER_CASE, e.g. STRIPE_WEBHOOK_SECRET), never its value",
            )
        return secret

    @field_validator("timeout_seconds")
    @classmethod
    def _sync_is_short(cls, timeout: int, info: ValidationInfo) -> int:
        if info.data.get("mode") == "sync" and timeout > MAX_SYNC_TIMEOUT:
            raise _fail(
                f"a sync webhook's caller waits for the answer; {timeout} s is over the "
                f"{MAX_SYNC_TIMEOUT} s limit",
                f'use "mode": "async" for long work, or at most {MAX_SYNC_TIMEOUT}',
            )
        return timeout

    @field_validator("retries")
    @classmethod
    def _retries_are_async(cls, retries: int, info: ValidationInfo) -> int:
        if retries and info.data.get("mode") == "sync":
            raise _fail(
                "retries apply only to async webhooks: a sync caller gets the first answer",
                'remove "retries", or set "mode": "async"',
            )
        return retries


class ServerConfig(_Model):
    """server_deployment.json: a long-running HTTP server (a Flask app, a dashboard)."""

    sub_domain: DeploymentName = Field(
        description="The server's name: it answers at /apps/{sub_domain}/ and at host "
        "{sub_domain}.{BAY_DOMAIN}.",
        examples=["my_flask_server"],
    )
    build_command: Command | None = Field(
        default=None,
        validation_alias=AliasChoices("build_command", "build command"),
        description="Run once per version after requirements.txt is installed (which "
        "needs no command), e.g. to build static files.",
        examples=["pip install -r requirements.txt"],
    )
    start_command: Command | None = Field(
        default=None,
        validation_alias=AliasChoices("start_command", "start command"),
        description="Starts the server, which must listen on $PORT (set by the platform). "
        "Required unless `static` is given.",
        examples=["flask run --port $PORT --host 0.0.0.0"],
    )
    static: Annotated[str, AfterValidator(_static_folder)] | None = Field(
        default=None,
        description="A static site instead of a program: the folder of the deployment "
        "(after the build command ran) whose files the platform serves itself; no start "
        "command, no process.",
        examples=["dist"],
    )
    port: int | None = Field(
        default=None,
        ge=1,
        le=65_535,
        description="Set $PORT to this port instead of a free one the platform picks; "
        "only for a server that cannot read $PORT.",
        examples=[8080],
    )
    health_path: Annotated[str, AfterValidator(_url_path)] = Field(
        default="/",
        json_schema_extra={"pattern": r"^/\S*$"},
        description="Answered with a status below 500 once the server is ready; polled "
        "to tell when to restart it.",
        examples=["/healthz"],
    )
    auth: Literal["api_key", "public"] = Field(
        default="api_key",
        description="`api_key`: callers need a ServiceBay key with invoke on "
        "app:{sub_domain}. `public`: anyone.",
    )
    memory_mb: MemoryMb = 1024
    env: Environment = Field(default_factory=dict)
    notify: Notify = Field(default_factory=Notify, description=NOTIFY)

    @model_validator(mode="after")
    def _program_or_static(self) -> ServerConfig:
        """One of the two ways to serve: a process, or files; never both, never neither."""
        if self.static is None and self.start_command is None:
            raise _fail(
                "is required: the command that starts the server (or `static`, a folder "
                "of files the platform serves)",
                'add "start_command": "python app.py" (listening on $PORT), or "static": '
                '"dist" for a built site',
                field="start_command",
            )
        if self.static is not None:
            given = [name for name in ("start_command", "port") if getattr(self, name)]
            if given:
                raise _fail(
                    f"{given[0]} is for a program; a static site is served by the platform",
                    f'remove "{given[0]}", or remove "static" to run a program',
                    field=given[0],
                )
        return self


_CODE_ONLY = ("build_command", "secrets", "port", "memory_mb", "env")
_CODE_ONLY_FIELDS = ("start_command", *_CODE_ONLY)


class ServiceConfig(_Model):
    """service.json: a service mounted at /{name}/... Kind `code` is a program in this
    folder; the other kinds' own keys are checked by the services layer."""

    model_config = ConfigDict(extra="allow")

    name: DeploymentName = Field(
        description="The service's name: it answers at /{name}/....", examples=["salesforce"]
    )
    kind: Literal["sql", "http", "code"] = Field(
        description="`code`: a program in this folder, listening on $PORT. `sql`, `http`: "
        "served by the platform itself from this document.",
        examples=["code"],
    )
    description: str = Field(
        min_length=1,
        max_length=2000,
        description="What the service offers, shown in /docs.",
        examples=["Customers in Salesforce"],
    )
    start_command: Command | None = Field(
        default=None,
        validate_default=True,
        validation_alias=AliasChoices("start_command", "start command"),
        description="Kind code (required): starts the program, which listens on $PORT.",
        examples=["python service.py"],
    )
    build_command: Command | None = Field(
        default=None,
        validation_alias=AliasChoices("build_command", "build command"),
        description="Kind code: run once per version after requirements.txt is installed.",
    )
    secrets: SecretNames = Field(
        default_factory=list,
        description="Kind code: secrets given to the program as environment variables of "
        "the same name; each must allow service:{name}.",
        examples=[["SALESFORCE_API_KEY"]],
    )
    port: int | None = Field(
        default=None,
        ge=1,
        le=65_535,
        description="Kind code: set $PORT to this port instead of a free one.",
    )
    memory_mb: MemoryMb = 1024
    env: Environment = Field(default_factory=dict)

    @field_validator("start_command")
    @classmethod
    def _code_starts(cls, command: str | None, info: ValidationInfo) -> str | None:
        if "kind" not in info.data:
            return command  # the kind itself is wrong, and said so
        kind = info.data["kind"]
        if kind == "code" and command is None:
            raise _fail(
                "a code service needs the command that starts it",
                'add "start_command": "python service.py"',
            )
        if kind != "code" and command is not None:
            raise _code_only("start_command", kind)
        return command

    @field_validator(*_CODE_ONLY)
    @classmethod
    def _code_only_fields(cls, value: Any, info: ValidationInfo) -> Any:
        """Runs only for keys given (no validate_default), so a default never trips it."""
        kind = info.data.get("kind", "code")  # a wrong kind is a problem of its own
        if kind != "code":
            raise _code_only(str(info.field_name), kind)
        return value

    @model_validator(mode="after")
    def _code_keys_are_known(self) -> ServiceConfig:
        extra = sorted(self.model_extra or {})
        if self.kind == "code" and extra:
            raise _fail(
                f"unknown key{'s' if len(extra) > 1 else ''} for a code service: "
                f"{', '.join(extra)}",
                "remove them",
                field=extra[0],
            )
        if self.kind == "code" and set(self.env) & set(self.secrets):
            both = ", ".join(sorted(set(self.env) & set(self.secrets)))
            raise _fail(
                f"{both} is both a secret and in env",
                "keep it in secrets only: env is stored in the clear",
                field="env",
            )
        return self


def _code_only(name: str, kind: object) -> PydanticCustomError:
    return _fail(
        f"{name} is only for kind code; a {kind} service is run by the platform itself",
        f'remove "{name}", or set "kind": "code"',
    )


DeploymentConfig: TypeAlias = CronConfig | WebhookConfig | ServerConfig | ServiceConfig
MODELS: dict[DeploymentKind, type[DeploymentConfig]] = {
    "cron": CronConfig,
    "webhook": WebhookConfig,
    "server": ServerConfig,
    "service": ServiceConfig,
}
_FILE_OF = {kind: name for name, kind in CONFIG_FILES.items()}


@dataclass(frozen=True)
class FolderCheck:
    """Everything found wrong with a folder; `kind` and `config` when its config is valid."""

    folder: Path
    config_file: str | None
    kind: DeploymentKind | None
    config: DeploymentConfig | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.config is not None


@dataclass(frozen=True)
class LoadedFolder:
    """A folder ready to bundle and deploy."""

    folder: Path
    config_file: str
    kind: DeploymentKind
    config: DeploymentConfig
    readme: str
    requirements: str | None
    """requirements.txt as written, when the folder has one."""


def parse_config(kind_or_filename: str, text: str, source: str) -> DeploymentConfig:
    """A config file's text as its model; ConfigInvalid lists every problem, in `source`."""
    kind = _kind(kind_or_filename)
    parsed = _parse(kind, text, source)
    if parsed.config is None:
        raise ConfigInvalid(parsed.problems)
    return parsed.config


def check_folder(folder: Path) -> FolderCheck:
    """Everything that would stop `folder` from deploying, all at once."""
    if not folder.is_dir():
        problem = Problem(
            str(folder), None, None, None, "is not a folder", "name the deployment's folder"
        )
        return FolderCheck(folder, None, None, None, [problem])
    here = f"{folder.name or folder.resolve().name}/"
    present = sorted(name for name in CONFIG_FILES if (folder / name).is_file())
    problems: list[Problem] = []
    try:
        bundled: list[str] | None = list_files(folder)
    except BundleError as error:
        bundled = None
        problems.append(Problem(here, None, None, None, str(error)))
    if not present:
        problems.append(_no_config(folder, here))
    elif len(present) > 1:
        problems.append(
            Problem(
                here,
                None,
                None,
                None,
                f"holds {len(present)} config files ({', '.join(present)}); a folder is one "
                "deployment",
                "keep one; move each other deployment to a folder of its own",
            )
        )
    parsed: list[tuple[str, DeploymentConfig]] = []
    for name in present:
        config, found = _check_config(folder, name, bundled)
        problems += found
        if config is not None:
            parsed.append((name, config))
    problems += _check_readme(folder, bundled)
    problems += _check_requirements(folder)
    if len(present) == 1 and len(parsed) == 1:
        name, config = parsed[0]
        return FolderCheck(folder, name, CONFIG_FILES[name], config, problems)
    return FolderCheck(folder, present[0] if len(present) == 1 else None, None, None, problems)


def load_folder(folder: Path) -> LoadedFolder:
    """The folder's config, README and requirements; FolderInvalid lists every problem."""
    check = check_folder(folder)
    if not check.ok or check.config is None or check.kind is None or check.config_file is None:
        raise FolderInvalid(check.problems)
    requirements = folder / REQUIREMENTS
    return LoadedFolder(
        folder=folder,
        config_file=check.config_file,
        kind=check.kind,
        config=check.config,
        readme=(folder / README).read_text(encoding="utf-8-sig"),
        requirements=requirements.read_text(encoding="utf-8-sig")
        if requirements.is_file()
        else None,
    )


def _kind(kind_or_filename: str) -> DeploymentKind:
    if kind_or_filename in CONFIG_FILES:
        return CONFIG_FILES[kind_or_filename]
    for kind in MODELS:
        if kind == kind_or_filename:
            return kind
    raise ValueError(
        f"unknown deployment config {kind_or_filename!r}: one of "
        f"{', '.join([*CONFIG_FILES, *MODELS])}"
    )


def _check_config(
    folder: Path, name: str, bundled: list[str] | None
) -> tuple[DeploymentConfig | None, list[Problem]]:
    try:
        text = _read_text(folder / name)
    except _Unreadable as unreadable:
        return None, [unreadable.problem(name)]
    parsed = _parse(CONFIG_FILES[name], text, name)
    problems = list(parsed.problems)
    if bundled is not None and name not in bundled:
        problems.append(_ignored(name, name, None, (None, None)))
    # The script is looked for even when other fields are wrong: every problem at once.
    script = parsed.document.get("script_to_run")
    script_ok = not any(problem.field == "script_to_run" for problem in problems)
    if isinstance(script, str) and script_ok and bundled is not None:
        script = PurePosixPath(script).as_posix()
        if script not in bundled:
            at = parsed.located.at(("script_to_run",))
            problems.append(_missing_script(folder, name, script, bundled, at))
    problems.sort(key=lambda problem: (problem.line or 0, problem.column or 0))
    return parsed.config, problems


def _missing_script(
    folder: Path, file: str, script: str, bundled: list[str], at: tuple[int, int]
) -> Problem:
    if (folder / script).is_file():
        return _ignored(script, file, "script_to_run", at)
    scripts = [name for name in bundled if name.endswith(".py")]
    close = difflib.get_close_matches(script, scripts, n=3, cutoff=0.6)
    if close:
        fix = f"did you mean {' or '.join(repr(name) for name in close)}?"
    elif scripts:
        fix = f"create {script}, or name one of: {', '.join(scripts[:5])}"
    else:
        fix = f"create {script}: the folder holds no Python file"
    return Problem(file, *at, "script_to_run", f"there is no file {script!r} in the folder", fix)


def _ignored(name: str, file: str, key: str | None, at: tuple[int | None, int | None]) -> Problem:
    return Problem(
        file,
        *at,
        key,
        f"{name} is left out of the bundle by .bayignore or the default ignores",
        f"remove the pattern that matches {name} from .bayignore",
    )


def _no_config(folder: Path, here: str) -> Problem:
    names = ", ".join(CONFIG_FILES)
    candidates = [
        path.name for path in folder.iterdir() if path.suffix.lower() in (".json", ".jsonc")
    ]
    by_lower = {name.lower(): name for name in candidates}
    close = [
        (by_lower[match], expected)
        for expected in CONFIG_FILES
        for match in difflib.get_close_matches(expected, list(by_lower), n=1, cutoff=0.75)
    ]
    if close:
        fix = "; ".join(f"rename {found} to {expected}" for found, expected in close)
    else:
        fix = f"add one of {names} (`bay new cron|webhook|server|service NAME` writes one)"
    return Problem(
        here, None, None, None, f"no deployment config file: expected one of {names}", fix
    )


def _check_readme(folder: Path, bundled: list[str] | None) -> list[Problem]:
    path = folder / README
    if not path.is_file():
        near = sorted(
            entry.name
            for entry in folder.iterdir()
            if entry.is_file() and entry.name.lower().startswith("readme")
        )
        fix = (
            f"rename {near[0]} to {README}"
            if near
            else f"write {README}: what this deployment does, its inputs and outputs, and "
            "whom to ask"
        )
        message = "missing: documentation is required, so a folder without one is not deployed"
        return [Problem(README, None, None, None, message, fix)]
    if bundled is not None and README not in bundled:
        return [_ignored(README, README, None, (None, None))]
    try:
        text = _read_text(path)
    except _Unreadable as unreadable:
        return [unreadable.problem(README)]
    if not text.strip():
        return [
            Problem(
                README,
                None,
                None,
                None,
                "is empty: documentation is required",
                "say what this deployment does, its inputs and outputs, and whom to ask",
            )
        ]
    return []


def _check_requirements(folder: Path) -> list[Problem]:
    path = folder / REQUIREMENTS
    if not path.exists():
        return []
    try:
        _read_text(path)
    except _Unreadable as unreadable:
        return [unreadable.problem(REQUIREMENTS)]
    return []


class _Unreadable(Exception):
    def __init__(
        self, message: str, fix: str, line: int | None = None, column: int | None = None
    ) -> None:
        super().__init__(message)
        self.message, self.fix, self.line, self.column = message, fix, line, column

    def problem(self, file: str) -> Problem:
        return Problem(file, self.line, self.column, None, self.message, self.fix)


def _read_text(path: Path) -> str:
    """A UTF-8 file's text (a byte-order mark is allowed)."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise _Unreadable(
            f"cannot be read: {error.strerror or error}", "make the file readable"
        ) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line_start = raw.rfind(b"\n", 0, error.start) + 1
        line = raw.count(b"\n", 0, error.start) + 1
        column = len(raw[line_start : error.start].decode("utf-8", "replace")) + 1
        raise _Unreadable(
            "is not UTF-8 text", "save the file as UTF-8 in your editor", line, column
        ) from None


# Parsing one config text


@dataclass(frozen=True)
class _Parsed:
    config: DeploymentConfig | None
    problems: list[Problem]
    located: _Located
    document: dict[str, Any]
    """The file's object as written (empty when it is not one)."""


def _parse(kind: DeploymentKind, text: str, source: str) -> _Parsed:
    located = _Located(text)
    try:
        document = jsonc.loads(text, source=source)
    except jsonc.JsoncError as error:
        return _Parsed(None, [_syntax_problem(error, located, source, kind)], located, {})
    if not isinstance(document, dict):
        problem = Problem(
            source,
            *located.at(()),
            None,
            f"holds {_json_type(document)}; a config file is one object {{...}}",
            f"write {_example(kind)}",
        )
        return _Parsed(None, [problem], located, {})
    located.index(document)
    model = MODELS[kind]
    kept, problems = _known_keys(model, document, located, source)
    try:
        config: DeploymentConfig | None = model.model_validate(kept)
    except ValidationError as error:
        problems += [_field_problem(item, model, located, source) for item in error.errors()]
        config = None
    problems.sort(key=lambda problem: (problem.line or 0, problem.column or 0))
    return _Parsed(config if not problems else None, problems, located, document)


def _known_keys(
    model: type[DeploymentConfig], document: dict[str, Any], located: _Located, source: str
) -> tuple[dict[str, Any], list[Problem]]:
    """Unknown keys and settings given twice (`"build command"` and `"build_command"`)
    are problems of their own; the rest is validated, so every problem shows at once."""
    spellings = _spellings(model)
    forbid = model is not ServiceConfig or document.get("kind") == "code"
    kept: dict[str, Any] = {}
    first: dict[str, str] = {}
    problems: list[Problem] = []
    for key, value in document.items():
        name = spellings.get(key)
        if key == EDITOR_SCHEMA_KEY:
            continue
        if name is None and forbid:
            problems.append(_unknown_key(source, key, spellings, located.at((key,), key=True)))
        elif name is not None and name in first:
            problems.append(
                Problem(
                    source,
                    *located.at((key,), key=True),
                    key,
                    f"repeats {first[name]!r} (line {located.at((first[name],))[0]}): two "
                    "spellings of the same setting",
                    "keep one of them",
                )
            )
        else:
            first[name or key] = key
            kept[key] = value
    return kept, problems


def _spellings(model: type[BaseModel]) -> dict[str, str]:
    """Every accepted spelling of a key, to its field's name."""
    spellings: dict[str, str] = {}
    for name, info in model.model_fields.items():
        spellings[name] = name
        if isinstance(info.validation_alias, AliasChoices):
            spellings |= {str(alias): name for alias in info.validation_alias.choices}
    return spellings


def _unknown_key(source: str, key: str, spellings: dict[str, str], at: tuple[int, int]) -> Problem:
    names = sorted(set(spellings.values()))
    plain = re.sub(r"[\s-]+", "_", key.strip().lower())
    close = [plain] if plain in names else difflib.get_close_matches(plain, names, n=2)
    fix = (
        f"did you mean {' or '.join(repr(name) for name in close)}?"
        if close
        else f"remove it; the keys are: {', '.join(names)}"
    )
    return Problem(source, *at, key, "unknown key", fix)


# Syntax errors: the parser's words turned into what to do.


def _syntax_problem(
    error: jsonc.JsoncError, located: _Located, source: str, kind: DeploymentKind
) -> Problem:
    message = error.message
    if error.line is None:
        if "appears twice" in message:
            return _duplicate_key(located, source)
        example = f"write {_example(kind)}" if "no JSON value" in message else None
        return Problem(source, None, None, None, message, example)
    offset = located.offset(error.line, error.column or 1)
    plain = located.plain
    before = len(plain[:offset].rstrip()) - 1  # the last character before the error
    here = plain[offset : offset + 1]
    previous = plain[before] if before >= 0 else ""
    at_end = not plain[offset:].strip()
    fix: str | None = None
    if at_end and message.startswith(("Expecting ',' delimiter", "Expecting value")):
        message = "the file ends before its object is closed"
        fix = 'close every {, [ and " that is opened'
        return Problem(source, *located.where(offset), None, message, fix)
    if message.startswith("Expecting ',' delimiter"):
        line, column = located.where(before + 1)
        after = _snippet(plain, before)
        return Problem(
            source,
            line,
            column,
            None,
            f"missing comma after {after}, before {_token(plain, offset)} on line {error.line}",
            f"add ',' at the end of line {line}"
            if not plain[before + 1 :].split("\n", 1)[0].strip()
            else f"add ',' at line {line}, column {column}",
        )
    if (
        previous == ","
        and here in "}]"
        and message.startswith(("Expecting property", "Expecting value"))
    ):
        line, column = located.where(before)
        closing = "}" if here == "}" else "]"
        return Problem(
            source,
            line,
            column,
            None,
            f"a comma with nothing after it before '{closing}' (JSON allows no trailing comma)",
            f"remove the ',' at line {line}, column {column}",
        )
    if here == "'":
        message = "text is written in double quotes in JSON, not single quotes"
        fix = "replace the ' quotes with \""
    elif message.startswith("Expecting property name"):
        message = f"expected a key in double quotes, found {_token(plain, offset)}"
        fix = 'write the key in double quotes: "key": value'
    elif message.startswith("Expecting value"):
        word = re.match(r"[A-Za-z_]\w*", plain[offset:])
        literal = {"True": "true", "False": "false", "None": "null"}.get(word[0] if word else "")
        if literal:
            message = f"{word[0] if word else ''} is Python, not JSON"
            fix = f"write {literal}"
        elif word:
            message = f"{word[0]} is not a JSON value"
            fix = f'put text in double quotes: "{word[0]}"'
        else:
            message = f"expected a value, found {_token(plain, offset)}"
            fix = 'write a "string", a number, true, false, null, an object {...} or a list [...]'
    elif message.startswith("Expecting ':' delimiter"):
        message = f"missing ':' after the key {_snippet(plain, before)}"
        fix = 'write "key": value'
    elif message.startswith("Unterminated string"):
        message = "this text is never closed: a string ends on the line it starts"
        fix = f'add the closing " on line {error.line}'
    elif message.startswith("Invalid control character"):
        message = "a string holds a tab or line break as is"
        fix = 'write \\t or \\n inside the string, or close it with " on this line'
    elif message.startswith("Invalid \\escape") or message.startswith("Invalid \\u"):
        message = 'a backslash starts an escape (\\n, \\t, \\", \\\\ or \\uXXXX) in JSON'
        fix = "write \\\\ for a backslash, or use / in paths"
    elif message.startswith("Extra data"):
        message = "more after the end of the config's {...}"
        fix = "a config file holds one object: move this inside the braces, or remove it"
    return Problem(source, error.line, error.column, None, message, fix)


def _duplicate_key(located: _Located, source: str) -> Problem:
    path, offset, first = located.duplicate()
    line, column = located.where(offset)
    return Problem(
        source,
        line,
        column,
        ".".join(str(part) for part in path),
        f"given twice (first on line {located.where(first)[0]})",
        "keep one of them",
    )


def _snippet(plain: str, end: int) -> str:
    """The item ending at `end` (`"key": value`, or a value), as its author wrote it."""
    start = _item_start(plain, end)
    colon = len(plain[:start].rstrip()) - 1
    if colon > 0 and plain[colon] == ":":
        start = _item_start(plain, len(plain[:colon].rstrip()) - 1)
    text = " ".join(plain[start : end + 1].split())
    return f"`{text if len(text) <= 50 else text[:22] + '...' + text[-25:]}`"


def _item_start(plain: str, end: int) -> int:
    """Where the string, number or word ending at `end` starts."""
    if plain[end] == '"':
        start = end - 1
        while start > 0 and not (plain[start] == '"' and plain[start - 1] != "\\"):
            start -= 1
        return max(start, 0)
    start = end
    while start > 0 and plain[start - 1] not in ' \t\n,:{}[]"':
        start -= 1
    return start


def _token(plain: str, offset: int) -> str:
    found = re.match(r'"(?:[^"\\\n]|\\.)*"?|[^\s,:{}\[\]]+|\S', plain[offset:])
    return f"`{found[0][:40]}`" if found else "the end of the file"


def _example(kind: DeploymentKind) -> str:
    return json.dumps(_MINIMAL[kind])


_MINIMAL: dict[DeploymentKind, dict[str, str]] = {
    "cron": {"cron_frequency": "0 9 * * 5", "script_to_run": "main.py"},
    "webhook": {"sub_domain": "my_webhook", "script_to_run": "main.py"},
    "server": {"sub_domain": "my_server", "start_command": "python app.py"},
    "service": {
        "name": "my_service",
        "kind": "code",
        "description": "What it offers",
        "start_command": "python service.py",
    },
}


# Field problems: pydantic's errors, located in the text and told in the user's terms.


def _field_problem(
    error: ErrorDetails, model: type[BaseModel], located: _Located, source: str
) -> Problem:
    context = error.get("ctx") or {}
    loc: list[str | int] = list(error["loc"])
    if "field" in context:
        loc = [located.written(context["field"])]
    if "key" in context:
        loc.append(context["key"])
    name = _field_name(loc)
    # A key that is wrong itself is pointed at; a wrong value, at the value.
    about_key = "key" in context or error["type"] == "extra_forbidden"
    at = located.at(tuple(loc), key=about_key)
    if error["type"] == "missing":
        return Problem(source, *at, name, "is required", f"add {_pair(model, loc)}")
    message, fix = _explain(error, model, loc)
    return Problem(source, *at, name, message, fix)


def _explain(
    error: ErrorDetails, model: type[BaseModel], loc: list[str | int]
) -> tuple[str, str | None]:
    kind = error["type"]
    context = error.get("ctx") or {}
    given = error["input"]
    if kind == "config":
        return error["msg"], context.get("fix")
    if kind == "extra_forbidden":
        owner = _model_at(model, loc[:-1])
        names = sorted(owner.model_fields) if owner else []
        close = difflib.get_close_matches(str(loc[-1]), names, n=2)
        fix = f"did you mean {' or '.join(map(repr, close))}?" if close else None
        return "unknown key", fix or f"remove it; the keys are: {', '.join(names)}"
    if kind == "literal_error":
        allowed = re.findall(r"'([^']*)'", str(context.get("expected", "")))
        close = difflib.get_close_matches(str(given).lower(), allowed, n=1, cutoff=0.5)
        message = f"{_json(given)} is not one of: {', '.join(allowed)}"
        return (
            message,
            f"did you mean {close[0]!r}?" if close else f"use one of: {', '.join(allowed)}",
        )
    if kind in _EXPECTED:
        return f"must be {_EXPECTED[kind]}, not {_json_type(given)} {_json(given)}", _retype(
            kind, given, model, loc
        )
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        low, high = _bounds(model, loc)
        return f"{_json(given)} is out of range", f"use a number from {low} to {high}"
    if kind == "string_too_short":
        return "must not be empty", f"write {_pair(model, loc)}"
    if kind in ("string_too_long", "too_long"):
        return error["msg"].replace("String should", "must").replace("should", "must"), None
    if kind == "string_pattern_mismatch":
        return f"{_json(given)} is not valid here", f"write {_pair(model, loc)}"
    return error["msg"], None


_EXPECTED = {
    "string_type": 'text in double quotes ("...")',
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "bool_type": "true or false",
    "dict_type": "an object {...}",
    "model_type": "an object {...}",
    "list_type": "a list [...]",
}


def _retype(kind: str, given: Any, model: type[BaseModel], loc: list[str | int]) -> str:
    """The value rewritten in the type it needs, when that is what was meant."""
    if kind == "int_type" and isinstance(given, str) and given.strip().isdigit():
        return f"write {given.strip()} without quotes"
    if kind == "int_type" and isinstance(given, float):
        return f"write a whole number, e.g. {round(given)}"
    if kind == "bool_type" and isinstance(given, str) and given.lower() in ("true", "false"):
        return f"write {given.lower()} without quotes"
    if kind == "string_type" and isinstance(given, int | float) and not isinstance(given, bool):
        return f'put it in double quotes: "{given}"'
    if kind == "list_type" and isinstance(given, str):
        return f"make it a list: [{_json(given)}]"
    return f"write {_pair(model, loc)}"


def _model_at(model: type[BaseModel], path: Sequence[str | int]) -> type[BaseModel] | None:
    """The model that holds the keys at `path` of a document of `model`, if one does."""
    current: type[BaseModel] = model
    for part in path:
        info = current.model_fields.get(_spellings(current).get(str(part), ""))
        annotation = info.annotation if info else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        current = annotation
    return current


def _field_info(model: type[BaseModel], loc: Sequence[str | int]) -> Any:
    owner = _model_at(model, loc[:-1])
    if owner is None or not loc:
        return None
    return owner.model_fields.get(_spellings(owner).get(str(loc[-1]), ""))


def _pair(model: type[BaseModel], loc: Sequence[str | int]) -> str:
    """`"key": value` with the field's example (or default) as the value."""
    info = _field_info(model, loc)
    key = _spellings(model).get(str(loc[0]), str(loc[0])) if len(loc) == 1 else str(loc[-1])
    if info is not None and info.examples:
        return f"{json.dumps(key)}: {json.dumps(info.examples[0])}"
    if info is not None and isinstance(info.default, str | int):
        return f"{json.dumps(key)}: {json.dumps(info.default)}"
    return f"{json.dumps(key)}: ..."


def _bounds(model: type[BaseModel], loc: Sequence[str | int]) -> tuple[object, object]:
    info = _field_info(model, loc)
    low: object = "?"
    high: object = "?"
    for rule in info.metadata if info is not None else ():
        if isinstance(rule, Ge | Gt):
            low = rule.ge if isinstance(rule, Ge) else rule.gt
        if isinstance(rule, Le | Lt):
            high = rule.le if isinstance(rule, Le) else rule.lt
    return low, high


def _field_name(loc: Iterable[str | int]) -> str:
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name


def _json(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "null"


class _Located:
    """Where each key and value sits in a config's text, by its path in the document.

    Once comments are blanked the text is plain JSON with the same offsets, so a small
    walk over it finds every position. It runs once the text parsed, or to find where a
    key is given twice (the one thing the parser refuses without a position).
    """

    def __init__(self, text: str) -> None:
        self.text = text.replace("\r\n", "\n").replace("\r", "\n")
        self.plain = jsonc.strip_comments(self.text)
        self._lines = [0] + [index + 1 for index, char in enumerate(self.text) if char == "\n"]
        self._values: dict[tuple[str | int, ...], int] = {}
        self._keys: dict[tuple[str | int, ...], int] = {}
        self._duplicate: tuple[tuple[str | int, ...], int, int] | None = None
        self._written: list[str] = []

    def index(self, document: dict[str, Any]) -> None:
        self._walk()
        self._written = list(document)

    def written(self, name: str) -> str:
        """The top-level key as the author spelled field `name` (`"start command"`)."""
        for key in self._written:
            if key.replace(" ", "_") == name:
                return key
        return name

    def duplicate(self) -> tuple[tuple[str | int, ...], int, int]:
        """The first key given twice: its path, where it repeats, where it was first."""
        self._walk()
        if self._duplicate is None:
            raise AssertionError("no key is given twice")
        return self._duplicate

    def at(self, path: tuple[str | int, ...], *, key: bool = False) -> tuple[int, int]:
        """Line and column of `path`'s value (or key), else of its nearest ancestor."""
        if key and path in self._keys:
            return self.where(self._keys[path])
        while path and path not in self._values:
            path = path[:-1]
        start = self._values.get(path, len(self.plain) - len(self.plain.lstrip()))
        return self.where(start)

    def where(self, offset: int) -> tuple[int, int]:
        line = bisect.bisect_right(self._lines, offset) - 1
        return line + 1, offset - self._lines[line] + 1

    def offset(self, line: int, column: int) -> int:
        return self._lines[min(line, len(self._lines)) - 1] + column - 1

    def _walk(self) -> None:
        self._values, self._keys, self._duplicate = {}, {}, None
        self._value(self._skip(0), ())

    def _skip(self, offset: int) -> int:
        while offset < len(self.plain) and self.plain[offset] in " \t\n":
            offset += 1
        return offset

    def _value(self, offset: int, path: tuple[str | int, ...]) -> int:
        """Record the value at `offset` and everything in it; the offset past its end."""
        self._values.setdefault(path, offset)
        opening = self.plain[offset]
        if opening not in "{[":
            return int(_DECODER.raw_decode(self.plain, offset)[1])
        closing = "}" if opening == "{" else "]"
        offset = self._skip(offset + 1)
        index = 0
        while self.plain[offset] != closing:
            if opening == "{":
                name, end = _DECODER.raw_decode(self.plain, offset)
                child: tuple[str | int, ...] = (*path, name)
                if child in self._keys and self._duplicate is None:
                    self._duplicate = (child, offset, self._keys[child])
                self._keys.setdefault(child, offset)
                offset = self._skip(self._skip(end) + 1)  # past the ':'
            else:
                child = (*path, index)
                index += 1
            offset = self._skip(self._value(offset, child))
            if self.plain[offset] == ",":
                offset = self._skip(offset + 1)
        return offset + 1


_DECODER = json.JSONDecoder()


# JSON Schemas for editors


def json_schema(filename: str) -> dict[str, Any]:
    """The JSON Schema of a config file, with the article's spellings as twin keys."""
    kind = _kind(filename)
    model = MODELS[kind]
    schema = model.model_json_schema(by_alias=True, mode="validation")
    properties: dict[str, Any] = schema["properties"]
    spellings = _spellings(model)
    for spelling, name in spellings.items():
        if spelling != name:
            properties[spelling] = properties[name] | {
                "description": f"Same as {name}: {properties[name].get('description', '')}"
            }
    properties[EDITOR_SCHEMA_KEY] = {
        "type": "string",
        "description": "Where an editor finds this schema; ServiceBay ignores it.",
    }
    required = schema.pop("required", [])
    plain = [name for name in required if list(spellings.values()).count(name) == 1]
    if plain:
        schema["required"] = plain
    twinned = [_any_spelling(spellings, name) for name in required if name not in plain]
    if model is ServiceConfig:
        code_only = [key for key, name in spellings.items() if name in _CODE_ONLY_FIELDS]
        schema["if"] = {"properties": {"kind": {"const": "code"}}, "required": ["kind"]}
        schema["then"] = {
            "propertyNames": {"enum": sorted(properties)},
            **_any_spelling(spellings, "start_command"),
        }
        schema["else"] = {"not": {"anyOf": [{"required": [key]} for key in code_only]}}
    if model is ServerConfig:
        # A program (its start command, in either spelling) or a static folder: one of them.
        program = _any_spelling(spellings, "start_command")
        schema["oneOf"] = [program, {"required": ["static"]}]
    if twinned:
        schema["allOf"] = twinned
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": _FILE_OF[kind],
        "description": f"{model.__doc__}\n\nComments are allowed: # or // to the end of a line.",
    } | {key: value for key, value in schema.items() if key not in ("title", "description")}


def _any_spelling(spellings: dict[str, str], name: str) -> dict[str, Any]:
    """A schema rule: the field `name` is given, in any of its spellings."""
    return {"anyOf": [{"required": [key]} for key, field in spellings.items() if field == name]}


def schema_filename(config_file: str) -> str:
    """`cron.json` -> `cron.schema.json`."""
    return f"{Path(config_file).stem}.schema.json"


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in CONFIG_FILES:
        path = directory / schema_filename(name)
        path.write_text(json.dumps(json_schema(name), indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m servicebay.runtime.config",
        description="Write the deployment config files' JSON Schemas, as docs/schemas holds.",
    )
    parser.add_argument(
        "--write-schemas", metavar="DIR", type=Path, required=True, help="where to write them"
    )
    args = parser.parse_args(argv)
    for path in write_schemas(args.write_schemas):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
