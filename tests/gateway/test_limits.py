"""Limits: a key over its rate gets 429 with Retry-After; a body over BAY_MAX_BODY_BYTES
gets 413, whether its size is declared up front or only found out while it streams in."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.gateway.gateway_support import assert_problem, find_event, unique_email, wait_for

if TYPE_CHECKING:
    from tests.conftest import Server

RATE_LIMITS = {"BAY_RATE_LIMIT_PER_MINUTE": "60", "BAY_RATE_LIMIT_BURST": "3"}
BURST = 3
MAX_BODY = 4096


@dataclasses.dataclass
class Limited:
    server: Server
    members: list[tuple[str, str]]  # (email, key), one per test: each has its own bucket


@pytest.fixture(scope="module")
def limited(
    launch: Callable[..., Server], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Limited]:
    """A node allowing 3 requests at once and 1 a second per key, with fresh member keys.

    The members are added before the limits apply (a first node without them), so that
    setting up spends none of the admin key's tokens.
    """
    home = tmp_path_factory.mktemp("rate-limited")
    setup = launch(home)
    try:
        members = [setup.new_user() for _ in range(4)]
    finally:
        setup.stop()
    node = dataclasses.replace(
        launch(home, init=False, settings=RATE_LIMITS), admin_key=setup.admin_key
    )
    yield Limited(node, members)
    node.stop()


@pytest.fixture(scope="module")
def small_bodies(
    launch: Callable[..., Server], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    node = launch(
        tmp_path_factory.mktemp("small-bodies"), settings={"BAY_MAX_BODY_BYTES": str(MAX_BODY)}
    )
    yield node
    node.stop()


def drain(server: Server, key: str) -> list[httpx.Response]:
    """Call until the first 429 (at most a few calls past the burst)."""
    answers: list[httpx.Response] = []
    with server.client(key) as client:
        while len(answers) < BURST + 5:
            answers.append(client.get("/api/v1/me"))
            if answers[-1].status_code == 429:
                break
    return answers


def test_a_key_over_its_burst_is_refused_with_429_and_retry_after(limited: Limited) -> None:
    answers = drain(limited.server, limited.members[0][1])

    assert [answer.status_code for answer in answers[:BURST]] == [200] * BURST
    refused = answers[-1]
    assert_problem(refused, 429, "rate limit")
    retry_after = refused.headers["retry-after"]
    assert retry_after.isdigit()
    assert 1 <= int(retry_after) <= 60


def test_the_rate_limit_counts_each_key_apart(limited: Limited) -> None:
    assert drain(limited.server, limited.members[1][1])[-1].status_code == 429

    with limited.server.client(limited.members[2][1]) as other:
        assert other.get("/api/v1/me").status_code == 200


def test_a_rate_limited_call_is_audited_as_denied_under_the_callers_name(
    limited: Limited,
) -> None:
    email, key = limited.members[3]

    problem = assert_problem(drain(limited.server, key)[-1], 429)

    with limited.server.admin() as admin:
        event = find_event(admin, problem["request_id"], actor=email, outcome="denied")
    assert event["status"] == 429
    assert event["detail"]["reason"] == problem["detail"]


def test_a_limited_key_is_served_again_once_its_bucket_refills(limited: Limited) -> None:
    key = limited.members[0][1]
    assert drain(limited.server, key)[-1].status_code == 429

    with limited.server.client(key) as client:
        answer, _ = wait_for(lambda: client.get("/api/v1/me"), lambda r: r.status_code == 200)

    assert answer.status_code == 200


def user_body(size: int) -> bytes:
    """A valid new-user document padded with whitespace to exactly `size` bytes."""
    document = json.dumps({"email": unique_email(), "name": "Padded"}).encode()
    assert len(document) <= size
    return document[:-1] + b" " * (size - len(document)) + b"}"


def chunks(body: bytes, size: int = 1000) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.mark.parametrize("authenticated", [True, False], ids=["admin", "anonymous"])
def test_a_body_declared_larger_than_the_limit_is_refused_with_413(
    small_bodies: Server, authenticated: bool
) -> None:
    body = user_body(MAX_BODY + 1)
    key = small_bodies.admin_key if authenticated else None

    with small_bodies.client(key) as client:
        answer = client.post(
            "/api/v1/users", content=body, headers={"content-type": "application/json"}
        )

    assert answer.request.headers["content-length"] == str(MAX_BODY + 1)
    assert_problem(answer, 413, f"exceeds the limit of {MAX_BODY} bytes")


def test_a_streamed_body_larger_than_the_limit_is_refused_with_413(small_bodies: Server) -> None:
    with small_bodies.admin() as client:
        answer = client.post(
            "/api/v1/users",
            content=chunks(user_body(3 * MAX_BODY)),
            headers={"content-type": "application/json"},
        )

    assert answer.request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in answer.request.headers
    assert_problem(answer, 413, f"exceeds the limit of {MAX_BODY} bytes")


@pytest.mark.parametrize("streamed", [False, True], ids=["declared", "streamed"])
def test_a_body_of_exactly_the_limit_is_accepted(small_bodies: Server, streamed: bool) -> None:
    body = user_body(MAX_BODY)

    with small_bodies.admin() as client:
        answer = client.post(
            "/api/v1/users",
            content=chunks(body) if streamed else body,
            headers={"content-type": "application/json"},
        )

    assert answer.status_code == 201, answer.text


@pytest.mark.parametrize("streamed", [False, True], ids=["declared", "streamed"])
def test_a_refused_body_is_audited_as_denied(small_bodies: Server, streamed: bool) -> None:
    body = user_body(2 * MAX_BODY)

    with small_bodies.admin() as client:
        answer = client.post(
            "/api/v1/users",
            content=chunks(body) if streamed else body,
            headers={"content-type": "application/json"},
        )
        problem = assert_problem(answer, 413)
        event = find_event(client, problem["request_id"], outcome="denied")

    assert event["status"] == 413
    assert event["detail"]["reason"] == problem["detail"]
