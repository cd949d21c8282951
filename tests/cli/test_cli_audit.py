"""`bay audit`: list with filters, export as JSON lines, verify the chain."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.cli.cli_support import Bay, assert_clean_failure


def test_plain_audit_lists_newest_first_up_to_the_limit(bay: Bay, server: Any) -> None:
    server.new_user()  # at least a few events exist

    listed = bay("audit", "--limit", "3", "--json")
    table = bay("audit", "--actor", server.admin_email, "--limit", "5")

    assert listed.returncode == 0, listed.stderr
    events = json.loads(listed.stdout)
    assert len(events) == 3
    assert [e["seq"] for e in events] == sorted((e["seq"] for e in events), reverse=True)
    assert table.returncode == 0, table.stderr
    assert server.admin_email in table.stdout
    assert "actor" in table.stdout


def test_limit_follows_the_next_cursor(bay: Bay, server: Any) -> None:
    with server.admin() as client:  # more events than one page (500) holds
        for _ in range(520):
            assert client.get("/api/v1/me").status_code == 200

    events = json.loads(bay("audit", "--limit", "510", "--json").stdout)

    assert len(events) == 510
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs), reverse=True)


def test_outcome_filter_finds_a_denial(bay: Bay, server: Any) -> None:
    email, key = server.new_user()
    assert bay.as_(key)("users", "list").returncode == 2  # a denied request, audited

    denied = json.loads(
        bay("audit", "--actor", email, "--outcome", "denied", "--since", "10m", "--json").stdout
    )

    assert denied
    assert {e["outcome"] for e in denied} == {"denied"}
    assert {e["actor"] for e in denied} == {email}


def test_a_bad_outcome_is_a_usage_error(bay: Bay) -> None:
    result = bay("audit", "--outcome", "maybe")

    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_export_writes_json_lines_oldest_first(bay: Bay, server: Any, tmp_path: Path) -> None:
    email, _ = server.new_user()
    target = tmp_path / "audit.jsonl"

    to_file = bay("audit", "export", "--since", "1h", "-o", str(target))
    to_stdout = bay("audit", "export", "--resource", f"user:{email}")

    assert to_file.returncode == 0, to_file.stderr
    lines = target.read_text().splitlines()
    assert f"Wrote {len(lines)} events to {target}." in to_file.stdout
    seqs = [json.loads(line)["seq"] for line in lines]
    assert seqs == sorted(seqs)
    assert to_stdout.returncode == 0, to_stdout.stderr
    mine = [json.loads(line) for line in to_stdout.stdout.splitlines()]
    assert mine
    assert {e["resource"] for e in mine} == {f"user:{email}"}


def test_export_is_for_admins(bay: Bay, server: Any, tmp_path: Path) -> None:
    _, key = server.new_user()
    target = tmp_path / "nope.jsonl"

    result = bay.as_(key)("audit", "export", "-o", str(target))

    assert_clean_failure(result)
    assert "Error: Forbidden" in result.stderr
    assert not target.exists()


def test_verify_says_the_chain_is_intact(bay: Bay) -> None:
    human = bay("audit", "verify")
    machine = bay("audit", "verify", "--json")

    assert human.returncode == 0, human.stderr
    assert "The audit chain is intact" in human.stdout
    assert machine.returncode == 0
    assert json.loads(machine.stdout)["ok"] is True


def test_list_options_before_a_subcommand_are_refused(bay: Bay) -> None:
    result = bay("audit", "--actor", "x@example.com", "export")

    assert_clean_failure(result)
    assert "bay audit export --" in result.stderr
