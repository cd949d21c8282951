"""A small framework for code services: documented, typed functions become HTTP endpoints.

    app = Service("salesforce", description="Customers in Salesforce")

    @app.get("/customer/{email}")
    def customer(email: str, caller: Identity) -> dict[str, str]:
        '''One customer, by e-mail.'''
        ...

    app.run()  # on $PORT

Standard library only (`http.server`), like the rest of the SDK, so a code service needs
nothing in its `requirements.txt` to use it. The platform refuses to deploy an endpoint
without a description, so a function without a docstring is refused here already, when
it is decorated. Every call must carry the gateway's signed `X-Bay-Identity` (checked
with `BAY_IDENTITY_KEY`) unless the service is made with `verify_identity=False`.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import sys
import time
import traceback
import types
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as time_of_day
from decimal import Decimal
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints
from urllib.parse import parse_qsl, unquote, urlsplit

from servicebay.sdk.identity import (
    HEADER,
    KEY_VARIABLE,
    Identity,
    IdentityError,
    identity_key_from_environment,
    verify_identity,
)

__all__ = ["HttpError", "Identity", "Service", "ServiceDefinitionError"]

F = TypeVar("F", bound=Callable[..., Any])

PROBLEM_JSON = "application/problem+json"
_DIGITS = re.compile(r"[0-9]+")
"""`str.isdigit` also takes digits `int` refuses, such as superscripts."""
MAX_BODY_BYTES = 10 * 1024 * 1024
_SCALARS: dict[type, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_QUERY = re.compile(r"\?\S*")
_INTEGER = re.compile(r"^[+-]?[0-9]+$")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


class ServiceDefinitionError(TypeError):
    """An endpoint the framework cannot serve or document; raised when it is decorated."""


class HttpError(Exception):
    """Raise in a handler to answer with a problem: `raise HttpError(404, "no such customer")`.

    `errors` lists field problems like the framework's own 400s (`{"loc", "msg", "type"}`);
    `headers` go on the answer (a 429's `Retry-After`).
    """

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"an HttpError's status is 400 to 599, not {status!r}")
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title
        self.errors = errors or []
        self.headers = headers or {}


def field_error(name: str | None, message: str, kind: str, where: str = "query") -> dict[str, Any]:
    """One bad parameter, as an entry of a 400's `errors` (the framework's own shape);
    `name` None for what is wrong with the `where` as a whole (a body)."""
    return {"loc": [where] if name is None else [where, name], "msg": message, "type": kind}


def invalid(errors: list[dict[str, Any]]) -> HttpError:
    """The 400 for every bad parameter at once, each in `errors` and in the detail: a
    caller fixes them all in one go instead of one per call."""
    said = "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])} {error['msg']}" for error in errors
    )
    return HttpError(400, f"the request is invalid: {said}", errors=errors)


@dataclass(frozen=True)
class _Param:
    name: str
    kind: type | None
    """str, int, float or bool for a query or path value; dict or list for the body."""
    where: str
    """`query`, `path`, `body` or `identity`."""
    required: bool
    default: Any


@dataclass(frozen=True)
class _Endpoint:
    method: str
    path: str
    pattern: re.Pattern[str]
    function: Callable[..., Any]
    params: tuple[_Param, ...]
    status: int
    summary: str
    description: str
    returns: type | None


class Service:
    """A code service: endpoints added with `@app.get(path)` and friends, served by `run`.

    `verify_identity=False` accepts calls without a signed identity (for trying the service
    on your own machine); an `Identity` parameter then gets one built from the plain
    `X-Bay-User` and `X-Bay-Teams` headers, which nothing vouches for.
    `log_queries=False` keeps query strings out of the access log, for a service whose
    parameters are personal data or message text.
    """

    def __init__(
        self,
        name: str,
        *,
        description: str,
        version: str = "1.0.0",
        verify_identity: bool = True,
        identity_key: bytes | None = None,
        log_queries: bool = True,
    ) -> None:
        if not description or not description.strip():
            raise ServiceDefinitionError(
                f"service {name!r} needs a description: the platform documents every service"
            )
        self.name = name
        self.description = description.strip()
        self.version = version
        self.verify_identity = verify_identity
        self.identity_key = identity_key
        self.log_queries = log_queries
        self._endpoints: list[_Endpoint] = []

    def get(self, path: str, *, status: int = 200) -> Callable[[F], F]:
        return self.route("GET", path, status=status)

    def post(self, path: str, *, status: int = 200) -> Callable[[F], F]:
        return self.route("POST", path, status=status)

    def put(self, path: str, *, status: int = 200) -> Callable[[F], F]:
        return self.route("PUT", path, status=status)

    def patch(self, path: str, *, status: int = 200) -> Callable[[F], F]:
        return self.route("PATCH", path, status=status)

    def delete(self, path: str, *, status: int = 200) -> Callable[[F], F]:
        return self.route("DELETE", path, status=status)

    def route(self, method: str, path: str, *, status: int = 200) -> Callable[[F], F]:
        """Make the decorated function the endpoint `method path`; it stays callable as is."""
        method = method.upper()
        if method not in _METHODS:
            raise ServiceDefinitionError(f"method {method!r} is not one of {', '.join(_METHODS)}")

        def decorate(function: F) -> F:
            endpoint = _endpoint(method, path, function, status)
            for known in self._endpoints:
                if known.method == method and known.path == path:
                    raise ServiceDefinitionError(f"{method} {path} is defined twice")
            self._endpoints.append(endpoint)
            return function

        return decorate

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI 3.1 document of the service, read by the platform at deploy time."""
        paths: dict[str, dict[str, Any]] = {}
        for endpoint in self._endpoints:
            paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint)
        return {
            "openapi": "3.1.0",
            "info": {"title": self.name, "description": self.description, "version": self.version},
            "paths": paths,
            "components": {
                "schemas": {"Problem": _PROBLEM_SCHEMA},
                "securitySchemes": {
                    "bayIdentity": {
                        "type": "apiKey",
                        "in": "header",
                        "name": HEADER,
                        "description": "The identity the ServiceBay gateway signs for each call",
                    }
                },
            },
            "security": [{"bayIdentity": []}] if self.verify_identity else [],
        }

    def make_server(self, host: str | None = None, port: int | None = None) -> ThreadingHTTPServer:
        """A server bound to `host:port` (default `$HOST`, else 127.0.0.1, and `$PORT`),
        not yet serving: tests bind port 0 and read the port it got."""
        if port is None:
            text = os.environ.get("PORT")
            if not text:
                raise RuntimeError(
                    f"service {self.name!r} has no port: pass run(port=...) or set PORT "
                    "(the platform sets it for a deployed service)"
                )
            if not _DIGITS.fullmatch(text) or not 0 <= int(text) <= 65535:
                raise RuntimeError(f"PORT {text!r} is not a port number (0 to 65535)")
            port = int(text)
        if self.verify_identity and self._key() is None:
            raise RuntimeError(
                f"service {self.name!r} verifies the callers' {HEADER} but has no key: set "
                f"{KEY_VARIABLE} (the platform does), or make it with verify_identity=False "
                "to try it locally"
            )
        server = ThreadingHTTPServer((host or os.environ.get("HOST") or "127.0.0.1", port),
                                     _handler_for(self))  # fmt: skip
        server.daemon_threads = True
        return server

    def run(self, port: int | None = None, host: str | None = None) -> None:
        """Serve until interrupted, on `port` (default `$PORT`) of `host` (`$HOST`, else
        127.0.0.1)."""
        server = self.make_server(host, port)
        address, bound = server.server_address[:2]
        sys.stderr.write(f"service {self.name} listening on http://{address!s}:{bound}\n")
        sys.stderr.flush()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()

    def _key(self) -> bytes | None:
        return self.identity_key or identity_key_from_environment()

    def _answer(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """The answer to one request: status, headers and body. Never raises."""
        request_id = headers.get("x-bay-request-id") or uuid.uuid4().hex
        split = urlsplit(target)
        path = split.path
        try:
            if method == "GET" and path == "/openapi.json":
                return _json(200, self.openapi())
            identity = self._identity(headers, request_id)
            if not headers.get("x-bay-request-id") and identity.request_id:
                request_id = identity.request_id
            endpoint, values = self._match(method, path)
            arguments = _arguments(endpoint, values, split.query, body, identity)
            result = endpoint.function(**arguments)
            if inspect.isawaitable(result):
                import asyncio

                async def wait() -> Any:
                    return await result

                result = asyncio.run(wait())
            if result is None and endpoint.status == 200:
                return 204, {}, b""
            return _json(endpoint.status, result)
        except _Refusal as refusal:
            return _problem(
                refusal.status, refusal.detail, path, request_id, refusal.errors, refusal.headers
            )
        except HttpError as error:
            return _problem(
                error.status,
                error.detail,
                path,
                request_id,
                error.errors,
                error.headers,
                title=error.title,
            )
        except Exception:
            sys.stderr.write(
                f"service {self.name}: {method} {path} failed (request {request_id}):\n"
                f"{traceback.format_exc()}"
            )
            sys.stderr.flush()
            return _problem(
                500,
                f"the service {self.name!r} failed to answer; its log has the details "
                f"under request {request_id}",
                path,
                request_id,
            )

    def _identity(self, headers: dict[str, str], request_id: str) -> Identity:
        """The verified caller; unverified, from plain headers, only when verification is off."""
        signed = headers.get(HEADER.lower())
        key = self._key()
        if key is not None and (self.verify_identity or signed):
            try:
                return verify_identity(signed or "", key, service=self.name)
            except IdentityError as error:
                raise _Refusal(
                    401,
                    str(error),
                    headers={"WWW-Authenticate": f'Bay-Identity realm="{self.name}"'},
                ) from None
        if self.verify_identity:  # make_server refuses to start so; be safe all the same
            raise _Refusal(401, f"service {self.name!r} has no {KEY_VARIABLE} to verify callers")
        now = int(time.time())
        teams = tuple(team for team in headers.get("x-bay-teams", "").split(",") if team)
        return Identity(
            user=headers.get("x-bay-user", ""),
            teams=teams,
            request_id=request_id,
            service=self.name,
            issued_at=now,
            expires_at=now,
        )

    def _match(self, method: str, path: str) -> tuple[_Endpoint, dict[str, str]]:
        allowed: list[str] = []
        for endpoint in self._endpoints:
            found = endpoint.pattern.fullmatch(path)
            if found is None:
                continue
            if endpoint.method == method:
                return endpoint, {name: unquote(value) for name, value in found.groupdict().items()}
            allowed.append(endpoint.method)
        if allowed:
            raise _Refusal(
                405,
                f"{path} answers {', '.join(allowed)}, not {method}",
                headers={"Allow": ", ".join(allowed)},
            )
        raise _Refusal(404, f"service {self.name!r} has no endpoint {path}")


class _Refusal(Exception):
    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors or []
        self.headers = headers or {}


def _endpoint(method: str, path: str, function: Callable[..., Any], status: int) -> _Endpoint:
    where = f"{method} {path} ({getattr(function, '__qualname__', function)!r})"
    if not path.startswith("/"):
        raise ServiceDefinitionError(f"{where}: a path starts with '/'")
    if path == "/openapi.json":
        raise ServiceDefinitionError(f"{where}: /openapi.json is the service's own document")
    if not 200 <= status <= 299:
        raise ServiceDefinitionError(f"{where}: a success status is 200 to 299, not {status}")
    doc = inspect.getdoc(function)
    if not doc or not doc.strip():
        raise ServiceDefinitionError(
            f"{where} has no docstring: describe what the endpoint does; the platform "
            "refuses to deploy an undocumented endpoint"
        )
    try:
        hints = get_type_hints(function)
    except Exception as error:
        raise ServiceDefinitionError(f"{where}: its type hints cannot be read: {error}") from None
    placeholders = _PLACEHOLDER.findall(path)
    pattern = _pattern(path, placeholders, where)
    signature = inspect.signature(function)
    params: list[_Param] = []
    for parameter in signature.parameters.values():
        params.append(_param(parameter, hints, method, placeholders, where))
    names = {param.name for param in params}
    for placeholder in placeholders:
        if placeholder not in names:
            raise ServiceDefinitionError(
                f"{where}: the path names {{{placeholder}}} but the function has no such parameter"
            )
    if sum(param.where == "body" for param in params) > 1:
        raise ServiceDefinitionError(f"{where}: at most one dict or list parameter (the body)")
    summary = doc.strip().splitlines()[0]
    returned = hints.get("return")
    return _Endpoint(
        method=method,
        path=path,
        pattern=pattern,
        function=function,
        params=tuple(params),
        status=status,
        summary=summary.strip(),
        description=doc.strip(),
        returns=_plain(returned)[0] if returned is not None else None,
    )


def _pattern(path: str, placeholders: list[str], where: str) -> re.Pattern[str]:
    if len(set(placeholders)) != len(placeholders):
        raise ServiceDefinitionError(f"{where}: a path placeholder is named twice")
    pieces: list[str] = []
    last = 0
    for found in _PLACEHOLDER.finditer(path):
        name = found[1]
        if not name.isidentifier():
            raise ServiceDefinitionError(f"{where}: {{{name}}} is not a parameter name")
        pieces += [re.escape(path[last : found.start()]), f"(?P<{name}>[^/]+)"]
        last = found.end()
    pieces.append(re.escape(path[last:]))
    return re.compile("".join(pieces))


def _plain(hint: Any) -> tuple[Any, bool]:
    """The type under an optional (`X | None`), and whether it was optional."""
    if get_origin(hint) in (Union, types.UnionType):
        others = [arg for arg in get_args(hint) if arg is not type(None)]
        if len(others) == 1:
            return _plain(others[0])[0], True
        return hint, False
    origin = get_origin(hint)
    if origin in (dict, list):
        return origin, False
    return hint, False


def _param(
    parameter: inspect.Parameter,
    hints: dict[str, Any],
    method: str,
    placeholders: list[str],
    where: str,
) -> _Param:
    name = parameter.name
    if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
        raise ServiceDefinitionError(f"{where}: *{name} cannot come from a request; name each")
    if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
        raise ServiceDefinitionError(f"{where}: parameter {name!r} cannot be positional-only")
    if name not in hints:
        raise ServiceDefinitionError(
            f"{where}: parameter {name!r} has no type hint; give it one of str, int, float, "
            "bool (from the query or path), dict or list (the JSON body), or Identity"
        )
    kind, optional = _plain(hints[name])
    has_default = parameter.default is not inspect.Parameter.empty
    default = parameter.default if has_default else None
    required = not has_default and not optional
    if kind is Identity:
        return _Param(name, None, "identity", True, None)
    if kind in (dict, list):
        if method not in _BODY_METHODS:
            raise ServiceDefinitionError(
                f"{where}: parameter {name!r} is a {kind.__name__} body, and only POST, PUT "
                "and PATCH take a body"
            )
        return _Param(name, kind, "body", required, default)
    if kind not in _SCALARS:
        raise ServiceDefinitionError(
            f"{where}: parameter {name!r} is a {hints[name]!r}; use str, int, float, bool "
            "(or one of them | None), dict or list (the body), or Identity"
        )
    if name in placeholders:
        if optional or has_default:
            raise ServiceDefinitionError(
                f"{where}: path parameter {name!r} is always given: no default, not optional"
            )
        return _Param(name, kind, "path", True, None)
    return _Param(name, kind, "query", required, default)


def _arguments(
    endpoint: _Endpoint,
    path_values: dict[str, str],
    query: str,
    body: bytes,
    identity: Identity | None,
) -> dict[str, Any]:
    """The function's arguments from the request, or a 400 listing every bad one."""
    errors: list[dict[str, Any]] = []
    pairs = parse_qsl(query, keep_blank_values=True)
    given: dict[str, list[str]] = {}
    for name, value in pairs:
        given.setdefault(name, []).append(value)
    known = {param.name for param in endpoint.params if param.where == "query"}
    for name in given:
        if name not in known:
            errors.append(field_error(name, "unknown parameter", "unknown"))
    arguments: dict[str, Any] = {}
    for param in endpoint.params:
        if param.where == "identity":
            arguments[param.name] = identity
        elif param.where == "path":
            arguments[param.name] = _convert(param, path_values[param.name], errors)
        elif param.where == "query":
            values = given.get(param.name)
            if not values:
                if param.required:
                    errors.append(field_error(param.name, "is required", "missing"))
                else:
                    arguments[param.name] = param.default
            elif len(values) > 1:
                errors.append(field_error(param.name, "is given more than once", "repeated"))
            else:
                arguments[param.name] = _convert(param, values[0], errors)
        else:
            arguments[param.name] = _body(param, body, errors)
    if errors:
        where = ", ".join(".".join(error["loc"]) for error in errors)
        raise _Refusal(400, f"the request is invalid at: {where}", errors=errors)
    return arguments


def _convert(param: _Param, text: str, errors: list[dict[str, Any]]) -> Any:
    kind = param.kind
    if kind is str:
        return text
    if kind is int and _INTEGER.match(text.strip()):
        try:
            return int(text)
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            pass
    if kind is float:
        try:
            number = float(text)
        except ValueError:
            number = None
        if number is not None and number - number == 0:  # finite: JSON has no NaN
            return number
    if kind is bool and text.lower() in _TRUE | _FALSE:
        return text.lower() in _TRUE
    assert kind is not None
    expected = {int: "an integer", float: "a finite number", bool: "true or false"}
    errors.append(
        field_error(param.name, f"should be {expected[kind]}, not {text!r}", "type", param.where)
    )
    return None


def _body(param: _Param, body: bytes, errors: list[dict[str, Any]]) -> Any:
    assert param.kind is not None
    if not body.strip():
        if param.required:
            errors.append(field_error(param.name, "a JSON body is required", "missing", "body"))
        return param.default
    try:
        value = json.loads(body)
    except ValueError as error:
        errors.append(field_error(param.name, f"is not JSON: {error}", "json", "body"))
        return None
    if not isinstance(value, param.kind):
        wanted = "an object" if param.kind is dict else "an array"
        errors.append(field_error(param.name, f"should be {wanted}", "type", "body"))
        return None
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date | time_of_day):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _json(status: int, value: Any) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps(value, default=_json_default, allow_nan=False, ensure_ascii=False)
    return status, {"Content-Type": "application/json"}, body.encode()


