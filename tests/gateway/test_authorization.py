"""Authorization: grants to a user, a team or everyone; deny by default; globs; explanations.

No service is mounted in these tests, so decisions are read through
`GET /api/v1/permissions/check`, which asks the same authorizer the gateway asks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.gateway.gateway_support import assert_problem, unique_name

if TYPE_CHECKING:
    from tests.conftest import Server


def grant(admin: httpx.Client, principal: str, resource: str, actions: list[str]) -> str:
    created = admin.post(
        "/api/v1/grants", json={"principal": principal, "resource": resource, "actions": actions}
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def check(
    client: httpx.Client, resource: str, action: str, principal: str | None = None
) -> dict[str, Any]:
    params = {"resource": resource, "action": action}
    if principal:
        params["principal"] = principal
    answer = client.get("/api/v1/permissions/check", params=params)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def allowed(server: Server, key: str, resource: str, action: str = "invoke") -> bool:
    with server.client(key) as client:
        return bool(check(client, resource, action)["allowed"])


def test_everything_is_denied_by_default(server: Server, member: tuple[str, str]) -> None:
    email, key = member
    resource = f"service:{unique_name()}"

    with server.client(key) as client:
        decision = check(client, resource, "invoke")

    assert decision["allowed"] is False
    assert decision["grant"] is None
    assert "denied by default" in decision["reason"]
    assert decision["principal"] == f"user:{email}"


def test_a_grant_to_a_user_allows_that_user_and_nobody_else(
    server: Server, admin: httpx.Client
) -> None:
    (email, key), (_, other_key) = server.new_user(), server.new_user()
    resource = f"service:{unique_name()}"

    grant(admin, f"user:{email}", resource, ["invoke"])

    assert allowed(server, key, resource)
    assert not allowed(server, other_key, resource)


def test_a_grant_to_a_team_allows_its_members_and_nobody_else(
    server: Server, admin: httpx.Client
) -> None:
    team = unique_name("team")
    (_, insider), (_, outsider) = server.new_user(teams=[team, "other"]), server.new_user()
    resource = f"service:{unique_name()}"

    grant(admin, f"team:{team}", resource, ["invoke"])

    assert allowed(server, insider, resource)
    assert not allowed(server, outsider, resource)
    assert check(admin, resource, "invoke", f"team:{team}")["allowed"] is True


def test_a_grant_to_everyone_allows_every_active_user_but_no_disabled_one(
    server: Server, admin: httpx.Client
) -> None:
    (_, key), (disabled, _) = server.new_user(), server.new_user()
    resource = f"service:{unique_name()}"
    assert admin.patch(f"/api/v1/users/{disabled}", json={"disabled": True}).status_code == 200

    grant(admin, "*", resource, ["invoke"])

    assert allowed(server, key, resource)
    verdict = check(admin, resource, "invoke", f"user:{disabled}")
    assert verdict["allowed"] is False
    assert "disabled" in verdict["reason"]


def test_a_user_who_joins_a_team_gains_its_grants_at_once(
    server: Server, admin: httpx.Client
) -> None:
    team = unique_name("team")
    email, key = server.new_user()
    resource = f"service:{unique_name()}"
    grant(admin, f"team:{team}", resource, ["invoke"])
    assert not allowed(server, key, resource)

    assert admin.patch(f"/api/v1/users/{email}", json={"teams": [team]}).status_code == 200

    assert allowed(server, key, resource)


def test_a_deleted_grant_allows_nothing_any_more(server: Server, admin: httpx.Client) -> None:
    email, key = server.new_user()
    resource = f"service:{unique_name()}"
    grant_id = grant(admin, f"user:{email}", resource, ["invoke"])
    assert allowed(server, key, resource)

    assert admin.delete(f"/api/v1/grants/{grant_id}").status_code == 204

    assert not allowed(server, key, resource)
    assert_problem(admin.delete(f"/api/v1/grants/{grant_id}"), 404, grant_id)


@pytest.mark.parametrize(
    ("action", "expected"),
    [("invoke", True), ("read", True), ("create", True), ("update", True), ("delete", True),
     ("manage", False)],
)  # fmt: skip
def test_invoke_covers_every_table_action_but_not_manage(
    server: Server, admin: httpx.Client, action: str, expected: bool
) -> None:
    email, key = server.new_user()
    service = unique_name()
    grant(admin, f"user:{email}", f"service:{service}", ["invoke"])

    assert allowed(server, key, f"service:{service}/customer", action) is expected


@pytest.mark.parametrize(
    ("action", "expected"),
    [("read", True), ("create", False), ("update", False), ("delete", False), ("invoke", False)],
)
def test_a_table_action_allows_that_action_only(
    server: Server, admin: httpx.Client, action: str, expected: bool
) -> None:
    email, key = server.new_user()
    service = unique_name()
    grant(admin, f"user:{email}", f"service:{service}/customer", ["read"])

    assert allowed(server, key, f"service:{service}/customer", action) is expected


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        ("{s}/customer", True),
        ("{s}/cust_archive", True),
        ("{s}/orders", False),
        ("{s}/my_customer", False),
        ("{s}", False),
        ("{other}/customer", False),
    ],
)
def test_a_glob_resource_covers_the_matching_tables_only(
    server: Server, admin: httpx.Client, requested: str, expected: bool
) -> None:
    email, key = server.new_user()
    service, other = f"service:{unique_name()}", f"service:{unique_name()}"
    grant(admin, f"user:{email}", f"{service}/cust*", ["read"])

    resource = requested.format(s=service, other=other)

    assert allowed(server, key, resource, "read") is expected


def test_a_grant_on_a_service_covers_all_its_tables_and_endpoints(
    server: Server, admin: httpx.Client
) -> None:
    email, key = server.new_user()
    service = unique_name()
    grant(admin, f"user:{email}", f"service:{service}", ["read"])

    for part in ("customer", "orders", "queries/daily_active_users"):
        assert allowed(server, key, f"service:{service}/{part}", "read"), part
    assert not allowed(server, key, f"service:{unique_name()}/customer", "read")


@pytest.mark.parametrize("kind", ["webhook", "app", "deployment"])
def test_grants_on_webhooks_apps_and_deployments_are_decided_the_same_way(
    server: Server, admin: httpx.Client, kind: str
) -> None:
    email, key = server.new_user()
    resource = f"{kind}:{unique_name()}"
    action = "manage" if kind == "deployment" else "invoke"
    assert not allowed(server, key, resource, action)

    grant(admin, f"user:{email}", resource, [action])

    assert allowed(server, key, resource, action)


def test_an_admin_may_do_everything(server: Server, admin: httpx.Client) -> None:
    verdict = check(admin, f"deployment:{unique_name()}", "manage")

    assert verdict["allowed"] is True
    assert "admin" in verdict["reason"]


def test_the_check_names_the_grant_that_decided(server: Server, admin: httpx.Client) -> None:
    team = unique_name("team")
    email, key = server.new_user(teams=[team])
    resource = f"service:{unique_name()}"
    grant_id = grant(admin, f"team:{team}", resource, ["invoke"])

    with server.client(key) as client:
        verdict = check(client, f"{resource}/customer", "read")

    assert verdict["allowed"] is True
    assert verdict["grant"] == grant_id
    assert f"granted to team:{team} by {grant_id}" in verdict["reason"]
    assert verdict["principal"] == f"user:{email}"
    assert check(admin, f"{resource}/customer", "read", f"user:{email}")["grant"] == grant_id


def test_a_member_may_check_their_own_permissions_only(
    server: Server, member: tuple[str, str]
) -> None:
    email, key = member
    resource = f"service:{unique_name()}"

    with server.client(key) as client:
        own = client.get(
            "/api/v1/permissions/check",
            params={"resource": resource, "action": "read", "principal": f"user:{email}"},
        )
        other = client.get(
            "/api/v1/permissions/check",
            params={"resource": resource, "action": "read", "principal": "team:marketing"},
        )

    assert own.status_code == 200, own.text
    assert_problem(other, 403, "admin rights are required to check other principals'")


def test_a_member_lists_only_the_grants_that_apply_to_them(
    server: Server, admin: httpx.Client
) -> None:
    team = unique_name("team")
    email, key = server.new_user(teams=[team])
    stranger, _ = server.new_user()
    resource = f"service:{unique_name()}"
    theirs = {
        grant(admin, f"user:{email}", resource, ["read"]),
        grant(admin, f"team:{team}", resource, ["create"]),
        grant(admin, "*", resource, ["update"]),
    }
    others = {
        grant(admin, f"user:{stranger}", resource, ["delete"]),
        grant(admin, f"team:{unique_name('team')}", resource, ["invoke"]),
    }

    with server.client(key) as client:
        seen = client.get("/api/v1/grants", params={"resource": resource})
        asked_for_a_stranger = client.get(
            "/api/v1/grants", params={"resource": resource, "principal": f"user:{stranger}"}
        )

    assert seen.status_code == 200, seen.text
    assert {item["id"] for item in seen.json()["data"]} == theirs
    assert asked_for_a_stranger.json()["data"] == []
    every = admin.get("/api/v1/grants", params={"resource": resource}).json()["data"]
    assert {item["id"] for item in every} == theirs | others


def test_a_member_sees_their_own_user_and_no_other(server: Server, member: tuple[str, str]) -> None:
    email, key = member

    with server.client(key) as client:
        own = client.get(f"/api/v1/users/{email}")
        other = client.get(f"/api/v1/users/{server.admin_email}")

    assert own.status_code == 200, own.text
    assert own.json()["email"] == email
    assert_problem(other, 403, "admin rights are required to see other users")


def test_a_member_lists_only_their_own_keys(server: Server, member: tuple[str, str]) -> None:
    email, key = member

    with server.client(key) as client:
        own = client.get("/api/v1/keys")
        other = client.get("/api/v1/keys", params={"user": server.admin_email})

    assert own.status_code == 200, own.text
    assert {item["user"] for item in own.json()["data"]} == {email}
    assert_problem(other, 403, "admin rights are required to list other users' keys")


def test_a_member_creates_keys_for_themselves_only(server: Server, member: tuple[str, str]) -> None:
    email, key = member

    with server.client(key) as client:
        own = client.post("/api/v1/keys", json={"name": "laptop"})
        other = client.post("/api/v1/keys", json={"user": server.admin_email, "name": "x"})

    assert own.status_code == 201, own.text
    assert own.json()["user"] == email
    assert_problem(other, 403, "admin rights are required to create keys for other users")


def test_a_member_cannot_revoke_another_users_key_nor_learn_that_it_exists(
    server: Server, member: tuple[str, str]
) -> None:
    _, key = member
    _, victim_key = server.new_user()
    with server.client(victim_key) as victim:
        victim_key_id = victim.get("/api/v1/me").json()["key"]["id"]

    with server.client(key) as client:
        real = client.delete(f"/api/v1/keys/{victim_key_id}")
        made_up = client.delete("/api/v1/keys/key_0000000000000000")

    assert_problem(real, 404, "no key with id")
    assert_problem(made_up, 404, "no key with id")
    with server.client(victim_key) as victim:
        assert victim.get("/api/v1/me").status_code == 200


def test_grants_page_through_next(admin: httpx.Client) -> None:
    resource = f"service:{unique_name()}"
    created = sorted(
        grant(admin, f"team:{unique_name('team')}", resource, ["read"]) for _ in range(3)
    )

    first = admin.get("/api/v1/grants", params={"resource": resource, "limit": 2}).json()
    second = admin.get(
        "/api/v1/grants", params={"resource": resource, "limit": 2, "cursor": first["next"]}
    ).json()

    assert [item["id"] for item in first["data"] + second["data"]] == created
    assert second["next"] is None
