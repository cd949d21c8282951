"""Fixtures of the SDK tests: fake servers on loopback, and a real sql service."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from servicebay import Client
from tests.sdk.sdk_support import FakeServer, Reply, Seen

if TYPE_CHECKING:
    from tests.conftest import Server


@pytest.fixture
def fake() -> Iterator[Callable[..., FakeServer]]:
    """`fake(reply, tls=None)` starts a FakeServer; all are stopped when the test ends."""
    started: list[FakeServer] = []

    def start(reply: Callable[[Seen], Reply] = lambda _: Reply(), **options: Any) -> FakeServer:
        server = FakeServer(reply, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(autouse=True)
def no_platform_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts outside any run: the settings a run would have are its to give."""
    for variable in (
        "BAY_URL", "INTERNAL_API_KEY", "BAY_API_KEY", "BAY_RUN_ID",
        "BAY_WEBHOOK_REQUEST", "BAY_WEBHOOK_RESPONSE",
    ):  # fmt: skip
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def sales_service(server: Server, sales_db: Path) -> Iterator[str]:
    """An `sql` service over the sales database, registered through the SDK by the admin."""
    name = f"sales-{secrets.token_hex(3)}"
    secret = f"SALES_DB_{secrets.token_hex(3).upper()}"
    with Client(url=server.url, api_key=server.admin_key) as admin:
        admin.put(
            f"api/v1/secrets/{secret}",
            json={"value": f"sqlite:///{sales_db}", "allow": [f"service:{name}"]},
        )
        admin.post(
            "api/v1/services",
            json={
                "name": name,
                "kind": "sql",
                "description": "The sales database",
                "secret": secret,
                "tables": {
                    "customer": {
                        "description": "Customers",
                        "key": "email",
                        "operations": ["read", "create", "update", "delete"],
                    }
                },
                "queries": {
                    "daily_active_users": {
                        "sql": "SELECT count(DISTINCT user_email) AS users FROM events"
                        " WHERE day = :day",
                        "params": {"day": "date"},
                        "description": "Distinct users active on a day",
                    }
                },
            },
        )
        yield name
        admin.delete(f"api/v1/services/{name}")
        admin.delete(f"api/v1/secrets/{secret}")
