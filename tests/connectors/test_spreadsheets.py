"""The spreadsheets connector serves a folder's csv files and workbook sheets as tables."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from pathlib import Path

import pytest
from openpyxl import Workbook, load_workbook

from tests.connectors.conftest import (
    Connector,
    RunConnector,
    assert_documented,
    assert_identity_required,
    assert_problem,
)

SALES_CSV = "region;product;units\r\nEast;Jersey;3\r\nWest;Jersey;5\r\nEast;Cap;12\r\n"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`sales.csv` (semicolons, CRLF, as a spreadsheet program writes it) and `budget.xlsx`
    with two sheets, typed cells included."""
    folder = tmp_path_factory.mktemp("spreadsheets")
    (folder / "sales.csv").write_bytes(SALES_CSV.encode())
    (folder / "empty.csv").write_text("")
    workbook = Workbook()
    q1 = workbook.active
    assert q1 is not None
    q1.title = "Q1"
    q1.append(["team", "amount", "approved", "since"])
    q1.append(["marketing", 1200.5, True, date(2026, 1, 5)])
    q1.append(["data_science", 3000, False, date(2026, 2, 1)])
    workbook.create_sheet("Q2").append(["team", "amount"])
    workbook.save(folder / "budget.xlsx")
    (folder / ".hidden.csv").write_text("secret\n1\n")
    (folder / "notes.txt").write_text("not a table")
    return folder


@pytest.fixture(scope="module")
def spreadsheets(folder: Path, run_connector: RunConnector) -> Connector:
    return run_connector("spreadsheets", {"SPREADSHEETS_DIR": str(folder)})


def rows(connector: Connector, table: str, **params: object) -> dict[str, object]:
    answer = connector.call("GET", "/read_rows", params={"table": table, **params})
    assert answer.status_code == 200, answer.text
    result: dict[str, object] = answer.json()
    return result


def test_csv_files_and_workbook_sheets_are_listed_as_tables(spreadsheets: Connector) -> None:
    answer = spreadsheets.call("GET", "/list_tables")
    assert answer.status_code == 200, answer.text
    by_name = {table["name"]: table for table in answer.json()["tables"]}
    assert set(by_name) >= {"budget.Q1", "budget.Q2", "empty", "sales"}
    assert ".hidden" not in by_name
    assert "notes" not in by_name
    assert by_name["budget.Q1"] == {
        "name": "budget.Q1",
        "file": "budget.xlsx",
        "sheet": "Q1",
        "columns": ["team", "amount", "approved", "since"],
        "rows": 2,
    }
    assert by_name["empty"]["columns"] == []


def test_rows_are_read_with_filters_and_pages(spreadsheets: Connector) -> None:
    everything = rows(spreadsheets, "sales")
    assert everything["columns"] == ["region", "product", "units"]
    assert everything["rows"][:3] == [
        {"region": "East", "product": "Jersey", "units": "3"},
        {"region": "West", "product": "Jersey", "units": "5"},
        {"region": "East", "product": "Cap", "units": "12"},
    ]
    east = rows(spreadsheets, "sales", where=json.dumps({"region": "East"}), limit=1)
    assert east["rows"] == [{"region": "East", "product": "Jersey", "units": "3"}]
    assert east["next_offset"] == 1
    assert east["total"] >= 2
    second = rows(spreadsheets, "sales", where=json.dumps({"region": "East"}), limit=1, offset=1)
    assert second["rows"] == [{"region": "East", "product": "Cap", "units": "12"}]
    typed = rows(spreadsheets, "budget.Q1", where=json.dumps({"amount": 3000, "approved": False}))
    assert typed["rows"] == [
        {"team": "data_science", "amount": 3000, "approved": False, "since": "2026-02-01T00:00:00"}
    ]


@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        ({"table": "nope"}, 404, ["no table 'nope'", "sales", "budget.Q1"]),
        ({"table": "sales", "where": "region=East"}, 400, ["JSON object"]),
        ({"table": "sales", "where": '{"city": "x"}'}, 400, ["city", "region, product, units"]),
        ({"table": "sales", "limit": 0}, 400, ["limit"]),
        ({"table": "sales", "limit": 0, "offset": -1}, 400, ["query.limit", "query.offset"]),
    ],
)
def test_bad_reads_are_clear_problems(
    spreadsheets: Connector, params: dict[str, object], status: int, words: list[str]
) -> None:
    assert_problem(spreadsheets.call("GET", "/read_rows", params=params), status, *words)


