"""Assertions and small tools shared by the HTTP tests."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

if TYPE_CHECKING:
    from tests.conftest import Server

T = TypeVar("T")

PROBLEM_JSON = "application/problem+json"
PROBLEM_FIELDS = ("type", "title", "status", "detail", "instance", "request_id")
REVOCATION_BOUND_SECONDS = 5.0


def unique_email(prefix: str = "someone") -> str:
    return f"{prefix}-{secrets.token_hex(4)}@example.com"


def unique_name(prefix: str = "svc") -> str:
    """A fresh lowercase name, valid for services, teams and deployments."""
    return f"{prefix}_{secrets.token_hex(4)}"


def well_formed_unknown_key() -> str:
    return "bay_" + secrets.token_urlsafe(32)


def assert_problem(
    response: httpx.Response, status: int, detail: str | None = None
) -> dict[str, Any]:
    """An RFC 9457 answer with every field the contract names, and one request id."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    missing = [name for name in PROBLEM_FIELDS if name not in body]
    assert not missing, f"problem lacks {missing}: {body}"
    assert body["status"] == status
    assert ":" in str(body["type"])  # a URI
    assert body["title"]
    assert body["detail"]
    assert body["instance"] == response.request.url.path
    assert response.headers.get_list("x-request-id") == [body["request_id"]]
    if detail is not None:
        assert detail in body["detail"], body["detail"]
    return body


def assert_unauthorized(response: httpx.Response, because: str) -> dict[str, Any]:
    body = assert_problem(response, 401, because)
    assert response.headers["www-authenticate"].startswith("Bearer")
    return body


def find_event(
    admin: httpx.Client, request_id: str, *, pages: int = 5, **filters: str
) -> dict[str, Any]:
    """The audit event of one request, searched newest first among events matching filters."""
    params: dict[str, Any] = {"limit": 100, **filters}
    for _ in range(pages):
        listed = admin.get("/api/v1/audit", params=params)
        assert listed.status_code == 200, listed.text
        for event in listed.json()["data"]:
            if event["request_id"] == request_id:
                return dict(event)
        if listed.json()["next"] is None:
            break
        params["cursor"] = listed.json()["next"]
    raise AssertionError(f"no audit event for request {request_id} ({filters})")


def wait_for(
    probe: Callable[[], T], done: Callable[[T], bool], *, within: float = REVOCATION_BOUND_SECONDS
) -> tuple[T, float]:
    """Call `probe` until `done` says yes; the last result and the seconds it took.

    Polls past the bound (up to twice it) so that a late success is reported as late,
    not as a timeout; callers assert the elapsed time themselves.
    """
    started = time.monotonic()
    while True:
        result = probe()
        elapsed = time.monotonic() - started
        if done(result) or elapsed > 2 * within:
            return result, elapsed
        time.sleep(0.05)


@dataclass
class Hammered:
    """What requests sent one after another answered: every status, and the versions seen."""

    statuses: list[int] = field(default_factory=list)
    versions: set[str] = field(default_factory=set)

    def wait_for(self, version: str, *, within: float) -> None:
        deadline = time.monotonic() + within
        while version not in self.versions:
            assert time.monotonic() < deadline, f"version {version} never answered"
            time.sleep(0.1)

    def failures(self) -> list[int]:
        return [status for status in self.statuses if status != 200]


@contextmanager
def hammering(
    server: Server, path: str, version_of: Callable[[httpx.Response], str]
) -> Iterator[Hammered]:
    """GET `path` as the admin, again and again on a thread, while the block runs (a
    redeploy, say); `version_of` reads which version answered a 200."""
    hammered = Hammered()
    stop = threading.Event()

    def hammer() -> None:
        with server.admin() as client:
            while not stop.is_set():
                answer = client.get(path)
                hammered.statuses.append(answer.status_code)
                if answer.status_code == 200:
                    hammered.versions.add(version_of(answer))

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        yield hammered
    finally:
        stop.set()
        thread.join()
