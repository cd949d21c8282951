"""Hosted servers' traffic: `/apps/{name}/...`, or any path on host `{name}.{BAY_DOMAIN}`.

Plain ASGI in front of the webhooks (`AppCalls`), a reverse proxy to the server process
the supervisor keeps healthy (`runtime.supervisor`):

1. **Which server.** The deployment and its active version's config are looked up by name
   and reused for `BAY_AUTH_CACHE_SECONDS` (`Apps`). A host `{name}.{BAY_DOMAIN}` whose
   name is not a server falls through to the webhooks, which own the other names.
   `/apps/{name}` without the slash is redirected to `/apps/{name}/`.
2. **Who may call** (`auth` in server_deployment.json): `api_key` (the same authenticator
   as everything else; the owner and admins always, others need `invoke` on
   `app:{name}`), or `public`. A refusal is the standard 401/403 problem and the server
   never sees the request. Every call is audited as `app.invoke` on `app:{name}`.
3. **What the server sees.** The request without the caller's key (`Authorization`,
   `X-API-Key`, `?api_key=`), the platform's cookies (`bay_*`) or any `X-Bay-*` header the
   caller sent; with `X-Forwarded-For/Proto/Host`, `X-Forwarded-Prefix: /apps/{name}` (path
   style), `X-Bay-Request-Id`, and for a caller with a key `X-Bay-User`, `X-Bay-Teams` and
   `X-Bay-Identity`, signed (`sdk.identity`) with the instance's identity key, which the
   server holds as `BAY_IDENTITY_KEY`. Bodies stream both ways; WebSockets pass through.
   The answer goes back as the server gave it, minus `Set-Cookie` of a `bay_*` cookie.
4. **Failures.** No healthy process: 503 naming the server's state. The upstream refusing
   the connection or breaking off: 502; not answering within `UPSTREAM_READ_SECONDS`: 504.

A static site (`"static"` in server_deployment.json) has no process: after the same steps
1 and 2, its files are answered from the folder the supervisor routes to (`serve_files`,
Starlette's `StaticFiles`: `index.html` for a folder, ETag/Last-Modified and 304s, no
listings, nothing outside the folder), GET and HEAD only.

Code services (`service.json` of kind `code`) are supervised processes too, but mounted at
`/{name}/...` by the service dispatch (`gateway/dispatch.py`), which authenticates,
authorises per endpoint and audits the call as for every service, then hands it to the
same proxy (`Proxied`, `forward`): what the process sees, and the failures, are the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import httpx
from sqlalchemy import and_, select
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.responses import RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from servicebay.core.access import Principal
from servicebay.core.audit import AuditRecord
from servicebay.core.errors import (
    BadGateway,
    Forbidden,
    GatewayTimeout,
    MethodNotAllowed,
    NotFound,
    ServiceBayError,
    ServiceUnavailable,
)
from servicebay.core.instance import Instance
from servicebay.core.models import Deployment, DeploymentVersion
from servicebay.gateway.auth import admit, key_of
from servicebay.gateway.context import STATE_KEY, RequestContext, request_context
from servicebay.gateway.envelope import SANE_REQUEST_ID, outcome_of
from servicebay.gateway.hooks import HOP_BY_HOP, OWN_HEADER_PREFIX, subdomain_of
from servicebay.gateway.limits import RateLimiter
from servicebay.gateway.problems import error_response
from servicebay.runtime.config import DEPLOYMENT_NAME, ServerConfig, ServiceConfig
from servicebay.runtime.layout import Layout
from servicebay.runtime.supervisor import Routes, config_of, static_dir
from servicebay.sdk.identity import HEADER as IDENTITY_HEADER
from servicebay.sdk.identity import sign_identity

log = logging.getLogger(__name__)

APPS_PATH = re.compile(r"^/apps/([^/]+)(/.*)?$")
ROUTE = "/apps/{name}"
"""The route template the envelope reports for metrics and audit, whichever way it came."""
KEY_PARAMETER = "api_key"
CALLER_HEADERS = frozenset({"authorization", "x-api-key", "host", "cookie"})
"""Never passed as sent: the caller's key, and what the proxy sets itself."""
PLATFORM_COOKIE_PREFIX = "bay_"
"""Cookies of the platform (the console's session): never passed to a server."""
FORWARDED_PREFIX = "x-forwarded-"
UPSTREAM_CONNECT_SECONDS = 5.0
UPSTREAM_READ_SECONDS = 300.0
LOOKUPS_KEPT = 10_000


