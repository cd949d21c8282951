"""Every error is RFC 9457 problem+json: type, title, status, detail, instance, request_id,
plus `errors` (where and why, never the rejected input) when the input was invalid."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.gateway.gateway_support import assert_problem, unique_email, unique_name

if TYPE_CHECKING:
    from tests.conftest import Server


def cursor_of(position: str) -> str:
    return base64.urlsafe_b64encode(position.encode()).decode().rstrip("=")


GRANT = {"principal": "team:marketing", "resource": "service:crm", "actions": ["read"]}
JSON = {"content-type": "application/json"}

# (id, method, path, request options, the first `loc` of `errors`)
INVALID: list[tuple[str, str, str, dict[str, Any], list[Any]]] = [
    ("bad JSON", "POST", "/api/v1/users", {"content": b'{"email": ', "headers": JSON}, ["body"]),
    ("not JSON at all", "POST", "/api/v1/users", {"content": b"\xff\xfe", "headers": JSON},
     ["body"]),
    ("no body", "POST", "/api/v1/users", {}, ["body"]),
    ("array for object", "POST", "/api/v1/users", {"json": [1]}, ["body"]),
    ("wrong type", "POST", "/api/v1/users", {"json": {"email": 5, "name": "N"}},
     ["body", "email"]),
    ("wrong item type", "POST", "/api/v1/users",
     {"json": {"email": "a@b", "name": "N", "teams": [1]}}, ["body", "teams", 0]),
    ("missing field", "POST", "/api/v1/grants", {"json": {"principal": "*", "actions": ["read"]}},
     ["body", "resource"]),
    ("unknown field", "POST", "/api/v1/grants", {"json": {**GRANT, "expires": "never"}},
     ["body", "expires"]),
    ("invalid principal", "POST", "/api/v1/grants", {"json": {**GRANT, "principal": "group:x"}},
     ["body", "principal"]),
    ("invalid resource", "POST", "/api/v1/grants", {"json": {**GRANT, "resource": "db:crm"}},
     ["body", "resource"]),
    ("invalid action", "POST", "/api/v1/grants", {"json": {**GRANT, "actions": ["fly"]}},
     ["body", "actions"]),
    ("no action", "POST", "/api/v1/grants", {"json": {**GRANT, "actions": []}},
     ["body", "actions"]),
    ("check action", "GET", "/api/v1/permissions/check",
     {"params": {"resource": "service:crm", "action": "fly"}}, ["query", "action"]),
    ("check without action", "GET", "/api/v1/permissions/check",
     {"params": {"resource": "service:crm"}}, ["query", "action"]),
    ("unprintable cursor", "GET", "/api/v1/users", {"params": {"cursor": "%%%"}},
     ["query", "cursor"]),
    ("foreign cursor", "GET", "/api/v1/audit", {"params": {"cursor": cursor_of("abc")}},
     ["query", "cursor"]),
    ("huge cursor", "GET", "/api/v1/audit", {"params": {"cursor": cursor_of("9" * 30)}},
     ["query", "cursor"]),
    ("grants cursor", "GET", "/api/v1/grants", {"params": {"cursor": cursor_of("\x00")}},
     ["query", "cursor"]),
    ("keys cursor", "GET", "/api/v1/keys", {"params": {"cursor": "not base64!"}},
     ["query", "cursor"]),
    ("limit zero", "GET", "/api/v1/users", {"params": {"limit": 0}}, ["query", "limit"]),
    ("limit too big", "GET", "/api/v1/keys", {"params": {"limit": 501}}, ["query", "limit"]),
    ("limit not a number", "GET", "/api/v1/audit", {"params": {"limit": "ten"}},
     ["query", "limit"]),
    ("bad boolean", "GET", "/api/v1/users", {"params": {"include_disabled": "maybe"}},
     ["query", "include_disabled"]),
    ("bad outcome", "GET", "/api/v1/audit", {"params": {"outcome": "perhaps"}},
     ["query", "outcome"]),
    ("bad since", "GET", "/api/v1/audit", {"params": {"since": "last tuesday"}},
     ["query", "since"]),
    ("since out of range", "GET", "/api/v1/audit",
     {"params": {"since": "0001-01-01T00:00:00+14:00"}}, ["query", "since"]),
    ("path too long", "GET", "/api/v1/users/" + "a" * 400, {}, ["path", "email"]),
    ("secret name", "PUT", "/api/v1/secrets/lower", {"json": {"value": "v"}}, ["path", "name"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "options", "loc"),
    [case[1:] for case in INVALID],
    ids=[case[0] for case in INVALID],
)
def test_invalid_input_is_a_400_that_says_where_and_why(
    admin: httpx.Client, method: str, path: str, options: dict[str, Any], loc: list[Any]
) -> None:
    answer = admin.request(method, path, **options)

    problem = assert_problem(answer, 400)
    errors = problem["errors"]
    assert errors, problem
    assert all(set(error) == {"loc", "msg", "type"} for error in errors), errors
    assert errors[0]["loc"][: len(loc)] == loc, errors
    assert all(error["msg"] for error in errors)


@pytest.mark.parametrize(
    ("path", "params", "loc"),
    [
        ("/api/v1/grants", {"principal": "group:x"}, ["query", "principal"]),
        ("/api/v1/permissions/check", {"resource": "db:crm", "action": "read"},
         ["query", "resource"]),
    ],
)  # fmt: skip
def test_an_invalid_query_parameter_is_located_in_the_query(
    admin: httpx.Client, path: str, params: dict[str, str], loc: list[str]
) -> None:
    problem = assert_problem(admin.get(path, params=params), 400)

    assert problem["errors"][0]["loc"] == loc


def test_a_missing_key_is_a_401_problem(server: Server) -> None:
    answer = httpx.get(f"{server.url}/api/v1/grants")

    assert_problem(answer, 401, "API key is required")
    assert answer.headers["www-authenticate"].startswith("Bearer")


def test_a_missing_right_is_a_403_problem(server: Server, member: tuple[str, str]) -> None:
    with server.client(member[1]) as client:
        assert_problem(client.get("/api/v1/audit/verify"), 403, "admin rights are required")


@pytest.mark.parametrize(
    ("method", "path", "mentions"),
    [
        ("GET", "/api/v1/nowhere", "nothing is served at /api/v1/nowhere"),
        ("GET", "/no/such/service", "nothing is served at /no/such/service"),
        ("GET", "/api/v1/users/nobody@example.com", "nobody@example.com"),
        ("PATCH", "/api/v1/users/nobody@example.com", "nobody@example.com"),
        ("DELETE", "/api/v1/keys/key_0000000000000000", "key_0000000000000000"),
        ("DELETE", "/api/v1/grants/grt_0000000000000000", "grt_0000000000000000"),
        ("GET", "/api/v1/secrets/NO_SUCH_SECRET", "NO_SUCH_SECRET"),
        ("DELETE", "/api/v1/secrets/NO_SUCH_SECRET", "NO_SUCH_SECRET"),
        ("POST", "/api/v1/keys", "nobody@example.com"),
        ("GET", "/api/v1/permissions/check", "nobody@example.com"),
    ],
)
def test_an_unknown_route_or_thing_is_a_404_problem(
    admin: httpx.Client, method: str, path: str, mentions: str
) -> None:
    options: dict[str, Any] = {
        "PATCH": {"json": {"name": "N"}},
        "POST": {"json": {"user": "nobody@example.com"}},
    }.get(method, {})
    if path.endswith("/check"):
        options["params"] = {
            "principal": "user:nobody@example.com", "resource": "service:crm", "action": "read",
        }  # fmt: skip

    assert_problem(admin.request(method, path, **options), 404, mentions)


def test_an_unknown_route_is_a_404_even_without_a_key(server: Server) -> None:
    assert_problem(httpx.get(f"{server.url}/nowhere"), 404, "nothing is served at /nowhere")


@pytest.mark.parametrize(
    ("method", "path"),
    [("DELETE", "/api/v1/me"), ("PUT", "/api/v1/users"), ("POST", "/healthz"),
     ("GET", "/api/v1/keys/key_0000000000000000"), ("PATCH", "/api/v1/grants/grt_x")],
)  # fmt: skip
def test_a_method_the_route_does_not_take_is_a_405_problem(
    admin: httpx.Client, method: str, path: str
) -> None:
    answer = admin.request(method, path)

    assert_problem(answer, 405, f"{method} is not allowed on {path}")
    assert answer.headers["allow"]


def test_a_duplicate_user_is_a_409_problem(admin: httpx.Client) -> None:
    email = unique_email()
    assert admin.post("/api/v1/users", json={"email": email, "name": "N"}).status_code == 201

    assert_problem(admin.post("/api/v1/users", json={"email": email, "name": "N"}), 409, email)


def test_disabling_yourself_is_a_409_problem(server: Server, admin: httpx.Client) -> None:
    answer = admin.patch(f"/api/v1/users/{server.admin_email}", json={"disabled": True})

    assert_problem(answer, 409, "you may not disable yourself")


def test_a_problem_carries_the_request_id_the_caller_sent(admin: httpx.Client) -> None:
    mine = f"trace-{unique_name()}"

    answer = admin.get("/api/v1/nowhere", headers={"X-Request-ID": mine})

    assert assert_problem(answer, 404)["request_id"] == mine


def test_the_problem_schema_is_documented_for_authenticated_routes(server: Server) -> None:
    schema = httpx.get(f"{server.url}/openapi.json").json()

    assert "Problem" in schema["components"]["schemas"]
    users = schema["paths"]["/api/v1/users"]["post"]["responses"]
    assert {"400", "401", "403"} <= set(users)
    assert "application/problem+json" in users["401"]["content"]
    assert "422" not in users
