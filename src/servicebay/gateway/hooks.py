"""Webhook calls: `/hooks/{name}[/...]`, or any path on host `{name}.{BAY_DOMAIN}`.

A webhook deployment runs its script once per call. Like service calls, this is plain ASGI
in front of the FastAPI app (`WebhookCalls`): a call needs none of FastAPI's routing, and a
sync webhook's whole answer should take a few milliseconds.

1. **Which webhook.** The deployment and its active version's config are looked up by name
   and reused for `BAY_AUTH_CACHE_SECONDS`, so a deploy or a rollback reaches every node
   within seconds. An unknown name, or a deployment of another kind, is a 404; a webhook
   without a version that built is a 503 saying whether it is building or failed.
2. **Who may call** (`auth` in webhook.json): `api_key` (the owner and admins always; others
   need `invoke` on `webhook:{name}`), `public` (anyone; a key, if sent, is not looked at),
   or `hmac-sha256` (the raw body signed GitHub's, Stripe's or the generic way with the
   value of the secret named by `secret`, which must allow `deployment:{name}`). Every
   call, refusals included, is audited as `webhook.invoke` on `webhook:{name}`.
3. **The run.** The call becomes a run (trigger `webhook`; actor: the caller with a key)
   whose script reads the call from its BAY_WEBHOOK_REQUEST file, without the caller's key
   (no `Authorization`, `X-API-Key` or `?api_key=`) but with `X-Bay-Request-Id`, and
   `X-Bay-User` and `X-Bay-Teams` for a caller with a key. `mode` `async`: the run is
   queued and the caller gets 202 with its id. `sync`: this node runs it at once
   (`Worker.run_now`), forked from a warm interpreter (`runtime.warm`), and answers with what
   the script sent through `webhook_response.send_response`; a script that sent nothing
   gets a JSON summary of the run (200 if it succeeded, 500 if not); a script still
   running at `timeout_seconds` is stopped, and the caller gets a 504 naming the run.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from servicebay.core.access import Principal
from servicebay.core.errors import (
    BadGateway,
    Forbidden,
    GatewayTimeout,
    NotAuthenticated,
    NotFound,
    ServiceBayError,
    ServiceUnavailable,
)
from servicebay.core.instance import Instance
from servicebay.core.models import Deployment, DeploymentVersion, Run, utcnow
from servicebay.core.secret_store import reveal
from servicebay.gateway.auth import admit, key_of
from servicebay.gateway.context import request_context
from servicebay.gateway.limits import RateLimiter
from servicebay.gateway.problems import error_response
from servicebay.gateway.signatures import BadSignature, verify
from servicebay.runtime import runs
from servicebay.runtime.config import DEPLOYMENT_NAME, WebhookConfig
from servicebay.runtime.worker import OnFinished, Prepared, Worker

log = logging.getLogger(__name__)

HOOKS_PATH = re.compile(r"^/hooks/([^/]+)(/.*)?$")
ROUTE = "/hooks/{name}"
"""The route template the envelope reports for metrics and audit, whichever way it came."""
KEY_PARAMETER = "api_key"
CALLER_HEADERS = frozenset({"authorization", "x-api-key"})
"""The caller's key, in whichever header it came: never passed to the script."""
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
"""Headers of one connection, not of the message (RFC 9110 7.6.1): neither passed to the
script nor taken from its answer."""
OWN_HEADER_PREFIX = "x-bay-"
"""Identity headers the platform sets; a caller's own are dropped, never believed."""
TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
LOOKUPS_KEPT = 10_000
"""Names whose lookup is reused at most (unknown names included: guessing costs memory)."""
RUN_HEADER = "X-Bay-Run-Id"
"""On every answer to a call: the id of the run it became."""


class SignatureRefused(NotAuthenticated):
    """A call to an hmac-sha256 webhook without a valid signature."""

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'HMAC-SHA256 realm="servicebay"'}


class _NamesItsRun(ServiceBayError):
    """A sync call whose run did not give an answer to send; the problem names the run."""

    def __init__(self, message: str, *, run_id: str) -> None:
        super().__init__(message)
        self.run_id = run_id

    def headers(self) -> dict[str, str]:
        return {RUN_HEADER: self.run_id}


class BadAnswer(_NamesItsRun, BadGateway):
    """The script wrote an answer file the platform cannot send."""


class TimedOut(_NamesItsRun, GatewayTimeout):
    """The script was still running at the webhook's timeout."""


# --- which webhook --------------------------------------------------------------------------