@dataclass(frozen=True)
class App:
    """A server deployment, or a code service's, as calls to it see it."""

    name: str
    owner_id: str
    config: ServerConfig | ServiceConfig | None
    """Its active version's; None when no version built yet."""
    state: str | None
    reason: str | None
    address: str | None
    """As the supervisor recorded it: for nodes that do not supervise it themselves."""
    kind: str = "server"
    """The deployment's kind: `server`, or `service` (code)."""
    version: int | None = None
    """The version the supervisor recorded as serving."""

    @property
    def resource(self) -> str:
        return f"app:{self.name}"

    @property
    def label(self) -> str:
        """How problems name it: `app NAME` or `service NAME`."""
        return f"{'app' if self.kind == 'server' else 'service'} {self.name}"


class Apps:
    """Lookups of server and code-service deployments (reused for `ttl` seconds, unknown
    names included), and the node's routes when it supervises them itself."""

    def __init__(self, instance: Instance, routes: Routes | None) -> None:
        self.instance = instance
        self.routes = routes
        self.ttl = instance.settings.auth_cache_seconds
        self._identity_keys: dict[str, bytes] = {}
        self.layout = Layout(instance.settings.home)
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(UPSTREAM_READ_SECONDS, connect=UPSTREAM_CONNECT_SECONDS),
            follow_redirects=False,
            trust_env=False,
        )
        self._found: dict[tuple[str, str], tuple[float, App | None]] = {}

    async def start(self) -> None:
        """Nothing to start: the client connects on first use."""

    async def stop(self) -> None:
        await self.client.aclose()

    async def find(self, name: str, kind: str = "server") -> App | None:
        """The deployment `name` of `kind` (`server`, or `service` for a code service), or
        None (nothing, or another kind, has that name)."""
        hit = self._found.get((kind, name))
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        found = await self._read(name, kind)
        if len(self._found) >= LOOKUPS_KEPT:
            self._found.clear()
        self._found[(kind, name)] = (time.monotonic() + self.ttl, found)
        return found

    async def _read(self, name: str, kind: str) -> App | None:
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
                    .where(Deployment.name == name, Deployment.kind == kind)
                )
            ).first()
        if row is None:
            return None
        deployment, version = row
        config = None if version is None else config_of(kind, version.config)
        return App(
            name,
            deployment.owner_id,
            config,
            deployment.server_state,
            deployment.server_reason,
            deployment.server_address,
            kind,
            deployment.server_version,
        )

    @contextlib.contextmanager
    def upstream(self, app: App) -> Iterator[str]:
        """The address to send a call to, held for the length of the call."""
        local = self.routes.get(app.name) if self.routes is not None else None
        if local is not None and local.folder is not None:
            raise NotFound(f"{app.label} is a static site: it answers GET and HEAD only")
        if local is not None:
            assert self.routes is not None
            with self.routes.lease(local):
                yield local.address
            return
        if self.routes is None and app.state == "running" and app.address:
            yield app.address
            return
        raise self._not_serving(app)

    def static_folder(self, app: App) -> Path | None:
        """The built folder a static site serves from right now; None for a program. The
        supervisor's route decides where it supervises (so a redeploy from one to the
        other switches at once); elsewhere, the active version's config and the version
        the supervisor recorded."""
        local = self.routes.get(app.name) if self.routes is not None else None
        if local is not None:
            return local.folder
        served = None
        if app.config is not None and app.version is not None:
            served = static_dir(self.layout, app.name, app.version, app.config)
        if served is None:
            return None  # a program: `upstream` says why it is not serving
        if self.routes is None and app.state == "running":
            return served
        raise self._not_serving(app)

    @staticmethod
    def _not_serving(app: App) -> ServiceUnavailable:
        if app.config is None:
            return ServiceUnavailable(
                f"{app.label} has no version that built yet; `bay deployments show "
                f"{app.name}` has the build log"
            )
        why = f": {app.reason}" if app.reason else ""
        return ServiceUnavailable(
            f"{app.label} is not serving right now ({app.state or 'starting'}{why}); "
            f"`bay deployments logs {app.name}` has its output"
        )

    def _identity_key(self, name: str) -> bytes:
        """The key that `name`, and only it, is given (`MasterKey.identity_key`)."""
        key = self._identity_keys.get(name)
        if key is None:
            key = self._identity_keys[name] = self.instance.master_key.identity_key(name).encode()
        return key

    def sign(self, caller: Principal, name: str, request_id: str) -> str:
        return sign_identity(
            self._identity_key(name),
            user=caller.email,
            teams=caller.teams,
            request_id=request_id,
            service=name,
        )


