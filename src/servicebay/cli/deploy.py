"""`bay deploy [DIR]` and `bay deployments list/show/logs/rollback/delete`.

`bay deploy` checks the folder here first, with the server's own rules
(`runtime.config.check_folder`), so every problem is listed at once, with its file, line,
column and fix, before anything is sent. It then bundles the folder (honouring
`.bayignore`), uploads it with a progress bar, and follows the build: the server answers
202 at once with the version `building`, and `bay deploy` polls the version for its status
and the build log from where the last poll ended, printing new lines as they come. Polling
needs nothing but plain requests, survives proxies that buffer streamed answers, and can
be resumed by anyone (`bay deployments show NAME --version N`).

A `service.json` of kind `sql` or `http` has nothing to build: it is registered as
`bay services register` does; one of kind `code` deploys like a server. After a server's
or code service's deploy, `bay deploy` waits (up to a minute) for the new version to
serve, and prints its URLs and state; a code service whose OpenAPI is refused (an
undocumented endpoint) fails the deploy, saying which.
"""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from servicebay.cli import services
from servicebay.cli.admin import JsonFlag
from servicebay.cli.client import Api, api_path, connect, resolve_key, resolve_url, target_of
from servicebay.cli.output import (
    EXIT_NO,
    Column,
    Row,
    console,
    errors,
    fail,
    print_json,
    print_record,
    print_table,
    show,
    success,
    when,
)
from servicebay.cli.runs import print_log
from servicebay.runtime.bundle import BundleError, build_bundle
from servicebay.runtime.config import DEPLOYMENT_NAME, CronConfig, ServiceConfig, check_folder
from servicebay.runtime.schedule import parse_cron

POLL_SECONDS = 0.5
UPLOAD_WRITE_TIMEOUT = 300.0
NEXT_RUNS = 3
SERVER_WAIT_SECONDS = 60.0
"""How long `bay deploy` waits for a server's new version to serve before saying so."""

deployments = typer.Typer(
    help="List, show, roll back and delete deployments.", no_args_is_help=True
)

DEPLOYMENT_COLUMNS = (
    Column("name", "name", style="cyan"),
    Column("kind", "kind"),
    Column("owner", "owner"),
    Column("active version", "active_version"),
    Column("updated", "updated_at", when),
)
VERSION_COLUMNS = (
    Column("version", "version"),
    Column("status", "status"),
    Column("active", lambda row: "active" if row.get("active") else ""),
    Column("by", "created_by"),
    Column("deployed", "created_at", when),
    Column("environment", lambda row: str(row.get("requirements_digest", ""))[:12]),
)

SERVER_COLUMNS = (
    Column("app url", lambda row: row["server"]["url"]),
    Column("state", lambda row: row["server"]["state"]),
    Column("reason", lambda row: row["server"]["reason"]),
    Column("serving", lambda row: row["server"]["version"]),
    Column("port", lambda row: row["server"]["port"]),
    Column("pid", lambda row: row["server"]["pid"]),
    Column("restarts", lambda row: row["server"]["restarts"]),
    Column("since", lambda row: row["server"]["since"], when),
)

Name = Annotated[str, typer.Argument(help="The deployment's name.", show_default=False)]


class DeployApi(Api):
    """`Api`, plus the multipart upload of a bundle with its progress."""

    def upload(self, data: bytes, filename: str, name: str | None, out: Console) -> Row:
        bar = (TextColumn("uploading"), BarColumn(), DownloadColumn())
        with Progress(*bar, console=out) as progress:
            task = progress.add_task("upload", total=len(data))
            reader = _CountingReader(data, lambda count: progress.advance(task, count))
            form = {"name": name} if name is not None else {}
            with self._guard():
                response = self._http.post(
                    api_path("deployments"),
                    files={"bundle": (filename, reader, "application/gzip")},
                    data=form,
                    timeout=httpx.Timeout(30.0, write=UPLOAD_WRITE_TIMEOUT),
                )
        if response.is_error:
            self._fail(response)
        accepted: Row = response.json()
        return accepted


class _CountingReader(io.BytesIO):
    """The bundle's bytes, telling how many have been read as the upload sends them."""

    def __init__(self, data: bytes, advance: Any) -> None:
        super().__init__(data)
        self._advance = advance

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self._advance(len(chunk))
        return chunk


