"""How `bay` shows results: Rich tables for people, the API's own JSON for scripts.

Every command prints through `show` (or `print_json`), so `--json` means the same thing
everywhere, and every expected failure goes through `fail`: one line on stderr that says
what went wrong and what to do next, a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

Row = Mapping[str, Any]

EXIT_NO = 1
"""A negative answer: permission denied, audit chain broken, nothing matched."""
EXIT_ERROR = 2
"""The command could not do its job: bad input, an API error, an unreachable server."""


def _pipe_width() -> int | None:
    """Give pipes wide lines so `grep` sees whole rows; terminals keep their own width."""
    return None if sys.stdout.isatty() or "COLUMNS" in os.environ else 200


console = Console(highlight=False, markup=False, width=_pipe_width())
errors = Console(stderr=True, highlight=False, markup=False)


def when(value: Any) -> str:
    """An API timestamp in the reader's local time, to the second."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def plain(value: Any) -> str:
    if value is None or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False) if value else "-"
    return str(value)


@dataclass(frozen=True)
class Column:
    """One column of a table: a header, the field (or a function of the row), a format."""

    header: str
    field: str | Callable[[Row], Any]
    fmt: Callable[[Any], str] = plain
    style: str | None = None

    def cell(self, row: Row) -> Text:
        value = self.field(row) if callable(self.field) else row.get(self.field)
        text = "-" if value is None else self.fmt(value)
        # Text, not a markup string: data such as "[admin]" must print as typed.
        return Text(text, style=self.style or "")


def print_json(data: Any) -> None:
    """Exactly the API's JSON, unwrapped and uncoloured, for `jq` and scripts."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def print_table(rows: Sequence[Row], columns: Sequence[Column], *, empty: str) -> None:
    if not rows:
        console.print(Text(empty, style="dim"))
        return
    table = Table(*(column.header for column in columns), header_style="bold")
    for row in rows:
        table.add_row(*(column.cell(row) for column in columns))
    console.print(table)


def print_record(row: Row, columns: Sequence[Column]) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for column in columns:
        grid.add_row(Text(column.header), column.cell(row))
    console.print(grid)


def show(
    data: Any,
    columns: Sequence[Column],
    as_json: bool,
    *,
    message: str | None = None,
    empty: str = "Nothing to show.",
) -> None:
    """Print an API answer: its JSON with `--json`, else a table (lists) or a record."""
    if as_json:
        print_json(data)
        return
    if message:
        success(message)
    if isinstance(data, list):
        print_table(data, columns, empty=empty)
    else:
        print_record(data, columns)


def success(message: str) -> None:
    console.print(Text(message, style="green"))


def new_key_notice(key: str) -> None:
    """Show a freshly created API key: the one time it can be seen."""
    console.print()
    console.print(Text(f"    {key}", style="bold"), soft_wrap=True)
    console.print()
    console.print(
        Text(
            "Copy this key now: it is not shown again (the server keeps only its hash).",
            style="yellow",
        )
    )


def read_secret(label: str, *, confirm: bool = False) -> str:
    """A secret from piped stdin (one trailing newline dropped, so `echo` works), else typed
    at a hidden prompt; never from the command line, where the process list shows it."""
    if sys.stdin.isatty():
        typed: str = typer.prompt(label, hide_input=True, confirmation_prompt=confirm)
        return typed
    return sys.stdin.read().removesuffix("\n").removesuffix("\r")


def fail(headline: str, *lines: str, code: int = EXIT_ERROR) -> NoReturn:
    """Report an expected failure on stderr and leave with `code`."""
    errors.print(Text(f"Error: {headline}", style="red"), soft_wrap=True)
    for line in lines:
        errors.print(Text(f"  {line}"), soft_wrap=True)
    raise typer.Exit(code)