def test_a_row_appended_to_a_csv_keeps_the_files_bytes_and_dialect(
    spreadsheets: Connector, folder: Path
) -> None:
    before = (folder / "sales.csv").read_bytes()
    answer = spreadsheets.call(
        "POST", "/append_row", params={"table": "sales"}, json={"region": "North; East", "units": 7}
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["row"] == {"region": "North; East", "product": None, "units": 7}
    after = (folder / "sales.csv").read_bytes()
    assert after.startswith(before)
    assert after[len(before) :] == b'"North; East";;7\r\n'


def test_a_value_with_quotes_is_appended_to_a_csv_with_its_quotes_doubled(
    spreadsheets: Connector, folder: Path
) -> None:
    (folder / "quotes.csv").write_bytes(b"name;notes\r\nann;x\r\n")
    answer = spreadsheets.call(
        "POST", "/append_row", params={"table": "quotes"}, json={"name": 'say "hi"'}
    )
    assert answer.status_code == 201, answer.text
    assert (folder / "quotes.csv").read_bytes().endswith(b'"say ""hi""";\r\n')
    assert rows(spreadsheets, "quotes")["rows"][-1] == {"name": 'say "hi"', "notes": ""}


def test_text_a_spreadsheet_program_would_run_as_a_formula_is_refused_in_a_csv(
    spreadsheets: Connector, folder: Path
) -> None:
    (folder / "contacts.csv").write_text("name,notes,phone,balance\n")
    bad = {"name": '=HYPERLINK("http://evil","x")', "notes": "@SUM(A1)", "phone": "+49 30 1"}
    answer = spreadsheets.call("POST", "/append_row", params={"table": "contacts"}, json=bad)
    problem = assert_problem(answer, 400, "body.name", "body.notes", "body.phone")
    assert {error["type"] for error in problem["errors"]} == {"formula"}
    for start in ("-", "\t", "\r"):
        answer = spreadsheets.call(
            "POST", "/append_row", params={"table": "contacts"}, json={"notes": f"{start}x"}
        )
        assert_problem(answer, 400, "body.notes")
    assert (folder / "contacts.csv").read_text() == "name,notes,phone,balance\n"
    fine = {"name": "ann", "notes": "a = b", "balance": -5}
    answer = spreadsheets.call("POST", "/append_row", params={"table": "contacts"}, json=fine)
    assert answer.status_code == 201, answer.text


def test_a_row_appended_to_a_sheet_is_typed_and_text_stays_text(
    spreadsheets: Connector, folder: Path
) -> None:
    answer = spreadsheets.call(
        "POST",
        "/append_row",
        params={"table": "budget.Q2"},
        json={"team": '=HYPERLINK("http://evil.example","click")', "amount": 250.25},
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["row_number"] == 1
    sheet = load_workbook(folder / "budget.xlsx")["Q2"]
    assert sheet["A2"].data_type == "s"
    assert sheet["A2"].value == '=HYPERLINK("http://evil.example","click")'
    assert sheet["B2"].value == 250.25
    bell = spreadsheets.call(
        "POST", "/append_row", params={"table": "budget.Q2"}, json={"team": "a\x07b"}
    )
    assert_problem(bell, 400, "body.team has a control character")
    q1 = load_workbook(folder / "budget.xlsx", data_only=True)["Q1"]
    assert q1["D2"].value == datetime(2026, 1, 5)


def test_appending_to_a_workbook_with_formulas_is_a_409_that_keeps_the_file(
    spreadsheets: Connector, folder: Path
) -> None:
    """Saving would drop the values Excel computed for the formulas, in every sheet."""
    workbook = Workbook()
    assert workbook.active is not None
    workbook.active.title = "totals"
    workbook.active.append(["units", "price", "total"])
    workbook.active.append([2, 3, "=A2*B2"])
    workbook.create_sheet("log").append(["event"])
    workbook.save(folder / "priced.xlsx")
    before = (folder / "priced.xlsx").read_bytes()
    answer = spreadsheets.call(
        "POST", "/append_row", params={"table": "priced.log"}, json={"event": "x"}
    )
    assert_problem(answer, 409, "priced.xlsx has formulas (totals!C2)", "without formulas")
    assert (folder / "priced.xlsx").read_bytes() == before


def test_a_row_that_does_not_fit_the_header_is_a_400_listing_each_problem(
    spreadsheets: Connector, folder: Path
) -> None:
    before = (folder / "sales.csv").read_bytes()
    answer = spreadsheets.call(
        "POST", "/append_row", params={"table": "sales"}, json={"regoin": "East", "units": [1, 2]}
    )
    problem = assert_problem(answer, 400, "body.regoin", "body.units")
    assert problem["errors"][0]["msg"] == "is not a column; the columns are region, product, units"
    empty = spreadsheets.call("POST", "/append_row", params={"table": "sales"}, json={})
    assert_problem(empty, 400, "body")
    headerless = spreadsheets.call("POST", "/append_row", params={"table": "empty"}, json={"a": 1})
    assert headerless.status_code == 400
    assert (folder / "sales.csv").read_bytes() == before


def test_concurrent_appends_lose_nothing_and_leave_no_temporary_file(
    spreadsheets: Connector, folder: Path
) -> None:
    """Forty appends from eight threads at once, to a csv file and a sheet of their own."""
    (folder / "log.csv").write_text("event,number\n")
    workbook = Workbook()
    assert workbook.active is not None
    workbook.active.title = "events"
    workbook.active.append(["event", "number"])
    workbook.save(folder / "log.xlsx")

    def append(number: int) -> int:
        table = "log" if number % 2 else "log.events"
        row = {"event": f"e{number}", "number": number}
        return spreadsheets.call(
            "POST", "/append_row", params={"table": table}, json=row
        ).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(append, range(40))) == {201}
    in_csv = rows(spreadsheets, "log", limit=1000)["rows"]
    in_sheet = rows(spreadsheets, "log.events", limit=1000)["rows"]
    assert sorted(row["event"] for row in in_csv) == sorted(f"e{n}" for n in range(1, 40, 2))
    assert sorted(row["event"] for row in in_sheet) == sorted(f"e{n}" for n in range(0, 40, 2))
    assert list(folder.glob("*.tmp")) == []


@pytest.fixture(scope="module")
def untidy(tmp_path_factory: pytest.TempPathFactory, run_connector: RunConnector) -> Connector:
    """A folder as people leave them: an Excel owner file beside an open workbook, a csv
    saved as Windows-1252, a broken workbook, next to a good csv."""
    folder = tmp_path_factory.mktemp("untidy")
    (folder / "good.csv").write_text("name\nann\n")
    (folder / "~$budget.xlsx").write_bytes(b"\x05owner\x00" * 20)
    (folder / "legacy.csv").write_bytes("name,city\nJos\xe9,M\xfcnchen\n".encode("cp1252"))
    (folder / "broken.xlsx").write_bytes(b"PK\x03\x04 not really a zip")
    (folder / "passwd.csv").symlink_to("/etc/passwd")
    (folder / "outside.csv").symlink_to(folder.parent / "elsewhere.csv")
    (folder.parent / "elsewhere.csv").write_text("secret\n1\n")
    return run_connector("spreadsheets", {"SPREADSHEETS_DIR": str(folder)})


def test_a_file_that_cannot_be_read_is_named_and_does_not_stop_the_others(
    untidy: Connector,
) -> None:
    answer = untidy.call("GET", "/list_tables")
    assert answer.status_code == 200, answer.text
    assert [table["name"] for table in answer.json()["tables"]] == ["good"]
    problems = {item["file"]: item["problem"] for item in answer.json()["unreadable"]}
    assert set(problems) == {"broken.xlsx", "legacy.csv"}
    assert "CSV UTF-8" in problems["legacy.csv"]
    assert rows(untidy, "good")["rows"] == [{"name": "ann"}]
    legacy = untidy.call("GET", "/read_rows", params={"table": "legacy"})
    assert_problem(legacy, 422, "legacy.csv is not UTF-8", "CSV UTF-8")
    broken = untidy.call("GET", "/read_rows", params={"table": "broken.Q1"})
    assert_problem(broken, 422, "broken.xlsx could not be read", "move it out")
    owner = untidy.call("GET", "/read_rows", params={"table": "~$budget.Sheet"})
    assert_problem(owner, 404, "there are: good")


def test_symbolic_links_are_not_followed(untidy: Connector) -> None:
    """A link in the folder could serve any file the service may read."""
    names = [table["name"] for table in untidy.call("GET", "/list_tables").json()["tables"]]
    assert "passwd" not in names
    assert "outside" not in names
    for table in ("passwd", "outside"):
        answer = untidy.call("GET", "/read_rows", params={"table": table})
        assert_problem(answer, 404, f"no table {table!r}")


def test_calls_without_the_gateways_identity_are_401s(spreadsheets: Connector) -> None:
    assert_identity_required(spreadsheets, "GET", "/list_tables")


def test_the_endpoints_are_documented(spreadsheets: Connector) -> None:
    assert_documented(
        spreadsheets, {("GET", "/list_tables"), ("GET", "/read_rows"), ("POST", "/append_row")}
    )


def test_a_folder_that_is_not_there_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="is not a folder"):
        Connector("spreadsheets", {"SPREADSHEETS_DIR": str(tmp_path / "missing")})