@dataclass(frozen=True)
class Hook:
    """A webhook as the calls to it see it: its deployment, active version and config."""

    name: str
    deployment: Deployment
    """As read (no longer attached to a session): what runs are created for."""
    version: int
    config: WebhookConfig
    signing_key: str | None
    """With auth hmac-sha256, the secret's value, when it may be revealed to the deployment."""
    signing_problem: str | None
    """Otherwise, why it cannot be (no such secret, or not allowed for the deployment)."""

    @property
    def resource(self) -> str:
        return f"webhook:{self.name}"


@dataclass(frozen=True)
class _Missing:
    """A name that does not lead to a webhook that can run: the error to answer with."""

    error: type[ServiceBayError]
    message: str


Found = Hook | _Missing


class Webhooks:
    """What the webhook front needs besides the instance: the lookups it reuses, the worker
    that runs sync calls, and their warm interpreters. A node component: started and
    stopped with the node (stopping ends the warm interpreters)."""

    def __init__(
        self, instance: Instance, worker: Worker | None, *, on_finished: OnFinished | None
    ) -> None:
        self.instance = instance
        self.ttl = instance.settings.auth_cache_seconds
        self.worker = worker or Worker(instance, on_finished=on_finished)
        """The node's worker, or one of the webhooks' own that only runs sync calls."""
        self._own_worker = worker is None
        self.wake: Callable[[], None] | None = worker.wake if worker else None
        self._found: OrderedDict[str, tuple[float, Found]] = OrderedDict()
        self._loading: dict[str, asyncio.Future[Found]] = {}

    async def start(self) -> None:
        if self._own_worker:  # never started as a component: its warm interpreters are ours
            await self.worker.zygotes.start()

    async def stop(self) -> None:
        if self._own_worker:
            await self.worker.zygotes.stop()

    async def find(self, name: str) -> Hook:
        """The webhook `name`, from a lookup at most `ttl` old (one query at a time per name)."""
        hit = self._found.get(name)
        if hit is not None and hit[0] > time.monotonic():
            found = hit[1]
        else:
            pending = self._loading.get(name)
            if pending is None:
                pending = asyncio.ensure_future(self._look_up(name))
                self._loading[name] = pending
                pending.add_done_callback(lambda _: self._loading.pop(name, None))
            found = await asyncio.shield(pending)
        if isinstance(found, _Missing):
            raise found.error(found.message)
        return found

    async def _look_up(self, name: str) -> Found:
        found = await self._read(name)
        self._found[name] = (time.monotonic() + self.ttl, found)
        self._found.move_to_end(name)
        while len(self._found) > LOOKUPS_KEPT:
            self._found.popitem(last=False)
        return found

    async def _read(self, name: str) -> Found:
        async with self.instance.sessions() as session:
            row = (
                await session.execute(
                    select(Deployment, DeploymentVersion)
                    .outerjoin(
                        DeploymentVersion,
                        and_(
                            DeploymentVersion.deployment_id == Deployment.id,
                            DeploymentVersion.version == Deployment.active_version,
                        ),
                    )
                    .where(Deployment.name == name)
                )
            ).first()
            if row is None or row[0].kind != "webhook":
                what = "nothing" if row is None else f"a {row[0].kind} deployment"
                return _Missing(
                    NotFound,
                    f"there is no webhook {name!r} ({what} has that name): "
                    "`bay deployments list` shows the webhooks",
                )
            deployment, version = row
            if version is None or version.status != "ready":
                latest = await session.scalar(
                    select(DeploymentVersion)
                    .where(DeploymentVersion.deployment_id == deployment.id)
                    .order_by(DeploymentVersion.version.desc())
                    .limit(1)
                )
                state = "has no version" if latest is None else f"is {latest.status}"
                return _Missing(
                    ServiceUnavailable,
                    f"webhook {name} has no version that built yet: its newest version "
                    f"{state}; `bay deployments show {name}` has the build log",
                )
            config = WebhookConfig.model_validate(version.config)
            key, problem = None, None
            if config.auth == "hmac-sha256" and config.secret is not None:
                try:
                    key = await reveal(
                        session,
                        self.instance.master_key,
                        config.secret,
                        for_resource=f"deployment:{name}",
                    )
                except (NotFound, Forbidden) as error:
                    problem = (
                        f"webhook {name} checks signatures with secret {config.secret}, which "
                        f"cannot be used: {error.message}. Its owner or an admin can fix it: "
                        f"bay secrets set {config.secret} --allow deployment:{name} (or, if it "
                        f"exists, bay secrets allow {config.secret} deployment:{name})"
                    )
        return Hook(name, deployment, version.version, config, key, problem)

    async def start_run(
        self, hook: Hook, actor: str | None, call: dict[str, Any]
    ) -> Run | Prepared:
        """The call's run: queued (async: the call is its input), or claimed by this node's
        worker and prepared to run at once, in the same transaction (sync: the call is
        handed over in memory)."""
        sync = hook.config.mode == "sync"
        try:
            async with self.instance.sessions() as session, session.begin():
                run = await runs.create_run(
                    session,
                    hook.deployment,
                    trigger="webhook",
                    actor=actor,
                    input=None if sync else call,
                    version=hook.version,
                )
                if sync:
                    run.status, run.started_at, run.worker = "running", utcnow(), self.worker.id
                    await session.flush()
                    return await self.worker.prepare(session, run)
        except IntegrityError:  # the deployment was deleted since it was looked up
            raise NotFound(f"webhook {hook.name} has just been deleted") from None
        if self.wake is not None:
            self.wake()
        return run


