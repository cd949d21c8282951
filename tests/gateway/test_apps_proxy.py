"""The proxy's answers when the upstream fails, in process: a server that refuses the
connection is a 502 problem, one that never answers a 504, one that is not serving a 503.

The front runs as plain ASGI over its real httpx client, with the lookup of the server
given (a public server at a chosen address), so each failure can be made on purpose.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from servicebay.core.crypto import MasterKey
from servicebay.gateway.apps import App, AppCalls, Apps
from servicebay.runtime.config import ServerConfig
from servicebay.runtime.supervisor import free_port

PROBLEM_JSON = "application/problem+json"


def public_app(state: str, address: str | None) -> App:
    config = ServerConfig.model_validate(
        {"sub_domain": "site", "start_command": "python app.py", "auth": "public"}
    )
    return App(
        "site", "usr_owner", config, state, "it crashed" if state != "running" else None, address
    )


async def fall_through(scope: object, receive: object, send: object) -> None:
    raise AssertionError("the request should not have reached the app behind the front")


def call(found: App, *, read_seconds: float = 5.0) -> httpx.Response:
    async def go() -> httpx.Response:
        instance = SimpleNamespace(
            settings=SimpleNamespace(auth_cache_seconds=1.0, home=Path("/nonexistent/bay")),
            master_key=MasterKey(os.urandom(32)),
        )
        apps = Apps(instance, None)  # type: ignore[arg-type]
        apps.client = httpx.AsyncClient(timeout=httpx.Timeout(read_seconds, connect=5.0))

        async def find(name: str) -> App:
            return found

        apps.find = find  # type: ignore[method-assign]
        front = AppCalls(fall_through, SimpleNamespace(apps=apps), domain=None)
        try:
            transport = httpx.ASGITransport(app=front)
            async with httpx.AsyncClient(transport=transport, base_url="http://bay") as client:
                return await client.get("/apps/site/report")
        finally:
            await apps.stop()

    return asyncio.run(go())


@pytest.fixture
def silent() -> Iterator[str]:
    """A port that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield f"127.0.0.1:{listener.getsockname()[1]}"


def test_an_upstream_that_refuses_the_connection_is_a_502() -> None:
    answer = call(public_app("running", f"127.0.0.1:{free_port()}"))
    assert answer.status_code == 502
    assert answer.headers["content-type"].startswith(PROBLEM_JSON)
    assert "app site could not be reached (ConnectError)" in answer.json()["detail"]


def test_an_upstream_that_does_not_answer_is_a_504(silent: str) -> None:
    answer = call(public_app("running", silent), read_seconds=0.5)
    assert answer.status_code == 504
    assert answer.headers["content-type"].startswith(PROBLEM_JSON)
    assert "app site did not answer" in answer.json()["detail"]


def test_a_server_that_is_not_serving_is_a_503_saying_why() -> None:
    answer = call(public_app("crash_looping", None))
    assert answer.status_code == 503
    assert "crash_looping: it crashed" in answer.json()["detail"]
