"""The audit log over HTTP: every call allowed or denied is an event, filterable, pageable,
exportable as JSON lines, and its hash chain verifies."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.gateway.gateway_support import (
    assert_problem,
    find_event,
    unique_email,
    unique_name,
    well_formed_unknown_key,
)

if TYPE_CHECKING:
    from tests.conftest import Server

EVENT_FIELDS = {"seq", "ts", "request_id", "actor", "key_id", "action", "resource", "outcome",
                "status", "method", "path", "client", "detail", "prev_hash", "hash"}  # fmt: skip


def request_id() -> str:
    return f"test-{secrets.token_hex(8)}"


def events_of(admin: httpx.Client, **filters: Any) -> list[dict[str, Any]]:
    """Every event matching the filters, newest first, across all pages."""
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 500, **filters}
    while True:
        page = admin.get("/api/v1/audit", params=params)
        assert page.status_code == 200, page.text
        found += page.json()["data"]
        if page.json()["next"] is None:
            return found
        params["cursor"] = page.json()["next"]


def test_an_allowed_call_is_audited_with_actor_outcome_status_and_request_id(
    server: Server, admin: httpx.Client, member: tuple[str, str]
) -> None:
    email, key = member
    rid = request_id()

    with server.client(key) as client:
        me = client.get("/api/v1/me", headers={"X-Request-ID": rid})

    event = find_event(admin, rid, actor=email)
    assert set(event) == EVENT_FIELDS
    assert event["actor"] == email
    assert event["key_id"] == me.json()["key"]["id"]
    assert event["outcome"] == "allowed"
    assert event["status"] == 200
    assert (event["method"], event["path"]) == ("GET", "/api/v1/me")
    assert event["action"] == "GET /api/v1/me"
    assert event["client"] == "127.0.0.1"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-key"}, {"X-API-Key": well_formed_unknown_key()}],
    ids=["missing", "malformed", "unknown"],
)
def test_a_call_without_a_valid_key_is_audited_as_denied_with_no_actor_and_a_reason(
    server: Server, admin: httpx.Client, headers: dict[str, str]
) -> None:
    rid = request_id()

    answer = httpx.get(f"{server.url}/api/v1/keys", headers={**headers, "X-Request-ID": rid})

    problem = assert_problem(answer, 401)
    event = find_event(admin, rid, outcome="denied")
    assert event["actor"] is None
    assert event["key_id"] is None
    assert event["status"] == 401
    assert event["detail"]["reason"] == problem["detail"]
    assert (event["method"], event["path"]) == ("GET", "/api/v1/keys")


def test_a_forbidden_call_is_audited_as_denied_under_the_callers_name(
    server: Server, admin: httpx.Client, member: tuple[str, str]
) -> None:
    email, key = member
    rid = request_id()

    with server.client(key) as client:
        answer = client.get("/api/v1/users", headers={"X-Request-ID": rid})

    problem = assert_problem(answer, 403)
    event = find_event(admin, rid, actor=email)
    assert event["outcome"] == "denied"
    assert event["status"] == 403
    assert event["detail"]["reason"] == problem["detail"]


def test_an_administrative_change_names_its_action_and_resource(admin: httpx.Client) -> None:
    email, team = unique_email(), unique_name("team")
    resource = f"service:{unique_name()}"

    admin.post("/api/v1/users", json={"email": email, "name": "N", "teams": [team]})
    key = admin.post("/api/v1/keys", json={"user": email}).json()
    admin.patch(f"/api/v1/users/{email}", json={"name": "M"})
    admin.delete(f"/api/v1/keys/{key['id']}")
    grant = admin.post(
        "/api/v1/grants",
        json={"principal": f"user:{email}", "resource": resource, "actions": ["read"]},
    ).json()
    admin.delete(f"/api/v1/grants/{grant['id']}")

    on_user = events_of(admin, resource=f"user:{email}")
    assert [event["action"] for event in on_user] == [
        "key.revoke", "user.update", "key.create", "user.create",
    ]  # fmt: skip
    assert on_user[-1]["detail"] == {"teams": [team], "admin": False}
    assert on_user[-2]["detail"]["key_id"] == key["id"]
    assert on_user[-3]["detail"] == {"changes": {"name": "M"}}
    assert key["key"] not in json.dumps(on_user)
    on_grant = events_of(admin, resource=resource)
    assert [event["action"] for event in on_grant] == ["grant.delete", "grant.create"]
    assert on_grant[-1]["detail"]["grant_id"] == grant["id"]


def test_events_filter_by_actor_action_and_outcome(
    server: Server, admin: httpx.Client, member: tuple[str, str]
) -> None:
    email, key = member
    with server.client(key) as client:
        client.get("/api/v1/me")
        client.get("/api/v1/users")
        client.get("/api/v1/secrets")

    mine = events_of(admin, actor=email)
    denied = events_of(admin, actor=email, outcome="denied")
    allowed = events_of(admin, actor=email, outcome="allowed")
    listing = events_of(admin, actor=email, action="GET /api/v1/users")

    assert {event["actor"] for event in mine} == {email}
    assert [event["path"] for event in denied] == ["/api/v1/secrets", "/api/v1/users"]
    assert [event["path"] for event in allowed] == ["/api/v1/me"]
    assert [event["status"] for event in listing] == [403]
    assert len(mine) == 3


def test_events_filter_by_time_since_inclusive_and_until_exclusive(
    server: Server, admin: httpx.Client, member: tuple[str, str]
) -> None:
    email, key = member
    with server.client(key) as client:
        for _ in range(3):
            assert client.get("/api/v1/me").status_code == 200
    first, middle, last = reversed(events_of(admin, actor=email))

    since = events_of(admin, actor=email, since=middle["ts"])
    until = events_of(admin, actor=email, until=middle["ts"])
    between = events_of(admin, actor=email, since=middle["ts"], until=last["ts"])

    assert [event["seq"] for event in since] == [last["seq"], middle["seq"]]
    assert [event["seq"] for event in until] == [first["seq"]]
    assert [event["seq"] for event in between] == [middle["seq"]]
    moment = datetime.fromisoformat(middle["ts"].replace("Z", "+00:00"))
    for same_moment in (
        moment.astimezone(timezone(timedelta(hours=2))).isoformat(),  # another offset
        moment.replace(tzinfo=None).isoformat(),  # no offset: UTC
    ):
        assert events_of(admin, actor=email, since=same_moment) == since, same_moment


def test_events_page_newest_first_through_next(
    server: Server, admin: httpx.Client, member: tuple[str, str]
) -> None:
    email, key = member
    with server.client(key) as client:
        for _ in range(5):
            client.get("/api/v1/me")
    everything = events_of(admin, actor=email)

    pages: list[list[int]] = []
    params: dict[str, Any] = {"actor": email, "limit": 2}
    while True:
        page = admin.get("/api/v1/audit", params=params).json()
        pages.append([event["seq"] for event in page["data"]])
        if page["next"] is None:
            break
        params["cursor"] = page["next"]

    assert [len(page) for page in pages] == [2, 2, 1]
    seqs = [seq for page in pages for seq in page]
    assert seqs == sorted(seqs, reverse=True)
    assert seqs == [event["seq"] for event in everything]


def test_a_member_sees_their_own_events_and_nobody_elses(
    server: Server, admin: httpx.Client, member: tuple[str, str]
) -> None:
    email, key = member
    with server.client(key) as client:
        client.get("/api/v1/me")

        own = client.get("/api/v1/audit")
        asked_for_admin = client.get("/api/v1/audit", params={"actor": server.admin_email})

    assert own.status_code == 200, own.text
    assert own.json()["data"]
    assert {event["actor"] for event in own.json()["data"]} == {email}
    assert {event["actor"] for event in asked_for_admin.json()["data"]} == {email}


def test_the_export_is_json_lines_oldest_first_with_the_same_filters(
    server: Server, admin: httpx.Client, member: tuple[str, str]
) -> None:
    email, key = member
    with server.client(key) as client:
        client.get("/api/v1/me")
        client.get("/api/v1/users")

    exported = admin.get("/api/v1/audit/export", params={"actor": email})
    denied = admin.get("/api/v1/audit/export", params={"actor": email, "outcome": "denied"})

    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in exported.text.splitlines()]
    assert lines == list(reversed(events_of(admin, actor=email)))
    assert [event["path"] for event in lines] == ["/api/v1/me", "/api/v1/users"]
    assert [json.loads(line)["status"] for line in denied.text.splitlines()] == [403]


def test_the_whole_export_verifies_as_one_hash_chain(admin: httpx.Client) -> None:
    lines = [json.loads(line) for line in admin.get("/api/v1/audit/export").text.splitlines()]

    assert [event["seq"] for event in lines] == list(range(1, len(lines) + 1))
    assert lines[0]["prev_hash"] == "0" * 64
    for before, after in pairwise(lines):
        assert after["prev_hash"] == before["hash"]


def test_verify_reports_an_intact_chain(server: Server, admin: httpx.Client) -> None:
    server.new_user()

    report = admin.get("/api/v1/audit/verify")

    assert report.status_code == 200, report.text
    assert report.json()["ok"] is True
    assert report.json()["problems"] == []
    assert report.json()["checked"] == report.json()["head"] > 0
    newest = admin.get("/api/v1/audit", params={"limit": 1}).json()["data"][0]
    assert newest["seq"] >= report.json()["head"]


def test_two_nodes_writing_at_once_keep_one_intact_chain(
    server: Server, admin: httpx.Client, start_server: Callable[..., Server]
) -> None:
    other = start_server(server.home, init=False)
    email, key = server.new_user()
    clients = [server.client(key), other.client(key)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda n: clients[n % 2].get("/api/v1/me").status_code, range(60)))
    for client in clients:
        client.close()

    assert statuses == [200] * 60
    assert len(events_of(admin, actor=email)) == 60
    report = admin.get("/api/v1/audit/verify").json()
    assert report["ok"] is True, report["problems"]
    assert report["checked"] == report["head"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"])
def test_health_metrics_and_documentation_are_not_audited(
    server: Server, admin: httpx.Client, path: str
) -> None:
    rid = request_id()

    assert httpx.get(f"{server.url}{path}", headers={"X-Request-ID": rid}).status_code == 200

    assert rid not in admin.get("/api/v1/audit/export").text


@pytest.mark.parametrize("path", ["/docsearch", "/metrics_export/daily", "/healthzz", "/readyz2"])
def test_a_path_that_merely_begins_like_an_unaudited_one_is_audited(
    server: Server, admin: httpx.Client, member: tuple[str, str], path: str
) -> None:
    _, key = member
    rid = request_id()

    with server.client(key) as client:
        assert client.get(path, headers={"X-Request-ID": rid}).status_code == 404

    assert find_event(admin, rid)["path"] == path