class AppCalls:
    """Proxies calls to servers itself and passes every other request to `app`."""

    def __init__(self, app: ASGIApp, state: Any, *, domain: str | None) -> None:
        self.app = app
        self.state = state
        """The FastAPI app's `state`, which its lifespan fills with the instance and `Apps`."""
        self.domain = domain.lower().rstrip(".") if domain else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = await self._target(scope)
        if target is None:
            await self.app(scope, receive, send)
            return
        name, path, prefix = target
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send, name, prefix)
            return
        scope["route_path"] = ROUTE
        try:
            await self._proxy(scope, receive, send, name, path, prefix)
        except ServiceBayError as error:
            await error_response(scope, error)(scope, receive, send)

    async def _target(self, scope: Scope) -> tuple[str, str, str] | None:
        """(server name, path, prefix) for a call to a server, None for anything else."""
        if scope["type"] not in ("http", "websocket"):
            return None
        label = subdomain_of(scope, self.domain)
        if label is not None:
            apps: Apps = self.state.apps
            if DEPLOYMENT_NAME.fullmatch(label) and await apps.find(label) is not None:
                return label, scope["path"] or "/", ""
            return None  # a webhook's host, or nobody's: the webhooks answer
        match = APPS_PATH.match(scope["path"])
        if match is None:
            return None
        return match.group(1), match.group(2) or "", f"/apps/{match.group(1)}"

    async def _app(self, name: str) -> App:
        apps: Apps = self.state.apps
        found = await apps.find(name) if DEPLOYMENT_NAME.fullmatch(name) else None
        if found is None:
            raise NotFound(
                f"there is no app {name!r}: `bay deployments list` shows the server deployments"
            )
        return found

    async def _admit(self, scope: Scope, app: App, context: RequestContext) -> Principal | None:
        """The caller (None for a public server); refusals are 401 or 403."""
        context.record("app.invoke", app.resource)
        if isinstance(app.config, ServerConfig) and app.config.auth == "public":
            return None
        instance: Instance = self.state.instance
        limiter: RateLimiter = self.state.rate_limiter
        caller = await admit(instance, limiter, scope, key_of(HTTPConnection(scope)))
        if caller.admin or caller.user_id == app.owner_id:
            return caller
        decision = await instance.authorizer.decide(caller.subject, app.resource, "invoke")
        if not decision.allowed:
            raise Forbidden(
                f"you need `invoke` on `{app.resource}`: {decision.reason}; its owner or an "
                f"admin can grant it: bay grant user:{caller.email} {app.resource} invoke"
            )
        context.detail["grant"] = decision.grant
        return caller

    async def _proxy(
        self, scope: Scope, receive: Receive, send: Send, name: str, path: str, prefix: str
    ) -> None:
        app = await self._app(name)
        context = request_context(scope)
        caller = await self._admit(scope, app, context)
        if not path:  # `/apps/name`: relative links need the slash
            query = scope.get("query_string", b"").decode("latin-1")  # the caller's own
            location = f"{prefix}/" + (f"?{query}" if query else "")
            await RedirectResponse(location, status_code=307)(scope, receive, send)
            return
        apps: Apps = self.state.apps
        folder = apps.static_folder(app)
        if folder is not None:
            await serve_files(folder, app, scope, receive, send, prefix)
            return
        await forward(apps, app, scope, receive, send, prefix, caller)

    async def _websocket(
        self, scope: Scope, receive: Receive, send: Send, name: str, prefix: str
    ) -> None:
        """A WebSocket passed through after the same checks as a call; audited here, since
        the envelope only sees HTTP."""
        offered = dict(scope.get("headers", ())).get(b"x-request-id", b"").decode("latin-1")
        sane = SANE_REQUEST_ID.match(offered)  # as the envelope takes one for HTTP
        context = RequestContext(request_id=offered if sane else uuid.uuid4().hex)
        scope.setdefault("state", {})[STATE_KEY] = context
        status = 101
        try:
            app = await self._app(name)
            caller = await self._admit(scope, app, context)
            apps: Apps = self.state.apps
            headers = _upstream_headers(scope, prefix, caller, context.request_id, apps, name)
            with apps.upstream(app) as address:
                query = _query(scope)
                url = f"ws://{address}{_raw_path(scope, prefix) or '/'}"
                await _pass_websocket(
                    receive,
                    send,
                    f"{url}?{query}" if query else url,
                    [(k, v) for k, v in headers if k not in ("sec-websocket-protocol",)],
                    list(scope.get("subprotocols", ())),
                )
        except ServiceBayError as error:
            status = error.status
            context.note_refusal(error.message)
            await send({"type": "websocket.close", "code": 1008, "reason": error.message[:120]})
        except (OSError, InvalidHandshake) as error:
            status = 502
            context.note_refusal(f"app {name} refused the WebSocket: {type(error).__name__}")
            await send({"type": "websocket.close", "code": 1011})
        finally:
            instance: Instance = self.state.instance
            client = scope.get("client")
            await instance.audit.write(
                AuditRecord(
                    action=context.action or "app.invoke",
                    outcome=outcome_of(status),
                    actor=context.actor,
                    key_id=context.key_id,
                    resource=context.resource or f"app:{name}",
                    status=status,
                    method="WEBSOCKET",
                    path=scope["path"],
                    client=client[0] if client else None,
                    request_id=context.request_id,
                    detail=context.detail,
                )
            )


