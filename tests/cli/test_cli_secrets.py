"""`bay secrets`: values come in through stdin only and never come out."""

from __future__ import annotations

import json
import secrets
import subprocess
from typing import Any

from tests.cli.cli_support import Bay, assert_clean_failure


def _name() -> str:
    return f"CLI_SECRET_{secrets.token_hex(4).upper()}"


def _assert_never_shown(value: str, *results: subprocess.CompletedProcess[str]) -> None:
    for result in results:
        assert value not in result.stdout + result.stderr, result.args


def test_set_reads_the_value_from_stdin_and_never_prints_it(bay: Bay) -> None:
    name, value = _name(), f"s3cr3t-{secrets.token_hex(8)}"

    stored = bay("secrets", "set", name, "--allow", "service:salesforce", input=value)

    assert stored.returncode == 0, stored.stderr
    assert f"Stored secret {name}." in stored.stdout
    assert "service:salesforce" in stored.stdout
    as_json = bay("secrets", "set", name, "--json", input=value + "\n")
    assert as_json.returncode == 0, as_json.stderr
    metadata = json.loads(as_json.stdout)
    assert metadata["name"] == name
    assert metadata["allow"] == ["service:salesforce"]  # kept: no --allow given
    assert "value" not in metadata
    listed = bay("secrets", "list")
    listed_json = bay("secrets", "list", "--json")
    assert name in listed.stdout
    assert name in {s["name"] for s in json.loads(listed_json.stdout)}
    _assert_never_shown(value, stored, as_json, listed, listed_json)


def test_allow_adds_and_removes_resources(bay: Bay) -> None:
    name = _name()
    assert bay("secrets", "set", name, input="v").returncode == 0

    added = bay("secrets", "allow", name, "service:a", "service:b", "service:a", "--json")
    removed = bay("secrets", "allow", name, "service:a", "--remove")

    assert json.loads(added.stdout)["allow"] == ["service:a", "service:b"]
    assert removed.returncode == 0, removed.stderr
    assert f"Updated the allow-list of {name}." in removed.stdout
    after = {s["name"]: s for s in json.loads(bay("secrets", "list", "--json").stdout)}
    assert after[name]["allow"] == ["service:b"]


def test_delete_then_delete_again_is_not_found(bay: Bay) -> None:
    name = _name()
    assert bay("secrets", "set", name, input="v").returncode == 0

    deleted = bay("secrets", "delete", name)
    again = bay("secrets", "delete", name)

    assert deleted.returncode == 0, deleted.stderr
    assert f"Deleted secret {name}." in deleted.stdout
    assert_clean_failure(again)
    assert "Error: Not Found" in again.stderr


def test_an_empty_value_is_refused_before_any_request(bay: Bay) -> None:
    result = bay("secrets", "set", _name(), input="")

    assert_clean_failure(result)
    assert "empty" in result.stderr


def test_the_value_is_not_an_argument(bay: Bay) -> None:
    result = bay("secrets", "set", _name(), "the-value", input="v")

    assert result.returncode == 2
    assert "Got unexpected extra argument" in result.stderr


def test_a_member_may_not_set_secrets_and_the_value_is_not_echoed(bay: Bay, server: Any) -> None:
    _, key = server.new_user()
    value = f"s3cr3t-{secrets.token_hex(8)}"

    result = bay.as_(key)("secrets", "set", _name(), input=value)

    assert_clean_failure(result)
    assert "Error: Forbidden" in result.stderr
    _assert_never_shown(value, result)
