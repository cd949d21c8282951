"""`bay users`, `bay keys`, `bay grant`/`revoke` and `bay permissions` against a live server."""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from tests.cli.cli_support import Bay, assert_clean_failure, unique_email


def test_users_add_prints_the_user_and_list_shows_it(bay: Bay) -> None:
    email = unique_email()
    team = f"team_{secrets.token_hex(3)}"

    added = bay("users", "add", email, "--name", "Ann Analyst", "--team", team, "--team", "ops")

    assert added.returncode == 0, added.stderr
    assert f"Added user {email}." in added.stdout
    assert "Ann Analyst" in added.stdout
    listed = bay("users", "list", "--team", team)
    assert listed.returncode == 0, listed.stderr
    assert email in listed.stdout
    assert f"ops, {team}" in listed.stdout  # the API keeps teams sorted


def test_users_json_is_the_apis_json(bay: Bay, admin: Any) -> None:
    email = unique_email()
    team = f"team_{secrets.token_hex(3)}"

    added = bay("users", "add", email, "--name", "Bo", "--team", team, "--admin", "--json")

    assert added.returncode == 0, added.stderr
    user = json.loads(added.stdout)
    assert user == admin.get(f"/api/v1/users/{email}").json()
    assert user["admin"] is True
    assert user["teams"] == [team]
    listed = json.loads(bay("users", "list", "--team", team, "--json").stdout)
    assert listed == [user]


def test_disable_hides_a_user_until_enabled_and_stops_their_key(bay: Bay, server: Any) -> None:
    email, key = server.new_user()
    team_list = ("users", "list", "--json")

    disabled = bay("users", "disable", email)

    assert disabled.returncode == 0, disabled.stderr
    assert f"Disabled user {email}." in disabled.stdout
    assert email not in {u["email"] for u in json.loads(bay(*team_list).stdout)}
    every = json.loads(bay(*team_list, "--all").stdout)
    assert next(u for u in every if u["email"] == email)["disabled"] is True
    assert_clean_failure(bay.as_(key)("whoami"))

    enabled = bay("users", "enable", email, "--json")
    assert enabled.returncode == 0, enabled.stderr
    assert json.loads(enabled.stdout)["disabled"] is False


def test_duplicate_user_is_a_clean_conflict(bay: Bay) -> None:
    email = unique_email()
    assert bay("users", "add", email, "--name", "First").returncode == 0

    again = bay("users", "add", email, "--name", "Second")

    assert_clean_failure(again)
    assert "Error: Conflict:" in again.stderr
    assert email in again.stderr
    assert "request id: " in again.stderr
    assert again.stdout == ""


def test_invalid_input_lists_the_field_errors(bay: Bay) -> None:
    result = bay("users", "add", "not-an-email", "--name", "X")

    assert_clean_failure(result)
    assert "\n  email: " in result.stderr


def test_a_member_gets_a_clean_forbidden(bay: Bay, server: Any) -> None:
    _, key = server.new_user()

    result = bay.as_(key)("users", "add", unique_email(), "--name", "Nope")

    assert_clean_failure(result)
    assert "Error: Forbidden: " in result.stderr
    assert "request id: " in result.stderr


def test_keys_create_shows_the_key_once_and_it_works(bay: Bay, server: Any) -> None:
    email, _ = server.new_user()

    created = bay("keys", "create", "--user", email, "--name", "laptop")

    assert created.returncode == 0, created.stderr
    assert "not shown again" in created.stdout
    key = next(word for word in created.stdout.split() if word.startswith("bay_"))
    whoami = bay.as_(key)("whoami", "--json")
    assert json.loads(whoami.stdout)["email"] == email
    listed = bay("keys", "list", "--user", email)
    assert "laptop" in listed.stdout
    assert key not in listed.stdout


