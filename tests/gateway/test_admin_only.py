"""Administration is for admins: a member gets 403 naming the right they lack, the refusal
is audited under their name, and nothing changes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.gateway.gateway_support import assert_problem, find_event, unique_email, unique_name

if TYPE_CHECKING:
    from tests.conftest import Server

# (method, path, body, the right the 403 names); {me}, {admin} and {secret} are filled in.
ADMIN_ONLY: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("POST", "/api/v1/users", {"email": "new@example.com", "name": "N"}, "add users"),
    ("GET", "/api/v1/users", None, "list users"),
    ("GET", "/api/v1/users/{admin}", None, "see other users"),
    ("PATCH", "/api/v1/users/{admin}", {"name": "Renamed"}, "change users"),
    ("PATCH", "/api/v1/users/{me}", {"admin": True}, "change users"),
    ("POST", "/api/v1/grants", {"principal": "*", "resource": "service:x", "actions": ["invoke"]},
     "grant permissions"),
    ("DELETE", "/api/v1/grants/grt_0000000000000000", None, "delete grants"),
    ("PUT", "/api/v1/secrets/{secret}", {"value": "overwritten"}, "set secrets"),
    ("PATCH", "/api/v1/secrets/{secret}", {"allow": ["service:mine"]}, "change secrets"),
    ("GET", "/api/v1/secrets", None, "list secrets"),
    ("GET", "/api/v1/secrets/{secret}", None, "see secrets"),
    ("DELETE", "/api/v1/secrets/{secret}", None, "delete secrets"),
    ("GET", "/api/v1/audit/export", None, "export the audit log"),
    ("GET", "/api/v1/audit/verify", None, "verify the audit log"),
]  # fmt: skip


@pytest.fixture
def secret(admin: httpx.Client) -> str:
    name = unique_name("ADMIN_ONLY").upper()
    put = admin.put(f"/api/v1/secrets/{name}", json={"value": "v", "allow": ["service:crm"]})
    assert put.status_code == 200, put.text
    return name


@pytest.mark.parametrize(
    ("method", "path", "body", "right"),
    ADMIN_ONLY,
    ids=[f"{method} {path}" for method, path, _, _ in ADMIN_ONLY],
)
def test_a_member_is_refused_with_403_naming_the_admin_right(
    server: Server,
    admin: httpx.Client,
    member: tuple[str, str],
    secret: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    right: str,
) -> None:
    email, key = member
    target = path.format(me=email, admin=server.admin_email, secret=secret)

    with server.client(key) as client:
        answer = client.request(method, target, json=body)

    problem = assert_problem(answer, 403, f"admin rights are required to {right}")
    event = find_event(admin, problem["request_id"], actor=email)
    assert event["outcome"] == "denied"
    assert event["status"] == 403
    assert event["detail"]["reason"] == problem["detail"]


def test_a_refused_change_changes_nothing(
    server: Server, admin: httpx.Client, member: tuple[str, str], secret: str
) -> None:
    email, key = member
    newcomer = unique_email()
    resource = f"service:{unique_name()}"

    with server.client(key) as client:
        client.post("/api/v1/users", json={"email": newcomer, "name": "N"})
        client.patch(f"/api/v1/users/{email}", json={"admin": True})
        client.post(
            "/api/v1/grants",
            json={"principal": f"user:{email}", "resource": resource, "actions": ["invoke"]},
        )
        client.patch(f"/api/v1/secrets/{secret}", json={"allow": ["service:mine"]})
        client.delete(f"/api/v1/secrets/{secret}")
        still_a_member = client.get("/api/v1/me").json()

    assert_problem(admin.get(f"/api/v1/users/{newcomer}"), 404)
    assert still_a_member["admin"] is False
    assert admin.get("/api/v1/grants", params={"resource": resource}).json()["data"] == []
    assert admin.get(f"/api/v1/secrets/{secret}").json()["allow"] == ["service:crm"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/users", None),
        ("GET", "/api/v1/secrets", None),
        ("GET", "/api/v1/audit/verify", None),
        ("POST", "/api/v1/grants",
         {"principal": "team:x", "resource": "service:x", "actions": ["read"]}),
    ],
)  # fmt: skip
def test_another_admin_may_do_what_a_member_may_not(
    server: Server, method: str, path: str, body: dict[str, Any] | None
) -> None:
    _, key = server.new_user(admin=True)

    with server.client(key) as client:
        answer = client.request(method, path, json=body)

    assert answer.status_code in (200, 201), answer.text
