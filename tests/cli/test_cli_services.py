"""`bay services`: a commented `service.json` in, a live SQL service out, over a real server."""

from __future__ import annotations

import json
import re
import secrets
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cli.cli_support import Bay, assert_clean_failure

SERVICE_JSON = """\
// service.json: the sales database, as a REST service
{
  "name": "{name}",   # mounted at /{name}/...
  "kind": "sql",
  "description": "{description}",
  "secret": "{secret}",  // names the secret; its value stays on the server
  "tables": {
    "customer": {"key": "email", "operations": ["read"]}  # "#" in a comment
  },
  "queries": {
    "pro_customers": {"sql": "SELECT count(*) AS n FROM customer WHERE plan = 'pro'",
                      "description": "How many customers pay // not a comment"}
  }
}
"""


@dataclass
class Sales:
    name: str
    secret: str
    db: Path
    folder: Path

    def write(self, description: str = "The sales database", template: str = SERVICE_JSON) -> Path:
        text = (
            template.replace("{name}", self.name)
            .replace("{secret}", self.secret)
            .replace("{description}", description)
        )
        path = self.folder / "service.json"
        path.write_text(text)
        return path


@pytest.fixture
def sales(bay: Bay, tmp_path: Path, sales_db: Path) -> Iterator[Sales]:
    """A SQLite business database, a secret holding its URL allowed for a service name
    unique to the test, and an empty folder for the service's `service.json`."""
    db = sales_db
    name = f"sales-{secrets.token_hex(3)}"
    secret = f"SALES_DB_{secrets.token_hex(3).upper()}"
    stored = bay("secrets", "set", secret, "--allow", f"service:{name}", input=f"sqlite:///{db}")
    assert stored.returncode == 0, stored.stderr
    folder = tmp_path / "sales"
    folder.mkdir()
    yield Sales(name, secret, db, folder)
    bay("services", "delete", name)
    bay("secrets", "delete", secret)


def test_register_from_a_commented_file_then_update_it_to_version_2(
    bay: Bay, server: Any, sales: Sales
) -> None:
    sales.write()

    created = bay("services", "register", str(sales.folder))
    updated = bay("services", "register", str(sales.write("Customers and plans")), "--json")

    assert created.returncode == 0, created.stderr
    assert f"Registered service {sales.name} (version 1)." in created.stdout
    assert f"{server.url}/{sales.name}/openapi.json" in created.stdout
    curl = next(line for line in created.stdout.splitlines() if "curl " in line)
    assert '-H "Authorization: Bearer $BAY_API_KEY"' in curl
    assert f"bay grant team:TEAM service:{sales.name}/customer read" in created.stdout
    # The example works as printed, with the caller's key in place of $BAY_API_KEY.
    url = shlex.split(curl.split("curl ", 1)[1])[-1]
    assert url == f"{server.url}/{sales.name}/customer?limit=5"
    with server.admin() as admin:
        rows = admin.get(url.removeprefix(server.url))
        docs = admin.get(f"/{sales.name}/openapi.json")
    assert rows.status_code == 200, rows.text
    assert {row["email"] for row in rows.json()["data"]} >= {"julius@nyknicks.com"}
    assert docs.status_code == 200
    assert updated.returncode == 0, updated.stderr
    service = json.loads(updated.stdout)
    assert service["version"] == 2
    assert service["description"] == "Customers and plans"
    assert service["spec"]["queries"]["pro_customers"]["description"].endswith("// not a comment")
    again = bay("services", "register", str(sales.folder / "service.json"))
    assert f"Updated service {sales.name} to version 3." in again.stdout


def test_list_and_show_name_the_secret_and_never_reveal_its_value(
    bay: Bay, server: Any, sales: Sales
) -> None:
    assert bay("services", "register", str(sales.write())).returncode == 0

    listed = bay("services", "list")
    listed_json = bay("services", "list", "--json")
    shown = bay("services", "show", sales.name)
    shown_json = bay("services", "show", sales.name, "--json")

    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if sales.name in line)
    assert re.search(rf"{re.escape(sales.name)}\s*│\s*sql\s*│\s*1\s*│\s*The sales database", row)
    found = {item["name"]: item for item in json.loads(listed_json.stdout)}
    assert found[sales.name]["kind"] == "sql"
    assert found[sales.name]["version"] == 1
    assert shown.returncode == 0, shown.stderr
    assert f"/{sales.name}/openapi.json" in shown.stdout
    assert server.admin_email in shown.stdout
    assert f'"secret": "{sales.secret}"' in shown.stdout
    service = json.loads(shown_json.stdout)
    assert service["spec"]["secret"] == sales.secret
    assert service["spec"]["tables"]["customer"]["key"] == "email"
    for result in (listed, listed_json, shown, shown_json):
        assert str(sales.db) not in result.stdout + result.stderr
        assert "sqlite:///" not in result.stdout + result.stderr