class Proxied:
    """An ASGI answer that is a call forwarded to `app` (the service dispatch's hand-off
    of a code-service call it has admitted); a failure to reach it is a problem."""

    def __init__(self, apps: Apps, app: App, prefix: str, caller: Principal) -> None:
        self.apps, self.app, self.prefix, self.caller = apps, app, prefix, caller

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await forward(self.apps, self.app, scope, receive, send, self.prefix, self.caller)
        except ServiceBayError as error:
            await error_response(scope, error)(scope, receive, send)


async def forward(
    apps: Apps,
    app: App,
    scope: Scope,
    receive: Receive,
    send: Send,
    prefix: str,
    caller: Principal | None,
) -> None:
    """Stream an admitted HTTP call to `app`'s process and its answer back: the path minus
    `prefix`, the caller's key and the platform's headers stripped, identity added."""
    name = app.name
    context = request_context(scope)
    headers = _upstream_headers(scope, prefix, caller, context.request_id, apps, name)
    with apps.upstream(app) as address:
        url = f"http://{address}{_raw_path(scope, prefix)}"
        query = _query(scope)
        request = apps.client.build_request(
            scope["method"],
            f"{url}?{query}" if query else url,
            headers=headers,
            content=_body(receive) if _has_body(scope) else None,
        )
        try:
            response = await apps.client.send(request, stream=True)
        except httpx.TimeoutException:
            raise GatewayTimeout(
                f"{app.label} did not answer within {UPSTREAM_READ_SECONDS:g} s"
            ) from None
        except httpx.HTTPError as error:
            raise BadGateway(
                f"{app.label} could not be reached ({type(error).__name__}); "
                f"`bay deployments logs {name}` has its output"
            ) from None
        context.detail["status"] = response.status_code
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": _answer_headers(response.headers.raw),
                }
            )
            try:
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx.HTTPError as error:
                log.warning("%s broke off its answer: %s", app.label, type(error).__name__)
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()


async def serve_files(
    folder: Path, app: App, scope: Scope, receive: Receive, send: Send, prefix: str
) -> None:
    """Answer an admitted GET or HEAD from a static site's folder (Starlette's StaticFiles:
    `index.html` for a folder, content types, ETag/Last-Modified and 304s, no listings).
    Nothing outside the folder is served: `..` and its encodings are resolved first, and
    symlinks are followed only to files inside it. A miss is a 404 problem that names
    the path asked for, never where the files are."""
    files = StaticFiles(directory=folder, html=True, follow_symlink=False)
    # The prefix is the site's root: StaticFiles serves the rest of the path from the folder.
    within = {**scope, "root_path": scope.get("root_path", "") + prefix}
    try:
        await files(within, receive, send)
    except HTTPException as refused:
        if refused.status_code == 405:
            raise MethodNotAllowed(
                f"{app.label} is a static site: it answers GET and HEAD", allow=["GET", "HEAD"]
            ) from None
        path = scope["path"][len(prefix) :] or "/"
        raise NotFound(f"{app.label} has no file at {path!r}") from None


