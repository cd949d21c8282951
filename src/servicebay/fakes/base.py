"""The HTTP server every vendor fake is built on: routes, a record of what came, a thread.

A fake is a real server on a loopback port, so a connector (or a script, or `bay demo`)
reaches it over TCP exactly as it would reach the vendor. Tests read `received` to check
the wire format the connector used; `requests_to(path)` picks the calls to one path.
Standard library only: the fakes ship with the product for `bay demo`.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

__all__ = ["Answer", "FakeServer", "Received"]


@dataclass(frozen=True)
class Received:
    """One request as the fake saw it; header names lower-cased."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        """The body parsed as JSON, or None when it is empty or not JSON."""
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None

    def param(self, name: str) -> str | None:
        """The first query parameter called `name`."""
        return next((value for key, value in self.query if key == name), None)


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any = None
    """A JSON value, bytes sent as they are (an HTML error page), or None for no body."""
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[..., Answer]
"""Called with the `Received` request and the route pattern's named groups as keywords."""


class FakeServer:
    """A vendor fake: `start()` listens on `port` (0: a free one) and serves on a thread,
    `url` is where it listens, `stop()` ends it. Also a context manager."""

    name = "fake"
    not_found: Any = {"message": "Not Found"}
    """The body of the answer to a path no route matches."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.received: list[Received] = []
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._interjections: list[tuple[str, re.Pattern[str], Answer]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        """Answer `method` on paths fully matching the regular expression `pattern`."""
        self._routes.append((method.upper(), re.compile(pattern), handler))

    def interject(self, method: str, pattern: str, answer: Answer) -> None:
        """Answer the next `method` call to a path matching `pattern` with `answer`, once:
        the vendor's rarer failures (a 500, a rate limit, a record gone) on cue."""
        with self._lock:
            self._interjections.append((method.upper(), re.compile(pattern), answer))

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"the {self.name} fake is not started")
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> Self:
        self._server = ThreadingHTTPServer((self.host, self.port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def requests_to(self, path: str) -> list[Received]:
        with self._lock:
            return [received for received in self.received if received.path == path]

    def clear(self) -> None:
        """Forget what was received (between the checks of one test)."""
        with self._lock:
            self.received.clear()

    def describe(self) -> str:
        """What `python -m servicebay.fakes` prints about this fake: how to call it."""
        return f"{self.name} fake at {self.url}"

    def answer(self, received: Received) -> Answer:
        with self._lock:
            self.received.append(received)
            for index, (method, pattern, answer) in enumerate(self._interjections):
                if method == received.method and pattern.fullmatch(received.path):
                    del self._interjections[index]
                    return answer
        for method, pattern, handler in self._routes:
            found = pattern.fullmatch(received.path)
            if found is not None and method == received.method:
                return handler(received, **found.groupdict())
        return Answer(404, self.not_found)


def _handler_for(fake: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: tests read `received`; a demo's output stays readable."""

        def handle_one(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            split = urlsplit(self.path)
            received = Received(
                method=self.command,
                path=split.path,
                query=parse_qsl(split.query, keep_blank_values=True),
                headers={name.lower(): value for name, value in self.headers.items()},
                body=self.rfile.read(length) if length else b"",
            )
            try:
                answer = fake.answer(received)
            except Exception as error:  # a fake's bug: say so instead of hanging up
                sys.stderr.write(
                    f"{fake.name} fake failed on {self.command} {self.path}: {error}\n"
                )
                answer = Answer(500, {"message": f"the {fake.name} fake failed: {error}"})
            if isinstance(answer.body, bytes):
                body = answer.body
            else:
                body = b"" if answer.body is None else json.dumps(answer.body).encode()
            headers = {"Content-Type": "application/json; charset=utf-8", **answer.headers}
            try:
                self.send_response(answer.status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting
                self.close_connection = True

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_one

    return Handler