def test_keys_json_and_revoke(bay: Bay, server: Any) -> None:
    email, _ = server.new_user()
    created = json.loads(
        bay("keys", "create", "--user", email, "--expires-in-days", "3", "--json").stdout
    )
    assert created["key"].startswith("bay_")
    assert created["expires_at"]

    revoked = bay("keys", "revoke", created["id"])

    assert revoked.returncode == 0, revoked.stderr
    assert f"Revoked key {created['id']}." in revoked.stdout
    assert_clean_failure(bay.as_(created["key"])("whoami"))
    active = json.loads(bay("keys", "list", "--user", email, "--json").stdout)
    assert created["id"] not in {k["id"] for k in active}
    every = bay("keys", "list", "--user", email, "--all")
    assert created["id"] in every.stdout
    assert "revoked" in every.stdout


def test_a_member_creates_and_lists_their_own_keys(bay: Bay, server: Any) -> None:
    email, key = server.new_user()
    member = bay.as_(key)

    created = json.loads(member("keys", "create", "--name", "second", "--json").stdout)

    assert created["user"] == email
    assert {k["name"] for k in json.loads(member("keys", "list", "--json").stdout)} == {
        "test",
        "second",
    }


def test_grant_check_and_revoke_by_id(bay: Bay, server: Any) -> None:
    team = f"team_{secrets.token_hex(3)}"
    email, _ = server.new_user(teams=[team])
    service = f"service:svc_{secrets.token_hex(3)}"

    granted = bay("grant", f"team:{team}", service, "invoke")

    assert granted.returncode == 0, granted.stderr
    grant_id = re.findall(r"grt_[0-9a-f]+", granted.stdout)[0]
    allowed = bay("permissions", "check", email, service, "invoke")
    assert allowed.returncode == 0, allowed.stderr
    assert f"allowed: user:{email} may invoke {service}" in allowed.stdout
    assert grant_id in allowed.stdout
    listed = bay("permissions", "list", "--resource", service)
    assert grant_id in listed.stdout

    revoked = bay("revoke", grant_id)

    assert revoked.returncode == 0, revoked.stderr
    denied = bay("permissions", "check", f"user:{email}", service, "invoke")
    assert denied.returncode == 1
    assert f"denied: user:{email} may not invoke {service}" in denied.stdout


def test_check_json_keeps_the_exit_code(bay: Bay, server: Any) -> None:
    email, _ = server.new_user()
    service = f"service:svc_{secrets.token_hex(3)}"
    granted = json.loads(bay("grant", email, service, "read,create", "--json").stdout)
    assert granted["principal"] == f"user:{email}"
    assert sorted(granted["actions"]) == ["create", "read"]

    yes = bay("permissions", "check", email, service, "read", "--json")
    no = bay("permissions", "check", email, service, "delete", "--json")

    assert yes.returncode == 0
    assert json.loads(yes.stdout)["grant"] == granted["id"]
    assert no.returncode == 1
    assert json.loads(no.stdout)["allowed"] is False


def test_revoke_by_principal_and_resource_says_how_many(bay: Bay) -> None:
    principal = f"team:t_{secrets.token_hex(3)}"
    resource = f"service:svc_{secrets.token_hex(3)}"
    for action in ("read", "create"):
        assert bay("grant", principal, resource, action).returncode == 0
    bay("grant", principal, f"{resource}/other", "read")

    revoked = bay("revoke", principal, resource)

    assert revoked.returncode == 0, revoked.stderr
    assert f"Revoked 2 grants of {principal} on {resource}" in revoked.stdout
    left = json.loads(bay("permissions", "list", "--principal", principal, "--json").stdout)
    assert [g["resource"] for g in left] == [f"{resource}/other"]
    none = bay("revoke", principal, resource)
    assert_clean_failure(none, code=1)


def test_revoke_of_an_unknown_grant_is_a_clean_not_found(bay: Bay) -> None:
    result = bay("revoke", "grt_doesnotexist")

    assert_clean_failure(result)
    assert "Error: Not Found" in result.stderr


def test_revoke_with_three_arguments_is_a_usage_error(bay: Bay) -> None:
    result = bay("revoke", "a", "b", "c")

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
