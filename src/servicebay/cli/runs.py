"""Runs: trigger a deployed run (`bay run NAME`), run a folder here as the platform would
(`bay run DIR --local`), and list, show, follow, cancel runs and fetch their files.

A local run is the platform's run on your machine: the same environment variables (with
your own key as `INTERNAL_API_KEY`, so the script acts as you), the SDK staged on
`PYTHONPATH`, the config's timeout and memory limit, its own process group, and the
files it writes to `BAY_OUTPUT_DIR` kept in `./output`. It runs with your Python (the
first `python3` on your PATH, e.g. your project's virtual environment, or `--python`):
install the folder's `requirements.txt` there first, the platform builds its own.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import time
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.text import Text

from servicebay.cli.admin import JsonFlag
from servicebay.cli.client import Api, api_path, connect, resolve_key, resolve_url, target_of
from servicebay.cli.output import (
    EXIT_NO,
    Column,
    Row,
    console,
    errors,
    fail,
    plain,
    print_json,
    show,
    success,
    when,
)

runs = typer.Typer(
    help="List, show, follow, cancel runs and download their files.", no_args_is_help=True
)

FOLLOW_SECONDS = 0.5
"""How often a followed log is polled; the worker stores lines every half second."""
FINAL = frozenset({"succeeded", "failed", "timed_out", "cancelled", "skipped"})


class Status(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    timed_out = "timed_out"
    cancelled = "cancelled"
    skipped = "skipped"


class Trigger(StrEnum):
    schedule = "schedule"
    webhook = "webhook"
    manual = "manual"
    retry = "retry"


def _duration(run: Row) -> str:
    started, finished = run.get("started_at"), run.get("finished_at")
    if not started or not finished:
        return "-"
    seconds = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    return f"{seconds:.1f} s"


RUN_COLUMNS = (
    Column("id", "id", style="dim"),
    Column("deployment", "deployment", style="cyan"),
    Column("status", "status"),
    Column("trigger", "trigger"),
    Column("attempt", "attempt"),
    Column("created", "created_at", when),
    Column("took", _duration),
    Column("reason", "reason"),
)
DETAIL_COLUMNS = (
    *RUN_COLUMNS[:5],
    Column("version", "version"),
    Column("by", "actor"),
    Column("due", "due_at", when),
    Column("not before", "not_before", when),
    Column("created", "created_at", when),
    Column("started", "started_at", when),
    Column("finished", "finished_at", when),
    Column("took", _duration),
    Column("exit code", "exit_code"),
    Column("reason", "reason"),
    Column(
        "log", lambda run: f"{run['log_bytes']} bytes" + (", cut" if run["log_truncated"] else "")
    ),
    Column("input", "input", plain),
    Column("worker", "worker"),
)
ARTIFACT_COLUMNS = (Column("path", "path", style="cyan"), Column("bytes", "size"))

RunId = Annotated[str, typer.Argument(help="The run's id (run_...), as `bay runs list` shows.")]


# --- bay run ----------------------------------------------------------------------------------


def run(
    ctx: typer.Context,
    target: Annotated[
        str,
        typer.Argument(help="A deployment's name, or with --local a folder.", show_default=False),
    ],
    local: Annotated[
        bool, typer.Option("--local", help="Run the folder TARGET here, as the platform would.")
    ] = False,
    input: Annotated[
        str | None,
        typer.Option(
            "--input",
            help="The run's input: a JSON object, or @FILE holding one (the script reads "
            "the file named by env BAY_RUN_INPUT).",
            show_default=False,
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the log until the run ends (not with --local).")
    ] = False,
    python: Annotated[
        str | None,
        typer.Option("--python", help="With --local: the interpreter (default: python3 on PATH)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run a deployment now, or a folder on this machine.

    Examples: bay run weekly_report --input '{"day": "2026-11-27"}' --wait ;
    bay run ./weekly_report --local

    With --wait (or --local) the exit code says how it ended: 0 succeeded, 1 otherwise.
    """
    given = _input(input)
    if local:
        _run_locally(ctx, Path(target), given, python)
        return
    if "/" in target or "." in target or Path(target).is_dir():
        fail(
            f"{target!r} is not a deployment name",
            f"To run the folder here: bay run {target} --local. "
            "To run a deployment: bay run NAME (`bay deployments list` shows them).",
        )
    api = connect(ctx)
    started = api.request("POST", api_path("deployments", target, "runs"), json={"input": given})
    if not wait:
        show(started, DETAIL_COLUMNS, as_json, message=f"Queued run {started['id']} of {target}.")
        if not as_json:
            console.print(f"\nFollow it: bay runs logs {started['id']} --follow", soft_wrap=True)
        return
    if not as_json:
        success(f"Run {started['id']} of {target} queued; following its log.")
    _follow(api, started["id"], echo=not as_json)
    _conclude(api.request("GET", api_path("runs", started["id"])), as_json)


