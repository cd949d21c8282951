"""Spreadsheets: the xlsx and csv files of one folder as tables, to list, read and append to.

A csv file `sales.csv` is the table `sales`; each sheet `Q1` of a workbook `budget.xlsx`
is the table `budget.Q1`. A table's first row is its header: the column names. Appends
are serialised by a lock file per spreadsheet (across threads and processes) and written
whole to a temporary file that is then renamed over the old one, so a reader never sees
half a file and concurrent appends lose nothing.

Settings: `SPREADSHEETS_DIR`, the folder (files directly in it; names starting with `.`
or `~$` are ignored). A file that cannot be read is a 422 naming it, for its own tables
only.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import stat
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from openpyxl import Workbook, load_workbook
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.utils.exceptions import InvalidFileException

from servicebay.sdk import HttpError, Service
from servicebay.sdk.service import field_error, invalid
from servicebay.sdk.upstream import setting

app = Service(
    "spreadsheets",
    description="The shared spreadsheets (xlsx and csv files in one folder) as tables: list "
    "them, read rows, append a row.",
    log_queries=False,  # a `where` holds cell values
)

MAX_LIMIT = 10_000
SCALARS = (str, int, float, bool)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What a csv cell's text may not start with (OWASP, CSV injection)."""
FORMULA_MESSAGE = (
    "starts with = + - @, a tab or a carriage return, which a spreadsheet program would run "
    "as a formula; send numbers as JSON numbers, or start the text otherwise"
)


@dataclass(frozen=True)
class Table:
    name: str
    path: Path
    sheet: str | None
    """The workbook's sheet; None for a csv file."""


def folder() -> Path:
    path = Path(setting("SPREADSHEETS_DIR"))
    if not path.is_dir():
        raise RuntimeError(f"SPREADSHEETS_DIR {str(path)!r} is not a folder")
    return path


def files() -> list[Path]:
    """The folder's csv and xlsx files; names starting with `.` are skipped, and `~$` ones
    too: Excel's lock files beside the workbooks it has open, which are not workbooks.
    Symbolic links are skipped: one could serve any file the service may read."""
    return [
        path
        for path in sorted(folder().iterdir())
        if not path.name.startswith((".", "~$"))
        and path.suffix.lower() in (".csv", ".xlsx")
        and path.is_file()
        and not path.is_symlink()
    ]


def tables_of(path: Path) -> list[Table]:
    """The tables of one file: a csv file's one, a workbook's sheets (opening it)."""
    if path.suffix.lower() == ".csv":
        return [Table(path.stem, path, None)]
    with _readable(path):
        workbook = load_workbook(_open(path), read_only=True)
    try:
        return [Table(f"{path.stem}.{sheet}", path, sheet) for sheet in workbook.sheetnames]
    finally:
        workbook.close()


@app.get("/list_tables")
def list_tables() -> dict[str, Any]:
    """Every table: csv files by their name without `.csv`, workbook sheets as
    `workbook.sheet`, each with its file, sheet, columns (its first row) and row count;
    files that cannot be read are in `unreadable`, each with what is wrong."""
    listed = []
    unreadable = []
    for path in files():
        try:
            for table in tables_of(path):
                columns, rows = _read(table)
                listed.append(
                    {
                        "name": table.name,
                        "file": path.name,
                        "sheet": table.sheet,
                        "columns": columns,
                        "rows": len(rows),
                    }
                )
        except Unreadable as error:
            unreadable.append({"file": path.name, "problem": error.detail})
    return {"tables": listed, "unreadable": unreadable}


@app.get("/read_rows")
def read_rows(
    table: str, where: str | None = None, limit: int = 100, offset: int = 0
) -> dict[str, Any]:
    """Rows of `table` as objects keyed by column, in the file's order.

    `where` is a JSON object of column: value that a row must all equal (compared as text:
    `{"region": "East", "units": 3}`); `limit` (1 to 10000) and `offset` page through the
    matches: `total` counts them all, `next_offset` is where the next page starts, or null.
    """
    errors = []
    if not 1 <= limit <= MAX_LIMIT:
        errors.append(field_error("limit", f"is 1 to {MAX_LIMIT}, not {limit}", "range"))
    if offset < 0:
        errors.append(field_error("offset", f"is 0 or more, not {offset}", "range"))
    if errors:
        raise invalid(errors)
    found = _table(table)
    columns, rows = _read(found)
    wanted = _filters(where, columns)
    matches = [row for row in rows if all(_text(row[name]) == value for name, value in wanted)]
    page = matches[offset : offset + limit]
    following = offset + limit if offset + limit < len(matches) else None
    return {
        "table": found.name,
        "columns": columns,
        "rows": page,
        "total": len(matches),
        "next_offset": following,
    }


