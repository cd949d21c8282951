"""The webhook call a script is answering: `request` in, `webhook_response` out.

The platform runs a webhook deployment's script once per call. It writes the incoming
call as JSON to the file named by `BAY_WEBHOOK_REQUEST` and reads the answer from the
file named by `BAY_WEBHOOK_RESPONSE`; files rather than pipes keep the script's stdout
free for its logs. Standard library only, like the rest of the SDK.

    from servicebay.webhook import request, webhook_response
    webhook_response.send_response(data={"hello": request.args.get("name")})
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, time
from pathlib import Path
from typing import Any

__all__ = [
    "REQUEST_VARIABLE",
    "RESPONSE_VARIABLE",
    "Headers",
    "WebhookError",
    "WebhookRequest",
    "WebhookResponse",
    "request",
    "webhook_response",
]

REQUEST_VARIABLE = "BAY_WEBHOOK_REQUEST"
RESPONSE_VARIABLE = "BAY_WEBHOOK_RESPONSE"

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 header field name
_CHARSET = re.compile(r";\s*charset\s*=\s*\"?([^\";\s]+)", re.IGNORECASE)
_PLATFORM_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})
_NO_BODY_STATUSES = frozenset({204, 304})


class WebhookError(RuntimeError):
    """The webhook call cannot be read or answered: not a webhook run, or answered twice."""


class Headers(Mapping[str, str]):
    """HTTP headers: names match whatever their case; a repeated header gives its first
    value, and `get_all` gives every one."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._pairs = [(name, value) for name, value in pairs]

    def __getitem__(self, name: str) -> str:
        values = self.get_all(name)
        if not values:
            raise KeyError(name)
        return values[0]

    def get_all(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self._pairs if key.lower() == wanted]

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for name, _ in self._pairs:
            if name.lower() not in seen:
                seen.add(name.lower())
                yield name

    def __len__(self) -> int:
        return len({name.lower() for name, _ in self._pairs})

    def __repr__(self) -> str:
        return f"Headers({self._pairs!r})"


@dataclass(frozen=True)
class _Call:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: Headers
    body: bytes


