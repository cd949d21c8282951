"""The envelope around every request: request id, limits, audit, metrics, access log.

It is plain ASGI rather than Starlette middleware so that it can hold the response's
first message until the request's audit event is committed: no answer leaves before
its record is durable, and a body too large is refused while it streams in.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from functools import cached_property
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from servicebay.core.audit import AuditRecord, AuditWriter, Outcome
from servicebay.core.redaction import redact_target
from servicebay.gateway.context import STATE_KEY, RequestContext
from servicebay.gateway.limits import BodyTooLarge, limit_body
from servicebay.gateway.metrics import GatewayMetrics
from servicebay.gateway.problems import PROBLEM_JSON, problem_body

access_log = logging.getLogger("servicebay.access")
log = logging.getLogger(__name__)

SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")
NOT_AUDITED = ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/favicon.ico")


def outcome_of(status: int) -> Outcome:
    if status in (401, 403, 413, 429):
        return "denied"
    return "error" if status >= 500 else "allowed"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


class Envelope:
    def __init__(
        self,
        app: ASGIApp,
        *,
        audit: Callable[[], AuditWriter],
        metrics: GatewayMetrics,
        max_body_bytes: int,
    ) -> None:
        self.app = app
        self.audit = audit
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = _header(scope, b"x-request-id")
        request_id = offered if offered and SANE_REQUEST_ID.match(offered) else uuid.uuid4().hex
        context = RequestContext(request_id=request_id)
        scope.setdefault("state", {})[STATE_KEY] = context
        exchange = _Exchange(self, scope, send, context)
        self.metrics.in_flight.inc()
        try:
            limited = limit_body(receive, self.max_body_bytes, _header(scope, b"content-length"))
            await self.app(scope, limited, exchange.send)
        except BodyTooLarge as error:
            await exchange.refuse(413, str(error))
        except Exception:
            # FastAPI already answered with a 500 problem and logged it, then re-raised.
            if not exchange.answered:
                log.exception("unhandled error in request %s", request_id)
                await exchange.refuse(
                    500, f"an unexpected error occurred; quote request id {request_id}"
                )
        finally:
            self.metrics.in_flight.dec()


class _Exchange:
    """One request's answer: holds its start until audited, then times and logs it."""

    def __init__(self, envelope: Envelope, scope: Scope, send: Send, context: RequestContext):
        self.envelope = envelope
        self.scope = scope
        self.downstream = send
        self.context = context
        self.started = time.perf_counter()
        self.replaced = False
        self.answered = False

    async def send(self, message: Message) -> None:
        if self.replaced:
            return
        if message["type"] == "http.response.start":
            self.answered = True
            # One X-Request-ID, ours: a problem built by `refuse` already carries it.
            headers = [h for h in message.get("headers", ()) if h[0].lower() != b"x-request-id"]
            headers.append((b"x-request-id", self.context.request_id.encode()))
            message = {**message, "headers": headers}
            if not await self._audit(message["status"]):
                self.replaced = True
                self.envelope.metrics.audit_failures.inc()
                await self._send_problem(
                    503, "the audit log could not record this request, so it was not answered"
                )
                return
            self._observe(message["status"])
        await self.downstream(message)

    async def refuse(self, status: int, detail: str) -> None:
        if self.answered:
            return  # the app already answered; nothing more can be said on this connection
        self.context.note_refusal(detail)
        start, body = self._problem_messages(status, detail)
        await self.send(start)
        await self.send(body)

    async def _send_problem(self, status: int, detail: str) -> None:
        start, body = self._problem_messages(status, detail)
        await self.downstream(start)
        await self.downstream(body)

    def _problem_messages(self, status: int, detail: str) -> tuple[Message, Message]:
        body = problem_body(
            status=status,
            detail=detail,
            instance=self.scope["path"],
            request_id=self.context.request_id,
        )
        payload = json.dumps(body).encode()
        start: Message = {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(payload)).encode()),
                (b"x-request-id", self.context.request_id.encode()),
            ],
        }
        return start, {"type": "http.response.body", "body": payload}

    @cached_property  # read once the app has routed the request, when its answer starts
    def route(self) -> str:
        route = self.scope.get("route")  # FastAPI's, or the template of a plain-ASGI route
        return str(getattr(route, "path_format", None) or self.scope.get("route_path", "unmatched"))

    @cached_property
    def target(self) -> str:
        return redact_target(
            self.scope["path"], self.scope.get("query_string", b"").decode("latin-1")
        )

    async def _audit(self, status: int) -> bool:
        path = self.scope["path"]
        # Those paths and what lies under them, not any path that merely begins alike
        # (`/metrics_export`, `/docsearch` and `/healthzz` are audited like the rest).
        if path in NOT_AUDITED or path.startswith(tuple(f"{p}/" for p in NOT_AUDITED)):
            return True
        context = self.context
        client = self.scope.get("client")
        record = AuditRecord(
            action=context.action or f"{self.scope['method']} {self.route}",
            outcome=outcome_of(status),
            actor=context.actor,
            key_id=context.key_id,
            resource=context.resource,
            status=status,
            method=self.scope["method"],
            path=self.target,
            client=client[0] if client else None,
            request_id=context.request_id,
            detail=context.detail,
        )
        try:
            await self.envelope.audit().write(record)
        except Exception:
            log.exception("could not audit request %s", context.request_id)
            return False
        return True

    def _observe(self, status: int) -> None:
        elapsed = time.perf_counter() - self.started
        method = self.scope["method"]
        metrics = self.envelope.metrics
        metrics.requests.labels(self.route, method, str(status)).inc()
        metrics.latency.labels(self.route, method).observe(elapsed)
        extra: dict[str, Any] = {
            "request_id": self.context.request_id,
            "method": method,
            "path": self.target,
            "status": status,
            "duration_ms": round(elapsed * 1000, 2),
            "actor": self.context.actor,
        }
        access_log.info(
            "%s %s %s %.1fms", method, self.target, status, elapsed * 1000, extra={"http": extra}
        )