async def _pass_websocket(
    receive: Receive,
    send: Send,
    url: str,
    headers: list[tuple[str, str]],
    subprotocols: list[str],
) -> None:
    """Connect upstream first (a refusal closes the caller's handshake), then pump
    messages both ways until either side closes."""
    first = await receive()
    if first["type"] != "websocket.connect":
        return
    try:
        upstream = await connect(
            url,
            additional_headers=headers,
            subprotocols=[Subprotocol(p) for p in subprotocols] or None,
            user_agent_header=None,
            open_timeout=UPSTREAM_CONNECT_SECONDS,
            max_size=None,
        )
    except InvalidStatus as refused:
        raise BadGateway(
            f"the app answered the WebSocket with {refused.response.status_code}"
        ) from None
    async with upstream:
        await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
        downstream = asyncio.create_task(_to_caller(upstream, send))
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("bytes")
                data = message.get("text") if data is None else data
                if data is not None:
                    await upstream.send(data)
        except ConnectionClosed:
            pass
        finally:
            downstream.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await downstream


async def _to_caller(upstream: ClientConnection, send: Send) -> None:
    try:
        async for data in upstream:
            key = "bytes" if isinstance(data, bytes) else "text"
            await send({"type": "websocket.send", key: data})
    except ConnectionClosed:
        pass
    with contextlib.suppress(Exception):
        await send({"type": "websocket.close", "code": upstream.close_code or 1000})


def _has_body(scope: Scope) -> bool:
    headers = dict(scope.get("headers", ()))
    return b"transfer-encoding" in headers or headers.get(b"content-length", b"0") != b"0"


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    """The caller's body as it arrives (the envelope's size limit applies)."""
    while True:
        message: Message = await receive()
        if message["type"] != "http.request":
            return
        if message.get("body"):
            yield message["body"]
        if not message.get("more_body"):
            return


def _raw_path(scope: Scope, prefix: str) -> str:
    """The path the server sees: as sent (still percent-encoded), minus the prefix."""
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    return raw.decode("latin-1").split("?", 1)[0][len(prefix) :]


def _query(scope: Scope) -> str:
    """The query string as sent, minus the caller's key."""
    raw: str = scope.get("query_string", b"").decode("latin-1")
    kept = [
        pair
        for pair in raw.split("&")
        if pair and unquote_plus(pair.split("=", 1)[0]).lower() != KEY_PARAMETER
    ]
    return "&".join(kept)


def _upstream_headers(
    scope: Scope,
    prefix: str,
    caller: Principal | None,
    request_id: str,
    apps: Apps,
    name: str,
) -> list[tuple[str, str]]:
    """The caller's headers fit to pass on, then the proxy's own."""
    sent = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
    named = {
        token.strip().lower()
        for key, value in sent
        if key == "connection"
        for token in value.split(",")
    }
    websocket = scope["type"] == "websocket"
    kept = [
        (key, value)
        for key, value in sent
        if key not in CALLER_HEADERS
        and key not in HOP_BY_HOP
        and key not in named
        and not key.startswith(OWN_HEADER_PREFIX)
        and not key.startswith(FORWARDED_PREFIX)
        and not (websocket and key.startswith("sec-websocket-"))
    ]
    cookies = _app_cookies([value for key, value in sent if key == "cookie"])
    if cookies:
        kept.append(("cookie", cookies))
    host = next((value for key, value in sent if key == "host"), "")
    client = scope.get("client")
    secure = scope.get("scheme") in ("https", "wss")
    kept += [
        ("x-forwarded-for", client[0] if client else ""),
        ("x-forwarded-proto", "https" if secure else "http"),
        ("x-forwarded-host", host),
        ("x-bay-request-id", request_id),
    ]
    if prefix:
        kept.append(("x-forwarded-prefix", prefix))
    if caller is not None:
        kept += [
            ("x-bay-user", caller.email),
            ("x-bay-teams", ",".join(caller.teams)),
            (IDENTITY_HEADER.lower(), apps.sign(caller, name, request_id)),
        ]
    return kept


def _app_cookies(values: list[str]) -> str:
    """The Cookie header without the platform's own cookies."""
    kept = [
        pair.strip()
        for value in values
        for pair in value.split(";")
        if pair.strip() and not pair.strip().lower().startswith(PLATFORM_COOKIE_PREFIX)
    ]
    return "; ".join(kept)


def _answer_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The server's answer headers minus those of its connection, and minus any cookie
    named like the platform's own (an app must not plant the console's session)."""
    named = {
        token.strip().lower()
        for key, value in raw
        if key.lower() == b"connection"
        for token in value.split(b",")
    }
    prefix = PLATFORM_COOKIE_PREFIX.encode()
    return [
        (key.lower(), value)
        for key, value in raw
        if key.decode("latin-1").lower() not in HOP_BY_HOP
        and key.lower() not in named
        and not (key.lower() == b"set-cookie" and value.strip().lower().startswith(prefix))
    ]