# --- the front ------------------------------------------------------------------------------


class WebhookCalls:
    """Answers webhook calls itself and passes every other request to `app`."""

    def __init__(self, app: ASGIApp, state: Any, *, domain: str | None) -> None:
        self.app = app
        self.state = state
        """The FastAPI app's `state`, which its lifespan fills with the instance and the
        `Webhooks`."""
        self.domain = domain.lower().rstrip(".") if domain else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = _target(scope, self.domain)
        if target is None:
            await self.app(scope, receive, send)
            return
        name, path = target
        scope["route_path"] = ROUTE
        try:
            response = await self._answer(Request(scope, receive), name, path)
        except ServiceBayError as error:
            response = error_response(scope, error)
        await response(scope, receive, send)

    async def _answer(self, request: Request, name: str, path: str) -> Response:
        webhooks: Webhooks = self.state.webhooks
        if not DEPLOYMENT_NAME.match(name):
            raise NotFound(f"there is no webhook {name!r}: webhook names are lowercase")
        hook = await webhooks.find(name)
        context = request_context(request.scope)
        context.record("webhook.invoke", hook.resource, mode=hook.config.mode)
        caller = await self._admit(request, hook)
        call = _call_of(request, path, await request.body(), caller, context.request_id)
        started = await webhooks.start_run(hook, caller.email if caller else None, call)
        run = started.run if isinstance(started, Prepared) else started
        context.detail["run_id"] = run.id
        headers = {RUN_HEADER: run.id}
        if not isinstance(started, Prepared):
            return JSONResponse(
                {"run": run.id, "status": run.status},
                status_code=202,
                headers={**headers, "Location": f"/api/v1/runs/{run.id}"},
            )
        limit = self.state.instance.settings.max_body_bytes
        outcome = await webhooks.worker.run_now(
            started, call=call, answer_limit=_answer_file_limit(limit)
        )
        ended = outcome.run
        context.detail["status"] = ended.status
        if outcome.answer is not None:
            return _answer_of(outcome.answer, limit, run.id, hook.name)
        if ended.status == "timed_out":
            raise TimedOut(
                f"webhook {name} did not answer within {hook.config.timeout_seconds} s: its "
                f"run {run.id} was stopped ({ended.reason}); `bay runs logs {run.id}` has "
                "its log",
                run_id=run.id,
            )
        summary = {"run": run.id, "status": ended.status, "exit_code": ended.exit_code}
        return JSONResponse(
            summary, status_code=200 if ended.status == "succeeded" else 500, headers=headers
        )

    async def _admit(self, request: Request, hook: Hook) -> Principal | None:
        """The caller, for a webhook called with a key; refusals are 401, 403 or 503."""
        config = hook.config
        if config.auth == "public":
            return None
        if config.auth == "hmac-sha256":
            if hook.signing_key is None:
                raise ServiceUnavailable(hook.signing_problem or "no signing secret is set")
            try:
                style = verify(hook.signing_key, await request.body(), request.headers)
            except BadSignature as refused:
                raise SignatureRefused(f"webhook {hook.name}: {refused}") from None
            request_context(request.scope).detail["signature"] = style
            return None
        instance: Instance = self.state.instance
        limiter: RateLimiter = self.state.rate_limiter
        caller = await admit(instance, limiter, request.scope, key_of(request))
        if caller.admin or caller.user_id == hook.deployment.owner_id:
            return caller
        decision = await instance.authorizer.decide(caller.subject, hook.resource, "invoke")
        if not decision.allowed:
            raise Forbidden(
                f"you need `invoke` on `{hook.resource}`: {decision.reason}; its owner or an "
                f"admin can grant it: bay grant user:{caller.email} {hook.resource} invoke"
            )
        request_context(request.scope).detail["grant"] = decision.grant
        return caller


