"""A real HTTP server on loopback standing in for a SaaS API: it records every request and
answers each with the handler the test gave it.

It runs uvicorn in a thread of its own, so a `bay serve` process (or a script) reaches it
over TCP like any upstream. `hold()` makes a route wait until the test ends, for timeouts
measured by the gateway, never by a sleep here.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

Handler = Callable[["Received"], Awaitable[Response] | Response]


@dataclass
class Received:
    method: str
    path: str
    raw_path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes
    json: Any = field(default=None)

    def param(self, name: str) -> str | None:
        return next((value for key, value in self.query if key == name), None)


class Upstream:
    """`Upstream()` listens at once on a free loopback port (`url`); `close()` stops it."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._handlers: dict[tuple[str, str], Handler] = {}
        self._lock = threading.Lock()
        self._release: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        self.port = int(listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [listener]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "the fake upstream did not start"
            time.sleep(0.01)

    def route(self, method: str, path: str, handler: Handler) -> None:
        with self._lock:
            self._handlers[(method.upper(), path)] = handler

    def answer(self, method: str, path: str, status: int, body: Any) -> None:
        """Answer `method path` with `body` as JSON and `status`."""
        self.route(method, path, lambda _: JSONResponse(body, status_code=status))

    def hold(self, method: str, path: str) -> None:
        """Let `method path` wait, answering nothing, until the upstream is closed."""

        async def wait(_: Received) -> Response:
            assert self._release is not None
            await self._release.wait()
            return Response(status_code=204)

        self.route(method, path, wait)

    def requests_to(self, path: str) -> list[Received]:
        with self._lock:
            return [received for received in self.received if received.path == path]

    def close(self) -> None:
        if self._loop is not None and self._release is not None:
            self._loop.call_soon_threadsafe(self._release.set)
        self._server.should_exit = True
        self._thread.join(timeout=10)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._release is None:
            self._loop = asyncio.get_running_loop()
            self._release = asyncio.Event()
        request = Request(scope, receive)
        body = await request.body()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        received = Received(
            method=request.method,
            path=request.url.path,
            raw_path=scope["raw_path"].decode("latin-1"),
            query=list(request.query_params.multi_items()),
            headers={name.lower(): value for name, value in request.headers.items()},
            body=body,
            json=parsed,
        )
        with self._lock:
            self.received.append(received)
            handler = self._handlers.get((received.method, received.path))
        if handler is None:
            response: Response = JSONResponse(
                {"error": {"message": "Unknown path components", "code": 2500}}, status_code=404
            )
        else:
            answered = handler(received)
            response = await answered if isinstance(answered, Awaitable) else answered
        await response(scope, receive, send)


@contextmanager
def running_upstream() -> Iterator[Upstream]:
    upstream = Upstream()
    try:
        yield upstream
    finally:
        upstream.close()
