"""Users and API keys through `/api/v1/users`, `/api/v1/keys` and `/api/v1/me`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.gateway.gateway_support import (
    assert_problem,
    assert_unauthorized,
    unique_email,
    unique_name,
)

if TYPE_CHECKING:
    from tests.conftest import Server

USER_FIELDS = {"id", "email", "name", "teams", "admin", "disabled", "created_at"}
KEY_FIELDS = {"id", "user", "name", "prefix", "created_at", "expires_at", "last_used_at",
              "revoked_at"}  # fmt: skip


def add_user(admin: httpx.Client, **fields: Any) -> dict[str, Any]:
    body = {"email": unique_email(), "name": "Ann Analyst", **fields}
    created = admin.post("/api/v1/users", json=body)
    assert created.status_code == 201, created.text
    return dict(created.json())


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_an_admin_adds_a_user_and_reads_it_back(admin: httpx.Client) -> None:
    email = unique_email("julius.randle")

    created = admin.post(
        "/api/v1/users",
        json={"email": f"  {email.upper()} ", "name": "Julius Randle",
              "teams": ["marketing", "data_science", "marketing"]},
    )  # fmt: skip

    assert created.status_code == 201, created.text
    user = created.json()
    assert set(user) == USER_FIELDS
    assert user["id"].startswith("usr_")
    assert user["email"] == email
    assert user["teams"] == ["data_science", "marketing"]
    assert user["admin"] is False
    assert user["disabled"] is False
    assert admin.get(f"/api/v1/users/{email.upper()}").json() == user


def test_a_second_user_with_the_same_email_is_a_409_conflict(admin: httpx.Client) -> None:
    user = add_user(admin)

    again = admin.post("/api/v1/users", json={"email": user["email"].upper(), "name": "Twin"})

    assert_problem(again, 409, user["email"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email", "name": "N"}, "email"),
        ({"email": "a@b", "name": ""}, "name"),
        ({"email": "a@b", "name": "N", "teams": ["Bad Team"]}, "teams"),
        ({"email": "a@b", "name": "N", "admin": "maybe"}, "admin"),
        ({"name": "N"}, "email"),
    ],
)
def test_an_invalid_user_is_a_400_naming_the_field(
    admin: httpx.Client, body: dict[str, Any], field: str
) -> None:
    answer = admin.post("/api/v1/users", json=body)

    problem = assert_problem(answer, 400)
    assert ["body", field] in [error["loc"][:2] for error in problem["errors"]]


def test_users_are_listed_by_team_and_disabled_ones_only_on_request(admin: httpx.Client) -> None:
    team = unique_name("team")
    active, gone = add_user(admin, teams=[team]), add_user(admin, teams=[team])
    add_user(admin, teams=[unique_name("team")])
    assert admin.patch(f"/api/v1/users/{gone['email']}", json={"disabled": True}).status_code == 200

    listed = admin.get("/api/v1/users", params={"team": team})
    everyone = admin.get("/api/v1/users", params={"team": team, "include_disabled": "true"})

    assert [user["email"] for user in listed.json()["data"]] == [active["email"]]
    assert [user["email"] for user in everyone.json()["data"]] == sorted(
        [active["email"], gone["email"]]
    )


def test_the_user_list_pages_with_next(admin: httpx.Client) -> None:
    team = unique_name("team")
    emails = sorted(add_user(admin, teams=[team])["email"] for _ in range(5))

    seen: list[str] = []
    params: dict[str, Any] = {"team": team, "limit": 2}
    for _ in range(5):
        page = admin.get("/api/v1/users", params=params)
        assert page.status_code == 200, page.text
        seen += [user["email"] for user in page.json()["data"]]
        if page.json()["next"] is None:
            break
        params["cursor"] = page.json()["next"]

    assert seen == emails


def test_an_admin_changes_a_users_name_teams_and_admin_flag(admin: httpx.Client) -> None:
    user = add_user(admin)

    changed = admin.patch(
        f"/api/v1/users/{user['email']}",
        json={"name": "Renamed", "teams": ["ops"], "admin": True},
    )

    assert changed.status_code == 200, changed.text
    assert changed.json() == {**user, "name": "Renamed", "teams": ["ops"], "admin": True}


@pytest.mark.parametrize("change", [{"disabled": True}, {"admin": False}])
def test_an_admin_may_not_disable_or_demote_themselves(
    server: Server, admin: httpx.Client, change: dict[str, bool]
) -> None:
    answer = admin.patch(f"/api/v1/users/{server.admin_email}", json=change)

    assert_problem(answer, 409, "you may not disable yourself")
    me = admin.get("/api/v1/me").json()
    assert me["admin"] is True
    assert me["disabled"] is False


def test_changing_an_unknown_user_is_a_404(admin: httpx.Client) -> None:
    nobody = unique_email("nobody")

    assert_problem(admin.patch(f"/api/v1/users/{nobody}", json={"name": "X"}), 404, nobody)
    assert_problem(admin.get(f"/api/v1/users/{nobody}"), 404, nobody)


def test_me_describes_the_caller_and_the_key_in_use(server: Server) -> None:
    team = unique_name("team")
    email, key = server.new_user(teams=[team])

    with server.client(key) as client:
        me = client.get("/api/v1/me")

    assert me.status_code == 200, me.text
    assert set(me.json()) == USER_FIELDS | {"key"}
    assert me.json()["email"] == email
    assert me.json()["teams"] == [team]
    assert set(me.json()["key"]) == KEY_FIELDS
    assert key.startswith(me.json()["key"]["prefix"])
    assert key not in me.text


def test_a_key_is_shown_once_when_created_and_never_again(
    server: Server, admin: httpx.Client
) -> None:
    email, _ = server.new_user()

    created = admin.post("/api/v1/keys", json={"user": email, "name": "laptop"})

    assert created.status_code == 201, created.text
    issued = created.json()
    assert set(issued) == KEY_FIELDS | {"key"}
    assert issued["key"].startswith("bay_")
    assert issued["key"].startswith(issued["prefix"])
    assert issued["user"] == email
    assert issued["name"] == "laptop"
    listed = admin.get("/api/v1/keys", params={"user": email})
    assert issued["id"] in {item["id"] for item in listed.json()["data"]}
    assert all(set(item) == KEY_FIELDS for item in listed.json()["data"])
    assert issued["key"] not in listed.text
    with server.client(issued["key"]) as client:
        me = client.get("/api/v1/me")
    assert me.json()["key"]["id"] == issued["id"]
    assert issued["key"] not in me.text


@pytest.mark.parametrize("days", [1, 30, 3650])
def test_a_key_expires_the_given_number_of_days_from_now(
    server: Server, member: tuple[str, str], days: int
) -> None:
    _, key = member

    with server.client(key) as client:
        created = client.post("/api/v1/keys", json={"expires_in_days": days})

    assert created.status_code == 201, created.text
    expires = parse_time(created.json()["expires_at"])
    expected = datetime.now(UTC) + timedelta(days=days)
    assert abs(expires - expected) < timedelta(minutes=5)


@pytest.mark.parametrize("days", [0, -1, 3651, "soon", 1.5])
def test_a_key_lifetime_outside_1_to_3650_days_is_a_400(
    member: tuple[str, str], server: Server, days: object
) -> None:
    _, key = member

    with server.client(key) as client:
        answer = client.post("/api/v1/keys", json={"expires_in_days": days})

    problem = assert_problem(answer, 400)
    assert problem["errors"][0]["loc"] == ["body", "expires_in_days"]


def test_a_disabled_user_gets_no_new_key(server: Server, admin: httpx.Client) -> None:
    email, _ = server.new_user()
    assert admin.patch(f"/api/v1/users/{email}", json={"disabled": True}).status_code == 200

    answer = admin.post("/api/v1/keys", json={"user": email})

    assert_problem(answer, 409, "disabled")


def test_a_key_for_an_unknown_user_is_a_404(admin: httpx.Client) -> None:
    nobody = unique_email("nobody")

    assert_problem(admin.post("/api/v1/keys", json={"user": nobody}), 404, nobody)


def test_a_member_revokes_their_own_key_and_it_stops_working(
    server: Server, member: tuple[str, str]
) -> None:
    _, key = member
    with server.client(key) as client:
        spare = client.post("/api/v1/keys", json={"name": "spare"}).json()

        assert client.delete(f"/api/v1/keys/{spare['id']}").status_code == 204

        listed = client.get("/api/v1/keys").json()["data"]
        with_revoked = client.get("/api/v1/keys", params={"include_revoked": "true"}).json()
    assert spare["id"] not in {item["id"] for item in listed}
    revoked = next(item for item in with_revoked["data"] if item["id"] == spare["id"])
    assert revoked["revoked_at"] is not None
    with server.client(spare["key"]) as spent:
        assert_unauthorized(spent.get("/api/v1/me"), "revoked")


def test_revoking_a_key_twice_is_harmless(server: Server, member: tuple[str, str]) -> None:
    _, key = member
    with server.client(key) as client:
        spare = client.post("/api/v1/keys", json={"name": "spare"}).json()

        first = client.delete(f"/api/v1/keys/{spare['id']}")
        second = client.delete(f"/api/v1/keys/{spare['id']}")

    assert (first.status_code, second.status_code) == (204, 204)


def test_an_unknown_key_id_is_a_404(admin: httpx.Client) -> None:
    assert_problem(admin.delete("/api/v1/keys/key_0000000000000000"), 404, "key_0000000000000000")


def test_last_used_at_tells_when_a_key_was_last_used(server: Server, admin: httpx.Client) -> None:
    email, key = server.new_user()
    unused = admin.get("/api/v1/keys", params={"user": email}).json()["data"][0]
    assert unused["last_used_at"] is None

    with server.client(key) as client:
        assert client.get("/api/v1/me").status_code == 200

    used = admin.get("/api/v1/keys", params={"user": email}).json()["data"][0]
    assert used["last_used_at"] is not None