def deploy(
    ctx: typer.Context,
    folder: Annotated[
        Path,
        typer.Argument(
            help="The deployment's folder (default: the current one).",
            show_default=False,
            metavar="DIR",
        ),
    ] = Path("."),
    as_json: JsonFlag = False,
) -> None:
    """Check, bundle, upload, build and activate a deployment folder as a new version.

    Every problem with the folder is listed at once (exit code 1), before anything is
    sent. Afterwards: a cron job's next run times, or a webhook's URL.

    Example: bay deploy ./weekly_report
    """
    folder = folder.resolve()
    check = check_folder(folder)
    if check.problems:
        count = len(check.problems)
        fail(
            f"{folder} cannot be deployed: {count} problem{'s' if count != 1 else ''}",
            *(str(problem) for problem in check.problems),
            f"Fix {'them' if count != 1 else 'it'}, then run `bay deploy` again.",
            code=EXIT_NO,
        )
    config = check.config
    if isinstance(config, CronConfig) and not DEPLOYMENT_NAME.fullmatch(folder.name):
        fail(
            f"{folder} cannot be deployed: a cron job is named by its folder, and "
            f"{folder.name!r} cannot be a name",
            "Rename the folder: lowercase letters, digits, '_' or '-', starting with a "
            "letter, e.g. weekly_report.",
            code=EXIT_NO,
        )
    if isinstance(config, ServiceConfig) and config.kind != "code":
        services.register(ctx, folder, as_json)
        return
    try:
        bundle = build_bundle(folder)
    except BundleError as error:
        fail(f"{folder} cannot be bundled: {error}")
    out = errors if as_json else console
    api = _connect(ctx)
    accepted = api.upload(
        bundle.data,
        f"{folder.name}.tar.gz",
        folder.name if isinstance(config, CronConfig) else None,
        out,
    )
    name, number = str(accepted["name"]), int(accepted["version"])
    out.print(Text(f"Building {name} version {number}:", style="bold"))
    version = follow(api, name, number, out)
    if as_json:
        print_json(version)
    if version["status"] != "ready":
        refused = _refusal(version)
        if refused is not None:  # built, started and refused before `follow` saw it ready
            _fail_refused(name, number, refused)
        active = api.request("GET", api_path("deployments", name))["active_version"]
        keeps = f"version {active} stays active" if active else "no version is active yet"
        fail(
            f"the build of {name} version {number} failed; {keeps}",
            "The build log above says why; fix requirements.txt, then deploy again.",
            code=EXIT_NO,
        )
    if not as_json:
        success(f"Deployed {name} version {number} ({version['kind']}): it is active.")
        _what_next(api, name, version)


def _connect(ctx: typer.Context) -> DeployApi:
    target = target_of(ctx)
    key = resolve_key(target.key)
    if not key:
        connect(ctx)  # says there is no key, and what to do
    return DeployApi(resolve_url(target.url), str(key))


def follow(api: Api, name: str, number: int, out: Console) -> Row:
    """Print the build log as it grows until the build ends; the finished version."""
    path = api_path("deployments", name, "versions", str(number))
    offset = 0
    try:
        while True:
            version = api.request("GET", path, params={"log_offset": offset})
            for line in str(version["build_log"]).splitlines():
                out.print(Text(f"  {line}", style="dim"), soft_wrap=True)
            offset = int(version["log_end"])
            if version["status"] != "building":
                finished: Row = api.request("GET", path)
                return finished
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        fail(
            f"stopped following the build of {name} version {number}; it goes on on the server",
            f"`bay deployments show {name} --version {number}` shows how it ends.",
            code=130,
        )


def _what_next(api: Api, name: str, version: Row) -> None:
    """When a cron job runs next (in its zone and UTC), or where a webhook answers."""
    lines: list[tuple[str, str]] = []
    state = None
    if version["kind"] == "cron":
        config = version["config"]
        schedule = parse_cron(config["cron_frequency"], config["timezone"])
        lines.append(("schedule", schedule.describe()))
        due = datetime.now(UTC)
        for index in range(NEXT_RUNS):
            due = schedule.next_after(due)
            lines.append(("next runs" if index == 0 else "", _in_zones(due, config["timezone"])))
    elif version["kind"] in ("server", "service"):
        shown = _serving(api, name, int(version["version"]))
        server = shown.get("server") or {}
        state = server.get("state") or "starting"
        reason = f": {server['reason']}" if server.get("reason") else ""
        number = int(version["version"])
        path = api_path("deployments", name, "versions", str(number))
        refused = _refusal(api.request("GET", path))
        if refused is not None:
            _fail_refused(name, number, refused)
        lines.append(("url", str(server.get("url") or f"{api.url}/apps/{name}/")))
        if shown.get("domain_url"):
            lines.append(("also at", str(shown["domain_url"])))
        lines.append(("state", f"{state}{reason}"))
        lines.append(("logs", f"bay deployments logs {name} --follow"))
    else:
        lines.append(("url", f"{api.url}/hooks/{name}"))
        domain_url = api.request("GET", api_path("deployments", name)).get("domain_url")
        if domain_url:
            lines.append(("also at", str(domain_url)))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for label, value in lines:
        grid.add_row(Text(label), Text(value))
    console.print(grid)
    if version["kind"] in ("server", "service") and state == "crash_looping":
        fail(
            f"{name} version {version['version']} is active but does not serve: it keeps crashing",
            f"`bay deployments logs {name}` has its output; fix it and deploy again, or "
            f"`bay deployments rollback {name}`.",
            code=EXIT_NO,
        )