def test_all_tables_give_an_example_from_the_live_documentation(bay: Bay, sales: Sales) -> None:
    path = sales.write()
    document = re.sub(r'"tables": \{.*?\n  \},', '"tables": "*",', path.read_text(), flags=re.S)
    path.write_text(document)

    result = bay("services", "register", str(path))

    assert result.returncode == 0, result.stderr
    assert f"/{sales.name}/customer?limit=5" in result.stdout


def test_a_comment_syntax_error_names_file_line_and_column_before_any_request(
    bay: Bay, sales: Sales
) -> None:
    broken = SERVICE_JSON.replace('"kind": "sql",', '"kind": "sql"  # the comma is missing')
    path = sales.write(template=broken)

    # No key at all: the file is read first, so its error is what the author sees.
    result = bay("services", "register", str(sales.folder), env={"BAY_API_KEY": None})

    assert_clean_failure(result)
    assert f"Error: {path}:5:3: Expecting ',' delimiter" in result.stderr
    assert '5 |   "description": "The sales database",' in result.stderr
    assert "  |   ^" in result.stderr
    assert "no API key" not in result.stderr


def test_a_server_side_400_names_the_field(bay: Bay, sales: Sales) -> None:
    path = sales.write()
    path.write_text(path.read_text().replace('"customer": {', '"no_such_table": {'))

    result = bay("services", "register", str(path))

    assert_clean_failure(result)
    assert result.stderr.startswith("Error: Invalid input: ")
    assert "tables.no_such_table: the database has no table 'no_such_table'" in result.stderr
    assert "request id: " in result.stderr
    assert str(sales.db) not in result.stderr
    assert_clean_failure(bay("services", "show", sales.name))  # nothing was registered


def test_a_secret_not_allowed_for_the_service_says_how_to_allow_it(bay: Bay, sales: Sales) -> None:
    assert (
        bay("secrets", "allow", sales.secret, f"service:{sales.name}", "--remove").returncode == 0
    )

    result = bay("services", "register", str(sales.write()))

    assert_clean_failure(result)
    assert f"bay secrets allow {sales.secret} service:{sales.name}" in result.stderr


def test_delete_then_show_and_delete_again_are_not_found(
    bay: Bay, server: Any, sales: Sales
) -> None:
    assert bay("services", "register", str(sales.write())).returncode == 0

    deleted = bay("services", "delete", sales.name)
    shown = bay("services", "show", sales.name)
    again = bay("services", "delete", sales.name)

    assert deleted.returncode == 0, deleted.stderr
    assert f"Deleted service {sales.name}." in deleted.stdout
    for result in (shown, again):
        assert_clean_failure(result)
        assert "Error: Not Found" in result.stderr
    listed = json.loads(bay("services", "list", "--json").stdout)
    assert sales.name not in {item["name"] for item in listed}
    with server.admin() as admin:
        assert admin.get(f"/{sales.name}/customer").status_code == 404


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (None, "no service.json in"),
        ('["not", "an", "object"]', "a service document is a JSON object, not an array"),
        ('{"name": "a", "name": "b"}', "the key 'name' appears twice in one object"),
        ("# nothing but a comment\n", "no JSON value: the text is empty or only comments"),
    ],
)
def test_a_folder_or_file_that_holds_no_document_is_refused(
    bay: Bay, tmp_path: Path, content: str | None, complaint: str
) -> None:
    if content is not None:
        (tmp_path / "service.json").write_text(content)

    result = bay("services", "register", str(tmp_path))

    assert_clean_failure(result)
    assert complaint in result.stderr


def test_a_missing_path_is_refused(bay: Bay, tmp_path: Path) -> None:
    result = bay("services", "register", str(tmp_path / "nowhere.json"))

    assert_clean_failure(result)
    assert "does not exist" in result.stderr


def test_a_member_may_list_but_not_register_or_delete(bay: Bay, server: Any, sales: Sales) -> None:
    assert bay("services", "register", str(sales.write())).returncode == 0
    _, key = server.new_user()
    member = bay.as_(key)

    listed = member("services", "list", "--json")
    registered = member("services", "register", str(sales.folder))
    deleted = member("services", "delete", sales.name)

    assert sales.name in {item["name"] for item in json.loads(listed.stdout)}
    for result in (registered, deleted):
        assert_clean_failure(result)
        assert "Error: Forbidden" in result.stderr
    assert json.loads(bay("services", "show", sales.name, "--json").stdout)["version"] == 1
