"""Keys and secret values never leak: not into the server's log, the audit log, /metrics,
nor any error answer, whichever way a key arrives and however a request fails.

Every way of sending a key (Bearer, X-API-Key, ?api_key=) is used by successful and
failing calls: 401 (unknown, revoked, malformed), 403, 404, 400 with keys and secret
values in the body of the bad request. Secrets are set with distinctive values. Then every
place a key or value could end up is searched for them.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from tests.conftest import Server

WAYS = ("bearer", "x-api-key", "query")
SHOWN_PREFIX = 12  # `bay_` and 8 characters: the part of a key listings show, by design


def sent_with(key: str, way: str) -> dict[str, Any]:
    """httpx arguments carrying `key` in one of the three accepted ways."""
    if way == "bearer":
        return {"headers": {"Authorization": f"Bearer {key}"}}
    if way == "x-api-key":
        return {"headers": {"X-API-Key": key}}
    return {"params": {"api_key": key}}


@dataclass
class Traffic:
    """Every answer a scenario got, and every key and secret value it used."""

    client: httpx.Client
    keys: list[str] = field(default_factory=list)
    secret_values: list[str] = field(default_factory=list)
    answers: list[httpx.Response] = field(default_factory=list)

    def call(
        self, method: str, path: str, key: str | None, way: str, status: int, **options: Any
    ) -> httpx.Response:
        carried = sent_with(key, way) if key else {}
        params = {**carried.get("params", {}), **options.pop("params", {})}
        headers = {**carried.get("headers", {}), **options.pop("headers", {})}
        answer = self.client.request(
            method, path, headers=headers, params=params or None, **options
        )
        assert answer.status_code == status, (method, path, way, answer.text[:300])
        self.answers.append(answer)
        return answer

    def secret_value(self, label: str) -> str:
        value = f"sv-{label}-{secrets.token_hex(12)}"
        self.secret_values.append(value)
        return value

    @property
    def needles(self) -> list[str]:
        """What must appear nowhere: each key past its shown prefix, each secret value."""
        return [key[SHOWN_PREFIX:] for key in self.keys] + self.secret_values


def make_traffic(server: Server) -> Traffic:
    traffic = Traffic(server.client())
    admin_key = server.admin_key
    _, member_key = server.new_user()
    with server.admin() as admin:
        created = admin.post("/api/v1/keys", json={"name": "to revoke"})
        assert created.status_code == 201, created.text
        revoked_key = created.json()["key"]
        assert admin.delete(f"/api/v1/keys/{created.json()['id']}").status_code == 204
    unknown_key = "bay_" + secrets.token_urlsafe(32)
    malformed_key = "bay_" + secrets.token_urlsafe(20)
    traffic.keys += [admin_key, member_key, revoked_key, unknown_key, malformed_key]

    call = traffic.call
    for way in WAYS:
        # Accepted keys.
        call("GET", "/api/v1/me", admin_key, way, 200)
        call("GET", "/api/v1/me", member_key, way, 200)
        call("GET", "/api/v1/grants", member_key, way, 200)
        # Refused keys: 401.
        for refused in (unknown_key, revoked_key, malformed_key):
            call("GET", "/api/v1/me", refused, way, 401)
            call("POST", "/api/v1/users", refused, way, 401, json={"email": refused})
        # Valid key, no right: 403.
        call("GET", "/api/v1/users", member_key, way, 403)
        call("DELETE", "/api/v1/grants/grt_0000000000000000", member_key, way, 403)
        # Unknown things: 404.
        call("GET", "/api/v1/users/nobody-404@example.com", admin_key, way, 404)
        call("GET", "/no/such/route", admin_key, way, 404)
        call("GET", "/no/such/route", member_key, way, 404)
        call("DELETE", "/api/v1/keys/key_0000000000000000", member_key, way, 404)
        # Bad requests with keys in their bodies: 400.
        call(
            "POST", "/api/v1/users", admin_key, way, 400,
            json={"email": member_key, "name": admin_key, "teams": [unknown_key]},
        )  # fmt: skip
        call(
            "POST", "/api/v1/users", admin_key, way, 400,
            json={"email": "leak-test@example.com", "name": "Leak", "teams": [member_key]},
        )  # fmt: skip
        call(
            "POST", "/api/v1/grants", admin_key, way, 400,
            json={"principal": member_key, "resource": "service:sql", "actions": ["read"]},
        )  # fmt: skip
        call(
            "POST", "/api/v1/grants", admin_key, way, 400,
            json={"principal": "*", "resource": admin_key, "actions": [revoked_key]},
        )  # fmt: skip
        call(
            "POST", "/api/v1/keys", member_key, way, 400,
            json={"user": admin_key, "name": member_key, "api_key": member_key},
        )  # fmt: skip
        call(
            "POST", "/api/v1/users", admin_key, way, 400,
            content=f'{{"email": "{member_key}", "name": "{admin_key}'.encode(),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        call(
            "POST", "/api/v1/keys", member_key, way, 400, json={"name": "x", member_key: "x"}
        )  # fmt: skip
        # Keys where no key belongs: in a path, in another parameter.
        call("GET", f"/api/v1/users/{member_key}", admin_key, way, 404)
        call("GET", f"/no/such/{admin_key}", member_key, way, 404)
        call("GET", "/api/v1/me", member_key, way, 200, params={"note": admin_key})
        # Secrets: set, refused, listed.
        name = f"LEAK_TEST_{way.upper().replace('-', '_')}"
        call(
            "PUT", f"/api/v1/secrets/{name}", admin_key, way, 200,
            json={"value": traffic.secret_value(f"set-{way}"), "allow": ["service:sql"]},
        )  # fmt: skip
        call(
            "PUT", f"/api/v1/secrets/{name}", admin_key, way, 200,
            json={"value": traffic.secret_value(f"replaced-{way}")},
        )  # fmt: skip
        call(
            "PUT", "/api/v1/secrets/not-an-env-name", admin_key, way, 400,
            json={"value": traffic.secret_value(f"bad-name-{way}")},
        )  # fmt: skip
        call(
            "PUT", f"/api/v1/secrets/{name}", admin_key, way, 400,
            json={"value": traffic.secret_value(f"bad-allow-{way}"), "allow": ["everyone"]},
        )  # fmt: skip
        call(
            "PUT", f"/api/v1/secrets/{name}", admin_key, way, 400,
            json={"value": traffic.secret_value(f"extra-{way}"), "comment": admin_key},
        )  # fmt: skip
        call(
            "PUT", f"/api/v1/secrets/{name}", admin_key, way, 400,
            json={"value": [traffic.secret_value(f"wrong-type-{way}")]},
        )  # fmt: skip
        call(
            "PUT", f"/api/v1/secrets/{name}", member_key, way, 403,
            json={"value": traffic.secret_value(f"member-{way}")},
        )  # fmt: skip
        call(
            "PUT", f"/api/v1/secrets/{name}", unknown_key, way, 401,
            json={"value": traffic.secret_value(f"unknown-{way}")},
        )  # fmt: skip
        call(
            "PUT", f"/api/v1/secrets/{name}", admin_key, way, 400,
            content=('{"value": "' + traffic.secret_value(f"broken-json-{way}")).encode(),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        call("GET", "/api/v1/secrets", admin_key, way, 200)
        call("GET", f"/api/v1/secrets/{name}", admin_key, way, 200)
    return traffic


@pytest.fixture(scope="module")
def debug_server(
    launch: Callable[..., Server], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server logging everything it can (DEBUG), for the strictest look at its log."""
    server = launch(tmp_path_factory.mktemp("debug"), settings={"BAY_LOG_LEVEL": "DEBUG"})
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["shared-server", "debug-logging"])
def traffic(request: pytest.FixtureRequest) -> Iterator[tuple[Server, Traffic]]:
    """The calls, made once per server; each test then searches one place for leaks."""
    server: Server = request.getfixturevalue(
        "server" if request.param == "shared-server" else "debug_server"
    )
    made = make_traffic(server)
    try:
        yield server, made
    finally:
        made.client.close()