def _serving(api: Api, name: str, number: int) -> Row:
    """The deployment once version `number` serves, crash-loops or was refused (or after a
    while)."""
    deadline = time.monotonic() + SERVER_WAIT_SECONDS
    while True:
        shown: Row = api.request("GET", api_path("deployments", name))
        server = shown.get("server") or {}
        serving = server.get("state") == "running" and server.get("version") == number
        stopped = server.get("state") == "crash_looping" or shown.get("active_version") != number
        if serving or stopped or time.monotonic() > deadline:
            return shown
        time.sleep(POLL_SECONDS)


def _refusal(version: Row) -> str | None:
    """Why a version that built was refused (a code service's OpenAPI), if it was."""
    if version["status"] != "failed":
        return None
    marker = f"version {version['version']} is refused: "
    lines = [line for line in str(version["build_log"]).splitlines() if marker in line]
    return lines[-1].split(marker, 1)[1] if lines else None


def _fail_refused(name: str, number: int, why: str) -> None:
    fail(
        f"{name} version {number} built and started, but was refused: {why}",
        f"The previous version, if any, still serves: `bay deployments show {name}`.",
        code=EXIT_NO,
    )


def _in_zones(due: datetime, timezone: str) -> str:
    utc = due.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if timezone == "UTC":
        return utc
    local = due.astimezone(ZoneInfo(timezone)).strftime("%a %Y-%m-%d %H:%M %Z")
    return f"{local} ({utc})"


@deployments.command("list")
def list_deployments(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List the deployments you may manage: yours, those a grant gives you (admins: all)."""
    found = connect(ctx).collect(api_path("deployments"))
    show(found, DEPLOYMENT_COLUMNS, as_json, empty="No deployments.")


@deployments.command("show")
def show_deployment(
    ctx: typer.Context,
    name: Name,
    version: Annotated[
        int | None,
        typer.Option("--version", "-v", min=1, help="Show this version with its build log."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show a deployment and its versions, or one version with its build log."""
    api = connect(ctx)
    if version is not None:
        found = api.request("GET", api_path("deployments", name, "versions", str(version)))
        if as_json:
            print_json(found)
            return
        print_record(found, (Column("name", "name", style="cyan"), *VERSION_COLUMNS))
        console.print()
        console.print(Text(str(found["build_log"]) or "(the build log is empty)"))
        return
    shown = api.request("GET", api_path("deployments", name))
    if as_json:
        print_json(shown)
        return
    print_record(
        shown,
        (
            *DEPLOYMENT_COLUMNS[:4],
            Column("url", lambda row: row.get("domain_url")),
            *(SERVER_COLUMNS if shown.get("server") else ()),
            Column("created", "created_at", when),
            DEPLOYMENT_COLUMNS[4],
        ),
    )
    console.print()
    print_table(shown["versions"], VERSION_COLUMNS, empty="No versions.")


@deployments.command("logs")
def server_logs(
    ctx: typer.Context,
    name: Name,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing lines (Ctrl-C stops).")
    ] = False,
) -> None:
    """Print a server's output, every process it started: `<UTC time>Z stdout|stderr <text>`."""
    print_log(connect(ctx), api_path("deployments", name, "logs"), follow=follow)


@deployments.command("rollback")
def rollback(
    ctx: typer.Context,
    name: Name,
    to: Annotated[
        int | None,
        typer.Option("--to", min=1, help="The version to make active (default: the previous)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Make an earlier version active again (default: the one before the active one)."""
    body: dict[str, Any] = {"version": to} if to is not None else {}
    api = connect(ctx)
    before = api.request("GET", api_path("deployments", name))["active_version"]
    shown = api.request("POST", api_path("deployments", name, "rollback"), json=body)
    if as_json:
        print_json(shown)
        return
    success(f"{name}: version {shown['active_version']} is active (it was version {before}).")


@deployments.command("delete")
def delete(ctx: typer.Context, name: Name) -> None:
    """Delete a deployment with its versions, runs, logs and files.

    Refused while one of its runs is running: cancel it first (`bay runs cancel ID`).
    """
    connect(ctx).request("DELETE", api_path("deployments", name))
    success(f"Deleted deployment {name} with its versions, runs and files.")