def _problem(
    status: int,
    detail: str,
    instance: str,
    request_id: str,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    *,
    title: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    title = title or {400: "Invalid input"}.get(status) or HTTPStatus(status).phrase
    document: dict[str, Any] = {
        "type": f"urn:servicebay:problem:{title.lower().replace(' ', '-')}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        "request_id": request_id,
    }
    if errors:
        document["errors"] = errors
    body = json.dumps(document, ensure_ascii=False).encode()
    return status, {**(headers or {}), "Content-Type": PROBLEM_JSON}, body


def _schema(kind: Any) -> dict[str, Any]:
    if kind in _SCALARS:
        return {"type": _SCALARS[kind]}
    if kind is dict:
        return {"type": "object"}
    if kind is list:
        return {"type": "array"}
    return {}


_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An RFC 9457 problem; `errors` lists each bad parameter of a 400",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}


def _operation(endpoint: _Endpoint) -> dict[str, Any]:
    problem = {"content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
    operation: dict[str, Any] = {
        "operationId": endpoint.function.__name__,
        "summary": endpoint.summary,
        "description": endpoint.description,
        "parameters": [],
        "responses": {
            str(endpoint.status): {
                "description": "Success",
                "content": {"application/json": {"schema": _schema(endpoint.returns)}},
            },
            "400": {"description": "Invalid input, each problem listed in `errors`", **problem},
            "401": {"description": f"No valid {HEADER}", **problem},
            "500": {"description": "The service failed; the log has the request id", **problem},
        },
    }
    if endpoint.status == 200:
        operation["responses"]["204"] = {
            "description": "Nothing to answer (the function returned None)"
        }
    for param in endpoint.params:
        if param.where in ("query", "path"):
            schema = _schema(param.kind)
            if not param.required and param.default is not None:
                schema["default"] = param.default
            operation["parameters"].append(
                {
                    "name": param.name,
                    "in": param.where,
                    "required": param.required,
                    "schema": schema,
                }
            )
        elif param.where == "body":
            operation["requestBody"] = {
                "required": param.required,
                "content": {"application/json": {"schema": _schema(param.kind)}},
            }
    return operation


def _handler_for(service: Service) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = f"servicebay-service/{service.name}"

        def handle_one(self) -> None:
            length_text = self.headers.get("Content-Length")
            headers = {name.lower(): value for name, value in self.headers.items()}
            if "chunked" in headers.get("transfer-encoding", "").lower():
                answer = _problem(411, "send the body with a Content-Length", self.path, "")
                self.close_connection = True
            elif length_text is not None and (
                not _DIGITS.fullmatch(length_text) or int(length_text) > MAX_BODY_BYTES
            ):
                detail = f"the body is over {MAX_BODY_BYTES} bytes, or its length is not a number"
                answer = _problem(413, detail, self.path, headers.get("x-bay-request-id", ""))
                self.close_connection = True
            else:
                body = self.rfile.read(int(length_text)) if length_text else b""
                answer = service._answer(self.command, self.path, headers, body)
            status, answer_headers, content = answer
            self.send_response(status)
            for name, value in answer_headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_one

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            line = self.requestline
            if not service.log_queries:
                line = _QUERY.sub("?...", line, count=1)
            self.log_message('"%s" %s %s', line, str(code), str(size))

    return Handler