class WebhookRequest:
    """The incoming call, read from the file named by BAY_WEBHOOK_REQUEST on first use.

    Reading lazily lets a module import `request` at its top and still be imported
    (by tests, or by `bay run --local`) outside a webhook run.
    """

    def __init__(self) -> None:
        self._call: _Call | None = None

    def _load(self) -> _Call:
        if self._call is None:
            self._call = _read_call(_file_named_by(REQUEST_VARIABLE, "reading the webhook call"))
        return self._call

    @property
    def method(self) -> str:
        """`GET`, `POST`, ..."""
        return self._load().method

    @property
    def path(self) -> str:
        """What followed the webhook's own address: `/extra/path` for `/hooks/NAME/extra/path`."""
        return self._load().path

    @property
    def query(self) -> list[tuple[str, str]]:
        """Every query parameter, in order, repeats included."""
        return list(self._load().query)

    @property
    def args(self) -> dict[str, str]:
        """The query parameters by name (the first value of a repeated one)."""
        found: dict[str, str] = {}
        for name, value in self._load().query:
            found.setdefault(name, value)
        return found

    @property
    def headers(self) -> Headers:
        return self._load().headers

    @property
    def body(self) -> bytes:
        return self._load().body

    @property
    def text(self) -> str:
        """The body as text, in the charset its Content-Type names (UTF-8 by default)."""
        match = _CHARSET.search(self.headers.get("content-type", ""))
        try:
            return self.body.decode(match[1] if match else "utf-8", "replace")
        except LookupError:
            return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON; None for an empty body; ValueError saying why otherwise."""
        if not self.body.strip():
            return None
        try:
            return json.loads(self.body)
        except ValueError as error:
            content_type = self.headers.get("content-type", "none")
            raise ValueError(
                f"the webhook call's body is not JSON ({error}); its Content-Type is "
                f"{content_type!r}: read request.text or request.body instead"
            ) from None

    def __repr__(self) -> str:
        if self._call is None:
            return f"<webhook request, read from ${REQUEST_VARIABLE} on first use>"
        return f"<webhook request {self._call.method} {self._call.path}>"


class WebhookResponse:
    """Answers the webhook call: `send_response` once per run."""

    def __init__(self) -> None:
        self._sent_status: int | None = None

    @property
    def sent(self) -> bool:
        return self._sent_status is not None

    def send_response(
        self,
        data: Any = None,
        headers: Mapping[str, str | int] | Iterable[tuple[str, str | int]] | None = None,
        status_code: int = 200,
    ) -> None:
        """Answer the call: a dict or list goes as JSON, a str as text, bytes as they are.

        A Content-Type in `headers` wins over the one chosen from `data`. The answer is
        written to the file named by BAY_WEBHOOK_RESPONSE in one step, so the platform
        never reads half of it.
        """
        if self._sent_status is not None:
            raise WebhookError(
                f"the webhook call was already answered (status {self._sent_status}); "
                "send_response answers once per run"
            )
        status = _checked_status(status_code)
        pairs = _checked_headers(headers)
        body, content_type = _encode(data)
        if body and (status in _NO_BODY_STATUSES or status < 200):
            raise ValueError(
                f"a {status} answer carries no body: pass data=None, or use status_code=200"
            )
        if content_type and not any(name.lower() == "content-type" for name, _ in pairs):
            pairs.append(("content-type", content_type))
        target = _file_named_by(RESPONSE_VARIABLE, "answering the webhook call")
        document = {
            "status_code": status,
            "headers": [list(pair) for pair in pairs],
            "body_base64": base64.b64encode(body).decode("ascii"),
        }
        _write_atomically(target, json.dumps(document).encode())
        self._sent_status = status


def _file_named_by(variable: str, purpose: str) -> Path:
    value = os.environ.get(variable)
    if not value:
        raise WebhookError(
            f"{purpose} needs the environment variable {variable}, which is not set: this "
            "script is not running for a webhook call. The platform sets it when a call "
            "arrives; to try the script on your machine, run `bay run DIR --local`."
        )
    return Path(value)


def _read_call(path: Path) -> _Call:
    """The call in `path`, each field checked: a malformed file is a platform fault."""

    def malformed(problem: str) -> WebhookError:
        return WebhookError(
            f"the webhook call in {path} (${REQUEST_VARIABLE}) is malformed: {problem}"
        )

    try:
        document = json.loads(path.read_bytes())
    except OSError as error:
        raise WebhookError(
            f"cannot read the webhook call from {path} (${REQUEST_VARIABLE}): {error.strerror}"
        ) from None
    except ValueError as error:
        raise malformed(f"not JSON ({error})") from None
    if not isinstance(document, dict):
        raise malformed("not a JSON object")
    method, call_path = document.get("method"), document.get("path", "/")
    if not isinstance(method, str) or not _TOKEN.match(method):
        raise malformed('"method" must be an HTTP method like "POST"')
    if not isinstance(call_path, str):
        raise malformed('"path" must be a string')
    query = _pairs(document.get("query", []), "query", malformed)
    headers = _pairs(document.get("headers", []), "headers", malformed)
    encoded = document.get("body_base64", "")
    if not isinstance(encoded, str):
        raise malformed('"body_base64" must be a string')
    try:
        body = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise malformed('"body_base64" is not base64') from None
    return _Call(method.upper(), call_path, query, Headers(headers), body)


def _pairs(
    value: Any, field: str, malformed: Callable[[str], WebhookError]
) -> list[tuple[str, str]]:
    if not isinstance(value, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(part, str) for part in pair)
        for pair in value
    ):
        raise malformed(f'"{field}" must be a list of [name, value] string pairs')
    return [(name, text) for name, text in value]


def _checked_status(status_code: Any) -> int:
    if isinstance(status_code, bool) or not isinstance(status_code, int):
        raise TypeError(f"status_code must be an int like 200, not {status_code!r}")
    if not 100 <= status_code <= 599:
        raise ValueError(f"status_code {status_code} is not an HTTP status (100 to 599)")
    return status_code


def _checked_headers(
    headers: Mapping[str, str | int] | Iterable[tuple[str, str | int]] | None,
) -> list[tuple[str, str]]:
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    checked = []
    for item in items:
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise TypeError(
                f"headers must be a dict or a list of (name, value) pairs, not {item!r}"
            )
        name, value = item
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise ValueError(
                f"{name!r} is not a valid header name: use letters, digits and '-' "
                "(like X-Report-Id)"
            )
        if name.lower() in _PLATFORM_HEADERS:
            raise ValueError(f"header {name!r} is set by the platform: leave it out")
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise TypeError(f"header {name!r}: the value must be a str or an int")
        text = str(value)
        if any(char in text for char in "\r\n\0"):
            raise ValueError(
                f"header {name!r}: the value holds a line break or NUL, which would split "
                "the answer's headers; remove it"
            )
        checked.append((name, text))
    return checked


def _encode(data: Any) -> tuple[bytes, str | None]:
    """The body, and the Content-Type it implies (None when there is no body)."""
    if data is None:
        return b"", None
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data), "application/octet-stream"
    if isinstance(data, str):
        return data.encode(), "text/plain; charset=utf-8"

    def default(value: Any) -> str:
        if isinstance(value, date | time):
            return value.isoformat()
        raise TypeError(
            f"data holds a {type(value).__name__}, which is not JSON: give a dict, list, "
            "str or bytes (convert other values first)"
        )

    try:
        return json.dumps(data, default=default, allow_nan=False).encode(), "application/json"
    except ValueError:
        raise ValueError("data holds NaN or infinity, which JSON cannot carry") from None


def _write_atomically(target: Path, content: bytes) -> None:
    """Write next to `target`, then rename over it: a reader sees nothing or everything."""
    try:
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    except OSError as error:
        raise WebhookError(
            f"cannot write the answer to {target} (${RESPONSE_VARIABLE}): {error.strerror}"
        ) from None
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(content)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


request = WebhookRequest()
webhook_response = WebhookResponse()
