"""The audit log: read it, export it, and check that nobody rewrote it."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from servicebay.cli.admin import JsonFlag
from servicebay.cli.client import api_path, connect
from servicebay.cli.output import (
    EXIT_NO,
    Column,
    errors,
    fail,
    print_json,
    print_table,
    show,
    success,
    when,
)

audit = typer.Typer(
    help="List audit events (newest first), export them, verify the hash chain.",
    invoke_without_command=True,
)


class Outcome(StrEnum):
    allowed = "allowed"
    denied = "denied"
    error = "error"


AUDIT_COLUMNS = (
    Column("seq", "seq", style="dim"),
    Column("time", "ts", when),
    Column("actor", "actor", style="cyan"),
    Column("action", "action"),
    Column("resource", "resource"),
    Column("outcome", "outcome"),
    Column("status", "status"),
)

DEFAULT_LIMIT = 50
_AGE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _moment(text: str | None) -> str | None:
    """An ISO-8601 time as given, or an age such as `15m`, `2h`, `7d` turned into one."""
    if text is None:
        return None
    age = _AGE.match(text)
    if not age:
        return text
    delta = timedelta(**{_UNITS[age[2]]: int(age[1])})
    return (datetime.now(UTC) - delta).isoformat(timespec="seconds")


Actor = Annotated[str | None, typer.Option("--actor", help="Only events by this e-mail.")]
Resource = Annotated[str | None, typer.Option("--resource", help="Only events on this resource.")]
Action = Annotated[str | None, typer.Option("--action", help="Only this action, e.g. user.create.")]
OutcomeOption = Annotated[Outcome | None, typer.Option("--outcome", help="Only this outcome.")]
Since = Annotated[
    str | None,
    typer.Option("--since", help="From this time (ISO-8601) or age (15m, 2h, 7d)."),
]
Until = Annotated[
    str | None,
    typer.Option("--until", help="Up to this time (ISO-8601) or age (15m, 2h, 7d)."),
]


def _filters(
    actor: str | None,
    resource: str | None,
    action: str | None,
    outcome: Outcome | None,
    since: str | None,
    until: str | None,
) -> dict[str, Any]:
    return {
        "actor": actor,
        "resource": resource,
        "action": action,
        "outcome": outcome and outcome.value,
        "since": _moment(since),
        "until": _moment(until),
    }


@audit.callback()
def list_events(
    ctx: typer.Context,
    actor: Actor = None,
    resource: Resource = None,
    action: Action = None,
    outcome: OutcomeOption = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="Show at most this many events.")
    ] = DEFAULT_LIMIT,
    as_json: JsonFlag = False,
) -> None:
    """List audit events, newest first (members see their own)."""
    filters = _filters(actor, resource, action, outcome, since, until)
    if ctx.invoked_subcommand is None:
        events = connect(ctx).collect(api_path("audit"), filters, limit=limit)
        show(events, AUDIT_COLUMNS, as_json, empty="No audit events match.")
    elif any(value is not None for value in filters.values()) or as_json or limit != DEFAULT_LIMIT:
        fail(f"put the options after the subcommand: bay audit {ctx.invoked_subcommand} --...")


@audit.command("export")
def export(
    ctx: typer.Context,
    actor: Actor = None,
    resource: Resource = None,
    action: Action = None,
    outcome: OutcomeOption = None,
    since: Since = None,
    until: Until = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file, not stdout.")
    ] = None,
) -> None:
    """Write the matching events as JSON lines, oldest first, for archives and other tools."""
    filters = _filters(actor, resource, action, outcome, since, until)
    count = 0
    with connect(ctx).stream(api_path("audit", "export"), filters) as lines, _sink(output) as out:
        for line in lines:
            if line.strip():
                out.write(line + "\n")
                count += 1
    if output:
        success(f"Wrote {count} events to {output}.")


@contextmanager
def _sink(path: Path | None) -> Iterator[TextIO]:
    """The export's destination, opened only once the server has accepted the request."""
    if path is None:
        yield sys.stdout
        return
    try:
        out = path.open("w", encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror}")
    with out:
        yield out


@audit.command("verify")
def verify(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Recompute the hash chain; exit code 1 when an event was edited, removed or inserted."""
    report = connect(ctx).request("GET", api_path("audit", "verify"))
    if as_json:
        print_json(report)
    elif report["ok"]:
        success(f"The audit chain is intact: {report['checked']} events checked.")
    else:
        print_table(
            report["problems"],
            (Column("seq", "seq"), Column("problem", "reason")),
            empty="",
        )
        errors.print(
            f"The audit chain is BROKEN: {len(report['problems'])} problem(s) "
            f"in {report['checked']} events.",
            style="red",
            markup=False,
        )
    raise typer.Exit(0 if report["ok"] else EXIT_NO)