def assert_nowhere(needles: list[str], where: str, text: str) -> None:
    found = [needle[:16] + "..." for needle in needles if needle in text]
    assert not found, f"{where} holds {found}"


def test_no_key_or_secret_value_is_in_any_answer(traffic: tuple[Server, Traffic]) -> None:
    _, made = traffic
    errors = [answer for answer in made.answers if answer.status_code >= 400]
    assert {answer.status_code for answer in errors} == {400, 401, 403, 404}

    for answer in made.answers:
        assert_nowhere(
            made.needles, f"{answer.request.method} {answer.request.url.path}", answer.text
        )
        assert_nowhere(made.needles, "a response header", str(answer.headers))


def test_no_key_or_secret_value_is_in_the_server_log(traffic: tuple[Server, Traffic]) -> None:
    server, made = traffic
    log = server.log_text()

    assert "api_key=[REDACTED]" in log  # the query-string calls were logged, redacted
    assert "/no/such/bay_[REDACTED]" in log  # and so was the key put in a path
    assert_nowhere(made.needles, "the server log", log)


def test_no_key_or_secret_value_is_in_the_audit_log(traffic: tuple[Server, Traffic]) -> None:
    server, made = traffic
    with server.admin() as admin:
        export = admin.get("/api/v1/audit/export")
        listed = admin.get("/api/v1/audit", params={"limit": 500})
    assert export.status_code == 200
    assert listed.status_code == 200

    assert "api_key=[REDACTED]" in export.text
    assert "/no/such/bay_[REDACTED]" in export.text
    assert '"outcome":"denied"' in export.text
    assert_nowhere(made.needles, "the audit export", export.text)
    assert_nowhere(made.needles, "the audit listing", listed.text)


def test_no_key_or_secret_value_is_in_the_metrics(traffic: tuple[Server, Traffic]) -> None:
    server, made = traffic
    metrics = httpx.get(f"{server.url}/metrics", timeout=30)
    assert metrics.status_code == 200

    assert "servicebay_http_requests" in metrics.text
    assert_nowhere(made.needles, "/metrics", metrics.text)
