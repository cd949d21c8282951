"""`HttpService`: an upstream HTTP API's routes, forwarded with the service's credential.

The caller never sees the credential and the upstream never sees the caller's: the
gateway has already taken the caller's key off the call, no caller header is passed on,
and the auth header is built from the secret when the service is built. Whatever goes
wrong upstream becomes a 502 or 504 that names the service and the route, never the
upstream's address or the secret.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass
from datetime import date
from typing import Any

import httpx

from servicebay import __version__
from servicebay.core.errors import (
    BadGateway,
    ConfigurationError,
    GatewayTimeout,
    InvalidInput,
    MethodNotAllowed,
    NotFound,
)
from servicebay.services.base import Permission, ServiceCall, ServiceReply
from servicebay.services.http.openapi import document
from servicebay.services.http.spec import SECRET_SLOT, HttpServiceSpec, RouteParam, RouteSpec
from servicebay.services.http.template import RouteTemplate


class _UpstreamCalls(logging.Filter):
    """Drops httpx's INFO line for calls to an http service's upstream: it holds the full
    URL with the caller's values, and the gateway logs each call itself, redacted. Other
    users of httpx (alerts) keep their lines."""

    def __init__(self) -> None:
        super().__init__()
        self.bases: Counter[str] = Counter()
        logging.getLogger("httpx").addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        url = str(args[1]) if len(args) > 1 else ""
        return not any(url.startswith(base) for base in self.bases)


_UPSTREAM_CALLS = _UpstreamCalls()

MAX_ANSWER_BYTES = 10 * 1024 * 1024
"""An upstream answer larger than this is a 502: the gateway holds answers in memory."""
REDACTED = "[redacted]"
INTEGER = re.compile(r"^-?\d{1,18}$")
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
PASSED_HEADERS = ("retry-after",)
"""Upstream headers a caller may act on; every other one stays with the gateway."""


@dataclass(frozen=True)
class Route:
    name: str
    spec: RouteSpec
    template: RouteTemplate
    permission: Permission


class HttpService:
    def __init__(self, spec: HttpServiceSpec, secret: str | None) -> None:
        self.spec = spec
        self.name = spec.name
        self.description = spec.description
        self._secret = secret
        headers = {"Accept": "application/json", "User-Agent": f"servicebay/{__version__}"}
        header = spec.header
        if header is not None and secret is not None:
            if not secret or any(ord(char) < 0x20 or ord(char) == 0x7F for char in secret):
                raise ConfigurationError(
                    f"service {spec.name!r}: secret {spec.secret} is empty or holds a line "
                    "break or control character, so it cannot be sent in a header"
                )
            headers[header.name] = header.value.replace(SECRET_SLOT, secret)
        self._routes = {
            name: Route(
                name,
                route,
                route.template(),
                Permission(f"service:{spec.name}/{name}", route.grant_action),
            )
            for name, route in spec.routes.items()
        }
        # One pool per service; the credential rides on every request as a default header.
        # No redirects (a redirect could carry the credential elsewhere) and no proxies or
        # .netrc from the gateway's environment.
        _UPSTREAM_CALLS.bases[spec.base_url] += 1
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(spec.timeout_seconds),
            follow_redirects=False,
            trust_env=False,
        )

    def permission_for(self, call: ServiceCall) -> Permission:
        return self._route(call).permission

    async def handle(self, call: ServiceCall) -> ServiceReply:
        route = self._route(call)
        values, forwarded = _arguments(route, call)
        path_values = {name: values[name][1] for name in route.template.in_path}
        url = self.spec.base_url + route.template.render_path(path_values)
        query_values = {name: text for name, (_, text) in values.items()}
        params = [*route.template.render_query(query_values), *forwarded]
        if route.spec.body is not None:
            body = route.template.render_body({name: typed for name, (typed, _) in values.items()})
        else:
            body = call.body if route.spec.method not in ("GET", "DELETE") else None
        return await self._forward(route, url, params, body, call.request_id)

    def openapi(self) -> dict[str, Any]:
        return document(self.spec)

    async def close(self) -> None:
        await self._client.aclose()
        _UPSTREAM_CALLS.bases[self.spec.base_url] -= 1
        if _UPSTREAM_CALLS.bases[self.spec.base_url] <= 0:
            del _UPSTREAM_CALLS.bases[self.spec.base_url]

    def _route(self, call: ServiceCall) -> Route:
        where = "/" + "/".join(segment[:100] for segment in call.path)
        route = self._routes.get(call.path[0]) if call.path else None
        extra = len(call.path) - 1
        if route is None or extra not in (0, len(route.template.in_path)):
            raise NotFound(f"service {self.name!r} has no route at {where}")
        if call.method.upper() != route.spec.method:
            raise MethodNotAllowed(
                f"{call.method.upper()} is not allowed on {where}", allow=[route.spec.method]
            )
        return route

    async def _forward(
        self, route: Route, url: str, params: list[tuple[str, str]], body: Any, request_id: str
    ) -> ServiceReply:
        where = f"service {self.name!r}, route {route.name!r}"
        request = self._client.build_request(
            route.spec.method,
            url,
            params=tuple(params),
            json=body,
            headers={"X-Request-Id": request_id},
        )
        try:
            # httpx's timeout bounds each step; this bounds the whole exchange, so an
            # upstream that trickles its answer cannot hold the call past the limit.
            async with asyncio.timeout(self.spec.timeout_seconds):
                response = await self._client.send(request, stream=True)
                try:
                    content = await _read_capped(response, where)
                finally:
                    await response.aclose()
        except (TimeoutError, httpx.TimeoutException):
            raise GatewayTimeout(
                f"{where}: the upstream did not answer within {self.spec.timeout_seconds:g} s"
            ) from None
        except httpx.HTTPError as error:
            raise BadGateway(
                f"{where}: the upstream could not be reached ({_why(error)})"
            ) from None
        return self._reply(route, where, response, content)

    def _reply(
        self, route: Route, where: str, response: httpx.Response, content: bytes
    ) -> ServiceReply:
        status = response.status_code
        if status >= 500:
            raise BadGateway(f"{where}: the upstream failed with status {status}")
        if status == 401:
            raise BadGateway(
                f"{where}: the upstream refused the service's credential (status 401); "
                f"an admin should check secret {self.spec.secret or '(none configured)'}"
            )
        if status < 200 or 300 <= status < 400:
            raise BadGateway(
                f"{where}: the upstream answered status {status}, which is not passed on"
            )
        headers = {
            name: response.headers[name] for name in PASSED_HEADERS if name in response.headers
        }
        if not content.strip():
            return ServiceReply(status, None, headers)
        media = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if not (media == "application/json" or media.endswith("+json")):
            raise BadGateway(
                f"{where}: the upstream answered status {status} with "
                f"{media[:60] or 'no content type'}, not JSON"
            )
        try:
            data = json.loads(self._scrubbed(content.decode(response.encoding or "utf-8")))
        except (UnicodeDecodeError, LookupError, json.JSONDecodeError):
            raise BadGateway(f"{where}: the upstream answered invalid JSON") from None
        return ServiceReply(status, data, headers)

    def _scrubbed(self, text: str) -> str:
        """The answer without the secret, should the upstream echo the header back."""
        if self._secret:
            for form in {self._secret, json.dumps(self._secret)[1:-1]}:
                text = text.replace(form, REDACTED)
        return text


async def _read_capped(response: httpx.Response, where: str) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_ANSWER_BYTES:
        raise BadGateway(f"{where}: the upstream's answer is larger than {MAX_ANSWER_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise BadGateway(
                f"{where}: the upstream's answer is larger than {MAX_ANSWER_BYTES} bytes"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _why(error: httpx.HTTPError) -> str:
    """What went wrong, in words that quote neither the URL nor the request."""
    if isinstance(error, httpx.ConnectError):
        return "connection refused or host unreachable"
    if isinstance(error, httpx.RemoteProtocolError):
        return "it broke off or answered malformed HTTP"
    if isinstance(error, httpx.ReadError | httpx.WriteError):
        return "the connection broke"
    return type(error).__name__


Values = dict[str, tuple[Any, str]]
"""Each parameter given: its typed value (for a JSON body) and its text (for a URL)."""


def _arguments(route: Route, call: ServiceCall) -> tuple[Values, list[tuple[str, str]]]:
    """The declared parameters' values, checked, and the query pairs to pass on as given.

    Values come from the extra path segments (filling the path's placeholders in order),
    the query, and, for a route with a body template, the caller's JSON object. A
    placeholder's parameter is consumed; every other query pair is passed on, except one
    that names a pair of the route's fixed query: what the route fixes, a caller may not
    change (an upstream that takes the last of two values would take the caller's).
    """
    template, params = route.template, route.spec.params
    placeholders = template.placeholders
    given: dict[str, list[Any]] = {}
    for name, value in zip(template.in_path, call.path[1:], strict=False):
        given.setdefault(name, []).append(value)
    fixed = {name for name, _ in template.query}
    forwarded: list[tuple[str, str]] = []
    errors: list[dict[str, Any]] = []
    for name, value in call.query:
        if name in placeholders:
            given.setdefault(name, []).append(value)
        elif name in fixed:
            errors.append(_error(name, f"{name} is set by the route and cannot be given"))
        else:
            forwarded.append((name, value))
    if route.spec.body is not None and isinstance(call.body, dict):
        for name in placeholders:
            if name in call.body:
                given.setdefault(name, []).append(call.body[name])
    values: Values = {}
    for name, param in params.items():
        supplied = given.get(name, [])
        if name not in placeholders:
            supplied = [value for key, value in forwarded if key == name]
        if not supplied:
            if param.required:
                errors.append(_error(name, f"{name} is required: {param.description}"))
            continue
        if name in placeholders and len(supplied) > 1:
            errors.append(_error(name, f"{name} is given more than once"))
            continue
        try:
            typed = [_typed(param, value) for value in supplied]
        except ValueError as error:
            errors.append(_error(name, f"{name} {error}"))
            continue
        values[name] = typed[0]
    for name in template.in_path:
        if name in values and values[name][1] in ("", ".", ".."):
            errors.append(_error(name, f"{name} fills a path segment: it is not empty, . or .."))
    if errors:
        raise InvalidInput(
            f"route {route.name!r}: " + "; ".join(error["msg"] for error in errors), errors=errors
        )
    return values, forwarded


def _error(name: str, message: str) -> dict[str, Any]:
    return {"loc": ["query", name], "msg": message, "type": "value_error"}


def _typed(param: RouteParam, value: Any) -> tuple[Any, str]:
    """The value as its type and as text; ValueError says why not (never quoting it)."""
    kind = param.type
    if isinstance(value, dict | list):
        raise ValueError(f"must be a single {kind}, not a JSON {type(value).__name__}")
    if kind == "string":
        text = value if isinstance(value, str) else json.dumps(value)
        return text, text
    if kind == "boolean":
        if isinstance(value, bool):
            return value, "true" if value else "false"
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true", value.lower()
        raise ValueError("must be true or false")
    if kind == "integer":
        if isinstance(value, int) and not isinstance(value, bool):
            return value, str(value)
        if isinstance(value, str) and INTEGER.fullmatch(value):
            return int(value), str(int(value))
        raise ValueError("must be a whole number")
    if kind == "number":
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an integer of hundreds of digits
                raise ValueError("must be a finite number") from None
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise ValueError("must be a number") from None
        else:
            raise ValueError("must be a number")
        if not math.isfinite(number):
            raise ValueError("must be a finite number")
        if isinstance(value, str):
            return number, value
        return value, json.dumps(value)
    # date
    if isinstance(value, str) and ISO_DATE.fullmatch(value):
        try:
            return date.fromisoformat(value).isoformat(), value
        except ValueError:
            pass
    raise ValueError("must be a date, YYYY-MM-DD")