def _input(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    source = "--input"
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            fail(
                f"cannot read {path}: {error.strerror or error}",
                "Give --input @FILE of a JSON file.",
            )
        source = str(path)
    try:
        value = json.loads(text)
    except ValueError as error:
        fail(
            f"{source} is not JSON: {error}",
            'Give an object, e.g. --input \'{"day": "2026-11-27"}\'.',
        )
    if not isinstance(value, dict):
        fail(f"{source} must be a JSON object", "Wrap it, e.g. --input '{\"value\": 3}'.")
    return value


def _conclude(run: Row, as_json: bool) -> None:
    """Print how the run ended; exit 1 unless it succeeded."""
    if as_json:
        print_json(run)
    elif run["status"] == "succeeded":
        success(f"Run {run['id']} succeeded ({_duration(run)}).")
    else:
        errors.print(Text(f"Run {run['id']} {run['status']}: {run.get('reason')}", style="red"))
    if run["status"] != "succeeded":
        raise typer.Exit(EXIT_NO)


def _follow(api: Api, run_id: str, *, echo: bool = True) -> None:
    """Print the run's log as it grows, until the run has ended and all of it is shown."""
    print_log(api, api_path("runs", run_id, "logs"), follow=True, echo=echo)


def print_log(api: Api, path: str, *, follow: bool, echo: bool = True) -> None:
    """Print the log chunks at `path` (a run's or a server's): what is there now, or, to
    follow, as it grows until the answer says `done` (a server's never does: Ctrl-C)."""
    after: int | None = None
    while True:
        answer = api.request("GET", path, params={"after": after})
        for chunk in answer["chunks"]:
            if echo:
                sys.stdout.write(chunk["text"])
            after = chunk["id"]
        sys.stdout.flush()
        if answer["done"] or (not follow and not answer["chunks"]):
            return
        if not answer["chunks"]:
            time.sleep(FOLLOW_SECONDS)


# --- bay run DIR --local ----------------------------------------------------------------------


def _run_locally(
    ctx: typer.Context, folder: Path, given: dict[str, Any] | None, python: str | None
) -> None:
    from servicebay.core.settings import Settings
    from servicebay.runtime.config import CronConfig, check_folder
    from servicebay.runtime.process import ProcessError, ProcessSpec, run_process
    from servicebay.runtime.run_folders import INPUT
    from servicebay.runtime.sdk_stage import stage_sdk
    from servicebay.runtime.worker import INPUT_ENV, script_environment

    if not folder.is_dir():
        fail(f"{folder} is not a folder", "Give the deployment's folder: bay run DIR --local.")
    checked = check_folder(folder)
    if not checked.ok:
        fail(
            f"{folder} cannot run: {len(checked.problems)} problem(s)",
            *(str(problem) for problem in checked.problems),
        )
    config = checked.config
    if not isinstance(config, CronConfig):
        fail(
            f"{folder} is a {checked.kind} deployment: only cron folders run locally",
            "A webhook runs for each call: deploy it (`bay deploy`) and call /hooks/NAME.",
        )
    target = target_of(ctx)
    key = resolve_key(target.key)
    if not key:
        fail(
            "no API key: a local run acts as you, with your key as INTERNAL_API_KEY",
            "Run `bay login`, or set BAY_API_KEY (and BAY_URL), then try again.",
        )
    interpreter = python or shutil.which("python3") or sys.executable
    output = Path.cwd() / "output"
    output.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bay-run-") as scratch:
        sdk = stage_sdk(Path(scratch) / "sdk")
        files = {}
        if given is not None:
            files[INPUT_ENV] = Path(scratch) / INPUT
            files[INPUT_ENV].write_text(json.dumps(given), encoding="utf-8")
        spec = ProcessSpec(
            [interpreter, config.script_to_run],
            folder.resolve(),
            script_environment(
                api_key=key,
                base_url=resolve_url(target.url),
                run_id="local",
                output_dir=output,
                sdk_dir=sdk,
                bin_dir=Path(interpreter).parent,
                config_env=config.env,
                files=files,
            ),
            timeout_seconds=config.timeout_seconds,
            memory_mb=config.memory_mb,
            log_limit_bytes=Settings.model_fields["run_log_max_bytes"].default,
        )
        errors.print(
            Text(
                f"Running {config.script_to_run} with {interpreter} (files to {output})",
                style="dim",
            )
        )
        try:
            result = asyncio.run(run_process(spec, _print_line))
        except ProcessError as error:
            fail(str(error), "Give an interpreter with --python.")
    if result.ok:
        success(f"The run succeeded in {result.duration_seconds:.1f} s.")
        return
    fail(f"the run {result.describe()}", code=EXIT_NO)


async def _print_line(line: Any) -> None:
    stream = sys.stdout if line.stream == "stdout" else sys.stderr
    stream.write(f"{line.text}\n")
    stream.flush()


# --- bay runs ... -----------------------------------------------------------------------------


@runs.command("list")
def list_runs(
    ctx: typer.Context,
    deployment: Annotated[
        str | None, typer.Option("--deployment", "-d", help="Only this deployment's runs.")
    ] = None,
    status: Annotated[
        Status | None, typer.Option("--status", help="Only runs in this state.")
    ] = None,
    trigger: Annotated[
        Trigger | None, typer.Option("--trigger", help="Only runs started this way.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """List runs, newest first: of the deployments you may manage, or of one."""
    params = {
        "deployment": deployment,
        "status": status and status.value,
        "trigger": trigger and trigger.value,
    }
    found = connect(ctx).collect(api_path("runs"), params, limit=limit)
    show(found, RUN_COLUMNS, as_json, empty="No runs.")


@runs.command("show")
def show_run(ctx: typer.Context, run_id: RunId, as_json: JsonFlag = False) -> None:
    """Show a run: its state, times, exit code, why it ended, its input."""
    show(connect(ctx).request("GET", api_path("runs", run_id)), DETAIL_COLUMNS, as_json)


@runs.command("logs")
def logs(
    ctx: typer.Context,
    run_id: RunId,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing lines until the run ends.")
    ] = False,
) -> None:
    """Print a run's log: `<UTC time>Z stdout|stderr <text>` lines."""
    print_log(connect(ctx), api_path("runs", run_id, "logs"), follow=follow)


@runs.command("cancel")
def cancel(ctx: typer.Context, run_id: RunId, as_json: JsonFlag = False) -> None:
    """Cancel a run: a queued one at once, a running one within a second (TERM, then KILL)."""
    run = connect(ctx).request("POST", api_path("runs", run_id, "cancel"))
    message = (
        f"Cancelled run {run_id}."
        if run["status"] == "cancelled"
        else f"Asked run {run_id} to stop; `bay runs show {run_id}` tells when it has."
    )
    show(run, DETAIL_COLUMNS, as_json, message=message)


@runs.command("artifacts")
def artifacts(
    ctx: typer.Context,
    run_id: RunId,
    download: Annotated[
        Path | None,
        typer.Option("--download", help="Save every file into this folder.", show_default=False),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """List the files a run left in BAY_OUTPUT_DIR, or download them all."""
    api = connect(ctx)
    found = api.collect(api_path("runs", run_id, "artifacts"))
    if download is None:
        show(found, ARTIFACT_COLUMNS, as_json, empty="No files.")
        return
    saved = [_save(ctx, run_id, str(item["path"]), download) for item in found]
    if as_json:
        print_json(
            [
                {"path": item["path"], "file": str(file)}
                for item, file in zip(found, saved, strict=True)
            ]
        )
        return
    success(f"Saved {len(saved)} file(s) of run {run_id} into {download}.")


def _save(ctx: typer.Context, run_id: str, path: str, folder: Path) -> Path:
    """Download one artifact into `folder`, refusing a path that would leave it."""
    from servicebay.core.errors import InvalidInput
    from servicebay.runtime.runs import artifact_parts

    try:
        parts = artifact_parts(path)
    except InvalidInput as error:
        fail(f"the server listed an unsafe file name: {error.message}")
    target = folder.joinpath(*parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    url = resolve_url(target_of(ctx).url)
    key = resolve_key(target_of(ctx).key)
    try:
        with httpx.stream(
            "GET",
            f"{url}{api_path('runs', run_id, 'artifacts', *parts)}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=60.0,
        ) as response:
            if response.is_error:
                response.read()
                fail(f"cannot download {path}: HTTP {response.status_code}", response.text[:500])
            with target.open("wb") as file:
                for block in response.iter_bytes():
                    file.write(block)
    except httpx.HTTPError as error:
        fail(f"cannot download {path} from {url}: {error}")
    return target
