"""Authentication: a key in any of three places, and a 401 that says why for every refusal.

Every refusal is `401` with `WWW-Authenticate: Bearer` and a problem+json body whose
`detail` names the reason, and nothing in it repeats the key that was offered.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.gateway.gateway_support import (
    assert_unauthorized,
    unique_email,
    wait_for,
    well_formed_unknown_key,
)

if TYPE_CHECKING:
    from tests.conftest import Server

PLACES = ("bearer", "x-api-key", "query")


def get_me(server: Server, key: str, place: str = "bearer") -> httpx.Response:
    """`GET /api/v1/me` with the key passed the given way."""
    headers, params = {}, {}
    if place == "bearer":
        headers["Authorization"] = f"Bearer {key}"
    elif place == "x-api-key":
        headers["X-API-Key"] = key
    else:
        params["api_key"] = key
    return httpx.get(f"{server.url}/api/v1/me", headers=headers, params=params, timeout=30)


def assert_refused(response: httpx.Response, key: str, because: str) -> None:
    assert_unauthorized(response, because)
    assert key not in response.text
    assert all(key not in value for value in response.headers.values())


@pytest.mark.parametrize("place", PLACES)
def test_a_key_is_accepted_in_each_of_the_three_places(server: Server, place: str) -> None:
    email, key = server.new_user()

    answer = get_me(server, key, place)

    assert answer.status_code == 200, answer.text
    assert answer.json()["email"] == email
    assert key.startswith(answer.json()["key"]["prefix"])


def test_a_request_without_a_key_is_refused_with_401(server: Server) -> None:
    answer = httpx.get(f"{server.url}/api/v1/me")

    assert_unauthorized(answer, "an API key is required")


def test_an_authorization_header_of_another_scheme_is_no_key(server: Server) -> None:
    _, key = server.new_user()

    answer = httpx.get(f"{server.url}/api/v1/me", headers={"Authorization": f"Basic {key}"})

    assert_refused(answer, key, "an API key is required")


@pytest.mark.parametrize(
    "malformed",
    [
        "hunter2",
        "bay_Q",
        "bay_tooShort",
        "bay_" + "!" * 43,
        "xyz_" + "A" * 43,
        "bay_" + "A" * 44,
    ],
)
def test_a_malformed_key_is_refused_with_401(server: Server, malformed: str) -> None:
    answer = get_me(server, malformed)

    assert_refused(answer, malformed, "malformed")


@pytest.mark.parametrize("place", PLACES)
def test_an_unknown_key_is_refused_with_401(server: Server, place: str) -> None:
    unknown = well_formed_unknown_key()

    answer = get_me(server, unknown, place)

    assert_refused(answer, unknown, "not known")


def test_a_revoked_key_is_refused_with_401(server: Server, admin: httpx.Client) -> None:
    email, key = server.new_user()
    assert get_me(server, key).status_code == 200
    key_id = admin.get("/api/v1/keys", params={"user": email}).json()["data"][0]["id"]

    assert admin.delete(f"/api/v1/keys/{key_id}").status_code == 204

    answer, _ = wait_for(lambda: get_me(server, key), lambda r: r.status_code == 401)
    assert_refused(answer, key, "revoked")


def test_an_expired_key_is_refused_with_401(server: Server, admin: httpx.Client) -> None:
    email, _ = server.new_user()
    created = admin.post("/api/v1/keys", json={"user": email, "expires_in_days": 1})
    assert created.status_code == 201, created.text
    key, key_id = created.json()["key"], created.json()["id"]
    assert created.json()["expires_at"] is not None
    assert get_me(server, key).status_code == 200

    with sqlite3.connect(server.home / "servicebay.db", timeout=30) as database:
        database.execute(
            "UPDATE api_keys SET expires_at = '2000-01-01 00:00:00.000000' WHERE id = ?",
            (key_id,),
        )

    answer, _ = wait_for(lambda: get_me(server, key), lambda r: r.status_code == 401)
    assert_refused(answer, key, "expired")


def test_the_key_of_a_disabled_user_is_refused_with_401_until_enabled(
    server: Server, admin: httpx.Client
) -> None:
    email, key = server.new_user()
    assert get_me(server, key).status_code == 200

    assert admin.patch(f"/api/v1/users/{email}", json={"disabled": True}).status_code == 200

    answer, _ = wait_for(lambda: get_me(server, key), lambda r: r.status_code == 401)
    assert_refused(answer, key, "disabled")
    assert admin.patch(f"/api/v1/users/{email}", json={"disabled": False}).status_code == 200
    back, _ = wait_for(lambda: get_me(server, key), lambda r: r.status_code == 200)
    assert back.json()["email"] == email


def test_a_key_passed_in_the_query_string_never_reaches_the_log_or_the_audit_trail(
    server: Server, admin: httpx.Client
) -> None:
    email, key = server.new_user()
    unknown = well_formed_unknown_key()
    with httpx.Client(base_url=server.url) as anonymous:
        assert anonymous.get("/api/v1/me", params={"api_key": key}).status_code == 200
        assert anonymous.get("/api/v1/keys", params={"api_key": key, "limit": 5}).status_code == 200
        assert anonymous.get("/api/v1/users", params={"api_key": key}).status_code == 403
        assert anonymous.get("/api/v1/nowhere", params={"api_key": key}).status_code == 404
        assert anonymous.get("/api/v1/me", params={"api_key": unknown}).status_code == 401
        created = anonymous.post(
            "/api/v1/users", params={"api_key": key}, json={"email": unique_email(), "name": "N"}
        )
        assert created.status_code == 403

    exported = admin.get("/api/v1/audit/export")
    assert exported.status_code == 200
    listed = admin.get("/api/v1/audit", params={"actor": email})
    for text in (server.log_text(), exported.text, listed.text):
        assert key not in text
        assert unknown not in text
    own = [event for event in listed.json()["data"] if event["method"] == "GET"]
    assert own, listed.text
    assert all("api_key=[REDACTED]" in event["path"] for event in own), own
