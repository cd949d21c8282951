"""`Client`: call ServiceBay's services and API from a script, with the standard library only.

Scripts run in their own virtual environments, which hold only what their
`requirements.txt` lists, so the SDK cannot lean on httpx or requests. One
`http.client` connection per client is kept alive between calls: a script that makes a
thousand calls opens one connection, not a thousand.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import os
import re
import select
import socket
import ssl
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, time
from http import HTTPStatus
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, urlencode, urlsplit

from servicebay import __version__
from servicebay.sdk.errors import ApiError, ApiUnavailable, ConfigurationError

QueryValue = str | int | float | bool | date | time | None
Params = Mapping[str, QueryValue] | Iterable[tuple[str, QueryValue]]
Headers = Mapping[str, str] | Iterable[tuple[str, str]] | None

KEY_VARIABLES = ("INTERNAL_API_KEY", "BAY_API_KEY")
"""Where the key comes from, first set wins: deployed runs get INTERNAL_API_KEY."""

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token: methods, header names
_KEY = re.compile(r"^[\x21-\x7e]+$")
_PATH_SAFE = "/@:!$&'()*+,;=-._~%"
_QUERY_SAFE = _PATH_SAFE + "?"
_EXCERPT = 300
_REDACTED = "[redacted]"


@dataclass(frozen=True)
class _Base:
    """The server part of BAY_URL: where to connect, and the path prefix to put in front."""

    scheme: str
    host: str
    port: int | None
    netloc: str
    prefix: str

    @property
    def shown(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.prefix}"


class Client:
    """ServiceBay over HTTP: `Client().get("sales/customer", params={"plan": "pro"})`.

    `url` defaults to env BAY_URL, `api_key` to INTERNAL_API_KEY then BAY_API_KEY.
    Answers are parsed JSON (None for 204, str for text, bytes for other media);
    any status >= 400 raises `ApiError`, no answer at all `ApiUnavailable`. Calls from
    several threads are safe and take turns on the one connection; give each thread its
    own client to call in parallel.
    """

    def __init__(
        self, url: str | None = None, api_key: str | None = None, timeout: float = 30.0
    ) -> None:
        self._base = _parse_base(*_setting(url, "the url argument", ("BAY_URL",), _NO_URL))
        key, self._key_source = _setting(api_key, "the api_key argument", KEY_VARIABLES, _NO_KEY)
        self._key = _checked_key(key, self._key_source)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigurationError(
                f"timeout must be a positive number of seconds, not {timeout!r}"
            )
        self._timeout = float(timeout)
        self._headers = {
            "Authorization": f"Bearer {self._key}",
            "Accept": "application/json",
            "User-Agent": f"servicebay-sdk/{__version__}",
        }
        run_id = os.environ.get("BAY_RUN_ID")
        if run_id:
            self._headers["X-Bay-Run-Id"] = _header_value("BAY_RUN_ID", run_id)
        self._connection: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The server's base URL, as calls are made against it."""
        return self._base.shown

    def __repr__(self) -> str:
        return f"<Client {self._base.shown} key from {self._key_source}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the kept-alive connection; a later call opens a new one."""
        with self._lock:
            self._drop()

    def get(self, path: str, params: Params | None = None, *, headers: Headers = None) -> Any:
        return self.request("GET", path, params=params, headers=headers)

    def post(
        self, path: str, json: Any = None, params: Params | None = None, *, headers: Headers = None
    ) -> Any:
        return self.request("POST", path, params=params, json=json, headers=headers)

    def put(
        self, path: str, json: Any = None, params: Params | None = None, *, headers: Headers = None
    ) -> Any:
        return self.request("PUT", path, params=params, json=json, headers=headers)

    def patch(
        self, path: str, json: Any = None, params: Params | None = None, *, headers: Headers = None
    ) -> Any:
        return self.request("PATCH", path, params=params, json=json, headers=headers)

    def delete(self, path: str, params: Params | None = None, *, headers: Headers = None) -> Any:
        return self.request("DELETE", path, params=params, headers=headers)

    def request(
        self,
        method: str,
        path: str,
        params: Params | None = None,
        json: Any = None,
        headers: Headers = None,
    ) -> Any:
        """Call `method path` (relative to the base URL) and return the decoded answer.

        `params` is a dict or a list of pairs (values str, int, float, bool, date; None
        leaves the parameter out); `json` is sent as the JSON body when not None.
        """
        if not isinstance(method, str) or not _TOKEN.match(method):
            raise ValueError(
                f"{method!r} is not an HTTP method; use GET, POST, PUT, PATCH or DELETE"
            )
        method = method.upper()
        target, shown = self._target(path, params)
        send = dict(self._headers)
        body = None
        if json is not None:
            body = _encode_json(json)
            send["Content-Type"] = "application/json"
        for name, value in _header_pairs(headers):
            for existing in [known for known in send if known.lower() == name.lower()]:
                del send[existing]
            send[name] = value
        with self._lock:
            response, data = self._exchange(method, target, body, send, shown)
        return self._answer(method, shown, response, data)

    def _target(self, path: str, params: Params | None) -> tuple[str, str]:
        """The request target (path and query) and the URL to name in errors (no query)."""
        if not isinstance(path, str):
            raise TypeError(f"path must be a str like 'sales/customer', not {type(path).__name__}")
        path_part, _, query_part = path.partition("#")[0].partition("?")
        if "://" in path_part or path_part.startswith("//"):
            raise ValueError(
                "path must be relative to the server, like 'sales/customer', not a full URL; "
                "the server comes from BAY_URL (or Client(url=...))"
            )
        full_path = f"{self._base.prefix}/{quote(path_part.lstrip('/'), safe=_PATH_SAFE)}"
        query = [quote(query_part, safe=_QUERY_SAFE)] if query_part else []
        encoded = urlencode(_query_pairs(params))
        if encoded:
            query.append(encoded)
        target = full_path + ("?" + "&".join(query) if query else "")
        return target, f"{self._base.scheme}://{self._base.netloc}{full_path}"

    def _exchange(
        self,
        method: str,
        target: str,
        body: bytes | None,
        headers: dict[str, str],
        shown: str,
        *,
        may_retry: bool = True,
    ) -> tuple[http.client.HTTPResponse, bytes]:
        """Send and read one answer, reconnecting once when a kept-alive connection was dropped.

        Only a reused connection that fails before any answer byte is retried: the server
        closed it while idle, so the call never reached it.
        """
        connection, reused = self._connect()
        try:
            connection.request(method, target, body=body, headers=headers)
            response = connection.getresponse()
            return response, response.read()
        except (OSError, http.client.HTTPException) as error:
            self._drop()
            # RemoteDisconnected is a ConnectionResetError: the server closed without a byte.
            if reused and may_retry and isinstance(error, ConnectionResetError | BrokenPipeError):
                return self._exchange(method, target, body, headers, shown, may_retry=False)
            raise self._unavailable(method, shown, error) from None

    def _connect(self) -> tuple[http.client.HTTPConnection, bool]:
        """The kept-alive connection, and whether it is already open (reused)."""
        if self._connection is None:
            base = self._base
            if base.scheme == "https":
                self._connection = http.client.HTTPSConnection(
                    base.host,
                    base.port,
                    timeout=self._timeout,
                    context=ssl.create_default_context(),
                )
            else:
                self._connection = http.client.HTTPConnection(
                    base.host, base.port, timeout=self._timeout
                )
        connection = self._connection
        if connection.sock is not None and _closed_by_peer(connection.sock):
            connection.close()
        return connection, connection.sock is not None

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.close()

    def _unavailable(self, method: str, shown: str, error: BaseException) -> ApiUnavailable:
        return ApiUnavailable(
            detail=self._scrub(_describe(error, self._base, self._timeout)),
            method=method,
            url=shown,
        )

    def _answer(
        self, method: str, shown: str, response: http.client.HTTPResponse, data: bytes
    ) -> Any:
        status = response.status
        content_type = response.headers.get_content_type()
        if status >= 400:
            raise self._error(method, shown, response, content_type, _decode(response, data))
        if status in (204, 205, 304) or not data:
            return None
        if _is_json(content_type):
            try:
                return jsonlib.loads(_decode(response, data))
            except ValueError as error:
                raise ApiError(
                    status=status,
                    title="Unreadable answer",
                    detail=self._scrub(f"it says {content_type} but is not JSON ({error})"),
                    method=method,
                    url=shown,
                    request_id=response.headers.get("X-Request-ID"),
                ) from None
        if _is_text(content_type):
            return _decode(response, data)
        return data

    def _error(
        self,
        method: str,
        shown: str,
        response: http.client.HTTPResponse,
        content_type: str,
        text: str,
    ) -> ApiError:
        """The ApiError for an error answer: its problem fields, or the start of its text."""
        status = response.status
        problem: Any = None
        if _is_json(content_type):
            try:
                problem = jsonlib.loads(text)
            except ValueError:
                problem = None
        phrase = _phrase(status, response.reason)
        request_id = response.headers.get("X-Request-ID")
        if isinstance(problem, dict):
            detail = problem.get("detail")
            errors = problem.get("errors")
            if isinstance(detail, list) and errors is None:  # a framework's validation list
                detail, errors = None, detail
            return ApiError(
                status=status,
                title=self._scrub(str(problem.get("title") or phrase)),
                detail=self._scrub(str(detail or "")),
                type=self._scrub(str(problem["type"])) if problem.get("type") else None,
                errors=self._scrub(errors) if isinstance(errors, list) else None,
                request_id=str(problem.get("request_id") or request_id or "") or None,
                method=method,
                url=shown,
            )
        return ApiError(
            status=status,
            title=phrase,
            detail=_excerpt(self._scrub(text)),
            method=method,
            url=shown,
            request_id=request_id,
        )

    def _scrub(self, value: Any) -> Any:
        """`value` with the key blanked wherever a server or a library echoed it."""
        if isinstance(value, str):
            return value.replace(self._key, _REDACTED)
        if isinstance(value, list):
            return [self._scrub(item) for item in value]
        if isinstance(value, dict):
            return {self._scrub(name): self._scrub(item) for name, item in value.items()}
        return value