@app.post("/append_row", status=201)
def append_row(table: str, row: dict[str, Any]) -> dict[str, Any]:
    """Append `row`, a JSON object of column: value, at the end of `table`.

    Every key must be one of the table's columns (its header); columns left out stay empty.
    Values are text, numbers, booleans or null. Answers the row as written and its number
    (1 is the first row under the header).
    """
    found = _table(table)
    with _locked(found.path):
        columns, rows = _read(found)
        values = _checked(row, columns, csv_file=found.sheet is None)
        if found.sheet is None:
            _write(found.path, lambda target: _append_csv(found.path, target, columns, values))
        else:
            _write(found.path, lambda target: _append_xlsx(found, target, columns, values))
    return {
        "table": found.name,
        "row_number": len(rows) + 1,
        "row": dict(zip(columns, values, strict=True)),
    }


def _table(name: str) -> Table:
    """The table `name`, opening only the files it can be in (one bad file elsewhere in
    the folder does not stop it)."""
    for path in files():
        if (path.suffix.lower() == ".csv" and path.stem == name) or (
            path.suffix.lower() == ".xlsx" and name.startswith(f"{path.stem}.")
        ):
            for table in tables_of(path):
                if table.name == name:
                    return table
    known = []
    for path in files():
        with suppress(Unreadable):
            known += [table.name for table in tables_of(path)]
    listed = ", ".join(known) or "none"
    raise HttpError(404, f"no table {name!r} in the spreadsheets folder; there are: {listed}")


class Unreadable(HttpError):
    """A file of the folder that cannot be read: a 422 naming it and what to do."""


@contextmanager
def _readable(path: Path) -> Iterator[None]:
    """Turn a file's failure to open or parse into `Unreadable`, saying what to do."""
    try:
        yield
    except UnicodeDecodeError:
        raise Unreadable(
            422,
            f'{path.name} is not UTF-8 text: save it again as "CSV UTF-8" (Excel) or with '
            "the UTF-8 character set",
        ) from None
    except csv.Error as error:
        raise Unreadable(422, f"{path.name} is not a csv file that can be read: {error}") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, InvalidFileException) as error:
        raise Unreadable(
            422,
            f"{path.name} could not be read ({type(error).__name__}: {error}): check that it is "
            "a spreadsheet saved whole, as .xlsx or .csv, or move it out of the folder",
        ) from None


def _open(path: Path) -> BinaryIO:
    """`path` opened for reading, never through a symbolic link (one put in its place after
    the folder was listed is an `OSError`, so `Unreadable`)."""
    return os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb")


def _read(table: Table) -> tuple[list[str], list[dict[str, Any]]]:
    """The table's columns (its first row) and its rows; empty rows are skipped."""
    with _readable(table.path):
        if table.sheet is None:
            with io.TextIOWrapper(_open(table.path), encoding="utf-8-sig", newline="") as file:
                lines: list[list[Any]] = list(csv.reader(file, delimiter=_delimiter(file)))
        else:
            workbook = load_workbook(_open(table.path), read_only=True, data_only=True)
            try:
                cells = workbook[table.sheet].iter_rows(values_only=True)
                lines = [list(line) for line in cells]
            finally:
                workbook.close()
    lines = [line for line in lines if any(value not in (None, "") for value in line)]
    if not lines:
        return [], []
    columns = [
        str(value) if value not in (None, "") else f"column_{index}"
        for index, value in enumerate(lines[0], start=1)
    ]
    width = len(columns)
    rows = [dict(zip(columns, [*line, *[None] * width][:width], strict=True)) for line in lines[1:]]
    return columns, rows


def _filters(where: str | None, columns: list[str]) -> list[tuple[str, str]]:
    if where is None:
        return []
    try:
        wanted = json.loads(where)
    except ValueError:
        wanted = None
    if not isinstance(wanted, dict) or not all(isinstance(v, SCALARS) for v in wanted.values()):
        raise HttpError(
            400, '`where` should be a JSON object of column: value, like {"region": "East"}'
        )
    unknown = [name for name in wanted if name not in columns]
    if unknown:
        raise HttpError(
            400,
            f"`where` names columns the table does not have: {', '.join(unknown)}; "
            f"its columns are {', '.join(columns)}",
        )
    return [(name, _text(value)) for name, value in wanted.items()]