def _target(scope: Scope, domain: str | None) -> tuple[str, str] | None:
    """(webhook name, the path the script sees) for a webhook call, None for anything else."""
    if scope["type"] != "http":
        return None
    label = subdomain_of(scope, domain)
    if label is not None:
        return label, scope["path"] or "/"
    match = HOOKS_PATH.match(scope["path"])
    if match is None:
        return None
    return match.group(1), match.group(2) or "/"


def subdomain_of(scope: Scope, domain: str | None) -> str | None:
    """`name` for a request to host `{name}.{domain}` (webhooks and apps), else None."""
    if not domain:
        return None
    label, dot, rest = _host(scope).partition(".")
    return label if dot and rest == domain and label else None


def _host(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"host":
            host: str = value.decode("latin-1").lower()
            return host.rsplit(":", 1)[0].rstrip(".") if not host.endswith("]") else host
    return ""


def _call_of(
    request: Request, path: str, body: bytes, caller: Principal | None, request_id: str
) -> dict[str, Any]:
    """The call as the script reads it (`servicebay.webhook`), without the caller's key."""
    headers = [
        [name, value]
        for name, value in request.headers.items()
        if name not in CALLER_HEADERS
        and name not in HOP_BY_HOP
        and not name.startswith(OWN_HEADER_PREFIX)
    ]
    headers.append(["x-bay-request-id", request_id])
    if caller is not None:
        headers += [["x-bay-user", caller.email], ["x-bay-teams", ",".join(caller.teams)]]
    return {
        "method": request.method,
        "path": path,
        "query": [
            [name, value]
            for name, value in request.query_params.multi_items()
            if name.lower() != KEY_PARAMETER
        ],
        "headers": headers,
        "body_base64": base64.b64encode(body).decode("ascii"),
    }


def _answer_file_limit(body_limit: int) -> int:
    """The largest answer file read: a body of `body_limit` bytes in base64, and headers."""
    return body_limit * 4 // 3 + 64 * 1024


def _answer_of(raw: bytes, body_limit: int, run_id: str, name: str) -> Response:
    """The script's answer file as the HTTP answer; a 502 naming what is wrong with it."""
    if len(raw) > _answer_file_limit(body_limit):
        raise BadAnswer(
            f"webhook {name} answered with more than the {body_limit} bytes an answer may "
            "have (BAY_MAX_BODY_BYTES)",
            run_id=run_id,
        )
    try:
        answer = json.loads(raw)
        status = answer["status_code"]
        pairs = answer.get("headers") or []
        body = base64.b64decode(answer.get("body_base64") or "", validate=True)
        if not isinstance(status, int) or not 200 <= status <= 599:
            raise ValueError(f"status_code {status!r} is not a final HTTP status (200-599)")
        raw_headers = _answer_headers(pairs)
    except (ValueError, KeyError, TypeError, binascii.Error) as error:
        raise BadAnswer(
            f"webhook {name}'s answer cannot be sent ({error}); answer with "
            "webhook_response.send_response(data=..., headers=..., status_code=...)",
            run_id=run_id,
        ) from None
    if len(body) > body_limit:
        raise BadAnswer(
            f"webhook {name} answered with {len(body)} bytes, more than the {body_limit} an "
            "answer may have (BAY_MAX_BODY_BYTES)",
            run_id=run_id,
        )
    response = Response(body, status_code=status, headers={RUN_HEADER: run_id})
    response.raw_headers.extend(raw_headers)
    return response


def _answer_headers(pairs: Any) -> list[tuple[bytes, bytes]]:
    """The answer's headers fit to send: valid names and values, minus those of the
    connection (hop-by-hop, or named by its Connection header) and those the platform sets."""
    if not isinstance(pairs, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
        for pair in pairs
    ):
        raise ValueError("headers must be a list of [name, value] strings")
    named = {
        token.strip().lower()
        for name, value in pairs
        if name.lower() == "connection"
        for token in value.split(",")
    }
    dropped = HOP_BY_HOP | named | {"content-length", "x-request-id", RUN_HEADER.lower()}
    kept = []
    for name, value in pairs:
        if not TOKEN.match(name) or any(c in value for c in "\r\n\x00"):
            raise ValueError(f"header {name!r} is not a valid HTTP header")
        if name.lower() not in dropped:
            kept.append((name.lower().encode("latin-1"), value.encode("utf-8")))
    return kept