_NO_URL = (
    "no ServiceBay URL: set BAY_URL (the platform sets it for deployed scripts; "
    "locally, e.g. export BAY_URL=http://127.0.0.1:8600), or pass Client(url=...)"
)
_NO_KEY = (
    "no API key: set INTERNAL_API_KEY or BAY_API_KEY (the platform sets INTERNAL_API_KEY "
    "for deployed scripts; `bay keys create` makes one for you), or pass Client(api_key=...)"
)


def _setting(
    given: str | None, argument: str, variables: tuple[str, ...], missing: str
) -> tuple[str, str]:
    """The value and where it came from: the argument, else the first variable set."""
    if given:
        return given, argument
    for variable in variables:
        value = os.environ.get(variable, "").strip()
        if value:
            return value, variable
    raise ConfigurationError(missing)


def _parse_base(raw: str, source: str) -> _Base:
    if not isinstance(raw, str):
        raise ConfigurationError(f"{source} must be a str URL, not {type(raw).__name__}")
    split = urlsplit(raw.strip())
    example = "like https://bay.example.com or http://127.0.0.1:8600"
    # What may be repeated in a message: never a query string or user info (a key may hide there).
    visible = raw.strip().partition("?")[0].partition("#")[0].rpartition("@")[2]
    if split.scheme not in ("http", "https"):
        if "://" not in raw:
            raise ConfigurationError(
                f"{source} {visible!r} has no scheme: write https://{visible} (or http://)"
            )
        raise ConfigurationError(f"{source} must be an http:// or https:// URL, {example}")
    shown = f"{split.scheme}://{split.hostname or ''}"
    if split.username is not None or split.password is not None:
        raise ConfigurationError(
            f"{source} ({shown}) holds a user name or password: remove it; the key goes in "
            "INTERNAL_API_KEY or BAY_API_KEY"
        )
    if split.query or split.fragment or raw.rstrip().endswith(("?", "#")):
        raise ConfigurationError(
            f"{source} ({shown}) has a query string or fragment: give only the server's "
            f"address, {example}"
        )
    try:
        port = split.port
    except ValueError:
        raise ConfigurationError(f"{source} ({shown}) has an invalid port, {example}") from None
    if not split.hostname:
        raise ConfigurationError(f"{source} {visible!r} names no host, {example}")
    return _Base(split.scheme, split.hostname, port, split.netloc, split.path.rstrip("/"))


