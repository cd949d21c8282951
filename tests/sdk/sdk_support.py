"""A tiny HTTP/1.1 server on loopback that records what the SDK sends and answers as told.

The real gateway shows the SDK's happy and error paths; this one shows what a gateway
cannot be made to do on cue: count connections, drop them, stall, answer text or bytes.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

Then = Literal["keep", "close", "hang_up", "stall"]
"""After the request: keep the connection, close it after answering (without saying so),
hang up without answering, or never answer (until the server stops)."""


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    connection: int


@dataclass
class Reply:
    status: int = 200
    body: bytes = b'{"ok": true}'
    content_type: str | None = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    then: Then = "keep"


class FakeServer:
    """Answers every request with `reply(seen)`; `seen` and `connections` say what came."""

    def __init__(self, reply: Callable[[Seen], Reply], tls: ssl.SSLContext | None = None) -> None:
        self.reply = reply
        self.seen: list[Seen] = []
        self.connections = 0
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._http.daemon_threads = True
        if tls is not None:
            self._http.socket = tls.wrap_socket(self._http.socket, server_side=True)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self._http.server_address[1]}"
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def opened(self) -> int:
        with self._lock:
            self.connections += 1
            return self.connections

    def stop(self) -> None:
        self.stopping.set()
        self._http.shutdown()
        self._http.server_close()


def _handler_for(fake: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        wbufsize = 1 << 16  # headers and body leave in one segment, flushed per request

        def setup(self) -> None:
            super().setup()
            self.number = fake.opened()

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the tests read `seen`, not a log."""

        def answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            seen = Seen(
                self.command,
                self.path,
                {name.lower(): value for name, value in self.headers.items()},
                self.rfile.read(length),
                self.number,
            )
            fake.seen.append(seen)
            reply = fake.reply(seen)
            if reply.then == "stall":
                fake.stopping.wait(30)
            if reply.then in ("hang_up", "stall"):
                self.close_connection = True
                return
            self.send_response(reply.status)
            if reply.content_type:
                self.send_header("Content-Type", reply.content_type)
            for name, value in reply.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
            if reply.then == "close":
                self.close_connection = True

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = answer

    return Handler