def _checked(row: dict[str, Any], columns: list[str], *, csv_file: bool) -> list[Any]:
    """The row's values in column order, or a 400 listing every key and value that is wrong.

    In a csv file, text starting with `=`, `+`, `-`, `@`, tab or carriage return is refused
    (OWASP's CSV injection list): a spreadsheet program opening the file would run it as a
    formula. Numbers are sent as JSON numbers, so `-5` still goes in. In a workbook, text
    with a control character is refused: openpyxl cannot write it.
    """
    errors = [
        field_error(
            key, f"is not a column; the columns are {', '.join(columns)}", "unknown", "body"
        )
        for key in row
        if key not in columns
    ]
    errors += [
        field_error(key, "should be text, a number, a boolean or null", "type", "body")
        for key, value in row.items()
        if value is not None and not isinstance(value, SCALARS)
    ]
    if csv_file:
        errors += [
            field_error(key, FORMULA_MESSAGE, "formula", "body")
            for key, value in row.items()
            if isinstance(value, str) and value.startswith(FORMULA_STARTS)
        ]
    else:
        errors += [
            field_error(
                key, "has a control character, which a workbook cannot hold", "text", "body"
            )
            for key, value in row.items()
            if isinstance(value, str) and ILLEGAL_CHARACTERS_RE.search(value)
        ]
    if not columns:
        errors.append(field_error(None, "the table has no header row", "header", "body"))
    elif all(row.get(name) in (None, "") for name in columns) and not errors:
        errors.append(field_error(None, "the row is empty", "missing", "body"))
    if errors:
        raise invalid(errors)
    return [row.get(name) for name in columns]


def _text(value: Any) -> str:
    """A cell's value as text, the same for a csv's "3" and a workbook's 3 (or 3.0)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return str(value)


def _delimiter(file: TextIO) -> str:
    """The file's delimiter (`,`, `;` or tab, as spreadsheet programs write them).

    Only the delimiter is sniffed: the rest is Excel's dialect, quotes doubled inside
    quoted values, since the sniffer says `doublequote=False` for most samples and the
    csv writer then cannot write a value with a `"` in it at all.
    """
    sample = file.read(8192)
    file.seek(0)
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t").delimiter
    except csv.Error:
        return ","


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One writer at a time per spreadsheet: a lock on a file beside it (the spreadsheet
    itself is replaced by each write, so it cannot hold the lock)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
    with os.fdopen(os.open(path.with_name(f".{path.name}.lock"), flags, 0o666), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write(path: Path, fill: Callable[[Path], None]) -> None:
    """Replace `path` by what `fill` writes to a temporary file beside it, renamed over it."""
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    temporary = Path(name)
    try:
        fill(temporary)
        os.chmod(temporary, stat.S_IMODE(path.stat().st_mode))
        with temporary.open("rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _append_csv(path: Path, target: Path, columns: list[str], values: list[Any]) -> None:
    """The file's bytes as they are, then the row in the file's own dialect."""
    with _open(path) as file:
        content = file.read()
    delimiter = _delimiter(io.StringIO(content.decode("utf-8-sig")))
    ending = "\r\n" if b"\r\n" in content else "\n"
    line = io.StringIO()
    writer = csv.writer(line, delimiter=delimiter, lineterminator=ending)
    writer.writerow(_text(value) for value in values)
    if content and not content.endswith(b"\n"):
        content += ending.encode()
    target.write_bytes(content + line.getvalue().encode())


def _append_xlsx(table: Table, target: Path, columns: list[str], values: list[Any]) -> None:
    with _readable(table.path):
        workbook = load_workbook(_open(table.path))
    _refuse_formulas(table, workbook)
    sheet = workbook[str(table.sheet)]
    last = max(
        (cell.row for line in sheet.iter_rows() for cell in line if cell.value not in (None, "")),
        default=0,
    )
    for index, value in enumerate(values, start=1):
        cell = sheet.cell(row=last + 1, column=index, value=value)
        if isinstance(value, str):
            cell.data_type = "s"  # text stays text: "=HYPERLINK(...)" is not a formula
    workbook.save(target)


def _refuse_formulas(table: Table, workbook: Workbook) -> None:
    """A 409 when any sheet has a formula: openpyxl saves formulas without the values Excel
    last computed for them, so after an append every reader (this service included) would
    see those cells empty until someone opens and saves the workbook in Excel."""
    for sheet in workbook.worksheets:
        for line in sheet.iter_rows():
            for cell in line:
                if cell.data_type == "f":
                    raise HttpError(
                        409,
                        f"{table.path.name} has formulas ({sheet.title}!{cell.coordinate}), and "
                        "appending would lose the values Excel computed for them (the file is "
                        "saved without them); append to a workbook without formulas, or keep "
                        "the formulas in a workbook that refers to this one",
                    )


if __name__ == "__main__":
    folder()  # a missing or wrong setting stops the start, with its name
    app.run()