def _checked_key(key: str, source: str) -> str:
    """The key, refused (without being echoed) when it could not be a header value."""
    if not isinstance(key, str):
        raise ConfigurationError(f"the API key ({source}) must be a str, not {type(key).__name__}")
    key = key.strip()
    if not _KEY.match(key):
        raise ConfigurationError(
            f"the API key from {source} contains a space, line break or non-ASCII character; "
            "copy it again (keys start with bay_)"
        )
    return key


def _header_value(name: str, value: str) -> str:
    if not isinstance(value, str) or not value.isascii() or any(c in value for c in "\r\n\0"):
        raise ValueError(f"header {name!r}: a value must be ASCII text without line breaks")
    return value


def _header_pairs(headers: Headers) -> list[tuple[str, str]]:
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    pairs = []
    for name, value in items:
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise ValueError(f"{name!r} is not a valid header name (letters, digits, -)")
        pairs.append((name, _header_value(name, value)))
    return pairs


def _query_pairs(params: Params | None) -> list[tuple[str, str]]:
    if params is None:
        return []
    items = params.items() if isinstance(params, Mapping) else params
    pairs = []
    for item in items:
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise TypeError(f"params must be a dict or a list of (name, value) pairs, not {item!r}")
        name, value = item
        if not isinstance(name, str):
            raise TypeError(f"query parameter names must be str, not {type(name).__name__}")
        text = _query_value(name, value)
        if text is not None:
            pairs.append((name, text))
    return pairs


def _query_value(name: str, value: QueryValue) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, date | time):
        return value.isoformat()
    raise TypeError(
        f"query parameter {name!r}: a {type(value).__name__} cannot be sent; "
        "give a str, int, float, bool or date"
    )


def _encode_json(body: Any) -> bytes:
    def default(value: Any) -> str:
        if isinstance(value, date | time):
            return value.isoformat()
        raise TypeError(
            f"the json body holds a {type(value).__name__}, which is not JSON; "
            "convert it (to str, int, float, list or dict) first"
        )

    try:
        return jsonlib.dumps(body, default=default, allow_nan=False, ensure_ascii=False).encode()
    except ValueError:
        raise ValueError(
            "the json body holds NaN or infinity, which JSON cannot carry; use None instead"
        ) from None


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether an idle kept-alive socket has been closed by the server (it reads as ready)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _describe(error: BaseException, base: _Base, timeout: float) -> str:
    where = base.shown
    if isinstance(error, ConnectionRefusedError):
        return f"connection refused: is ServiceBay running at {where}? (check BAY_URL)"
    if isinstance(error, socket.gaierror):
        return f"cannot find the host of {where} ({error.strerror}); check BAY_URL"
    if isinstance(error, TimeoutError):
        return f"{where} did not answer within {timeout:g} s (Client(timeout=...) to wait longer)"
    if isinstance(error, ssl.SSLError):
        return f"TLS with {where} failed: {error.reason or error}"
    if isinstance(error, ConnectionError):
        return f"{where} closed the connection without answering"
    if isinstance(error, http.client.HTTPException):
        return f"{where} did not answer in HTTP ({type(error).__name__}); is BAY_URL right?"
    return f"cannot reach {where}: {error}"


def _decode(response: http.client.HTTPResponse, data: bytes) -> str:
    """The answer's text in its declared charset (UTF-8 when none, or an unknown one)."""
    try:
        return data.decode(response.headers.get_content_charset() or "utf-8", "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def _phrase(status: int, reason: str) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return reason or "Error"


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


def _is_text(content_type: str) -> bool:
    return (
        content_type.startswith("text/")
        or content_type in ("application/xml", "application/javascript")
        or content_type.endswith("+xml")
    )


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _EXCERPT else flat[: _EXCERPT - 1] + "…"
