"""Calling a vendor's JSON API from a code service, with failures as clear problems.

    slack = Upstream("Slack", "https://slack.com/api", bearer=token)
    reply = slack.request("POST", "/chat.postMessage", json={"channel": "C1", "text": "hi"})
    if reply.status != 200:
        raise slack.error(f"answered {reply.status}")

Every connector shipped with ServiceBay calls its vendor through this one helper, and the
SDK is where it lives because a deployed code service gets only its own folder and the
staged SDK on its path. Standard library only (`urllib`), like the rest of the SDK.

What it guarantees: a vendor that cannot be reached, times out or answers something that
is not JSON (or is not HTTP) becomes a 502 or 504 `HttpError` naming the vendor, never a
traceback; a request takes at most its `timeout` in all and reads an answer body of at
most `MAX_ANSWER_BYTES`; redirects are not followed (they would carry the credential to
wherever they point); a URL outside the base URL is refused (a vendor's pagination link
cannot send the token elsewhere); and the `secrets` given never appear in a problem's
detail.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import os
import re
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from servicebay.sdk.service import HttpError

__all__ = ["MAX_ANSWER_BYTES", "Reply", "Upstream", "problem", "setting", "whole_seconds"]

DEFAULT_TIMEOUT = 30.0
"""Seconds a whole request may take, from connecting to the last byte of the answer."""
MAX_ANSWER_BYTES = 16 * 1024 * 1024
"""The largest answer body read (16 MiB); a larger one is a 502, not a service out of memory."""
_REDACTED = "[redacted]"
_WHOLE = re.compile(r"[0-9]{1,12}")


def setting(name: str, default: str | None = None) -> str:
    """The environment variable `name` (or `default`); a clear error naming it when unset.

    Code services get their secrets and settings as environment variables; one that is
    missing is the admin's to fix, so the message says which and where it comes from.
    """
    value = os.environ.get(name, "").strip() or default
    if not value:
        raise RuntimeError(
            f"{name} is not set: the platform passes a service the secrets an admin allowed "
            "for it (`bay secrets allow`) and its settings as environment variables"
        )
    return value


def whole_seconds(value: str | None) -> int | None:
    """`value` (a `Retry-After`, a reset time) as a whole number, when it is one in ASCII
    digits; None otherwise. Not `str.isdigit()`: "²" passes it and then fails `int()`."""
    if value is None:
        return None
    value = value.strip()
    return int(value) if _WHOLE.fullmatch(value) else None


def problem(
    vendor: str,
    detail: str,
    *,
    secrets: Iterable[str] = (),
    status: int = 502,
    headers: dict[str, str] | None = None,
) -> HttpError:
    """The `HttpError` to raise about a vendor, `status` 502 unless told: "{vendor}
    {detail}", with every one of `secrets` replaced by `[redacted]` (a vendor may echo
    what it was sent)."""
    text = f"{vendor} {detail}"
    for secret in secrets:
        if secret.strip():
            text = text.replace(secret, _REDACTED)
    title = "Bad Gateway" if status == 502 else None
    return HttpError(status, text, title=title, headers=headers)


@dataclass(frozen=True)
class Reply:
    """A vendor's answer, whatever its status: connectors decide what each status means."""

    status: int
    headers: Message
    body: bytes
    vendor: str

    def json(self) -> Any:
        """The body as JSON; a 502 naming the vendor when it is not."""
        try:
            return jsonlib.loads(self.body) if self.body.strip() else None
        except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
            raise HttpError(
                502,
                f"{self.vendor} answered {self.status} with a body that is not JSON",
                title="Bad Gateway",
            ) from None

    def retry_after(self) -> int | None:
        """The `Retry-After` header in seconds, if it is a number of them."""
        return whole_seconds(self.headers.get("Retry-After"))


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect would resend the credential to the address it names: answer it as is."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class _Deadline:
    """A request's total time: when it is up, the connection's socket is shut down, which
    ends whatever read is waiting (a socket timeout bounds only each read, and a vendor
    sending a byte at a time would never trip it)."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _HTTPConnection(http.client.HTTPConnection):
    """A connection whose socket the request's deadline shuts when it runs out."""

    def __init__(self, *args: Any, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = deadline

    def connect(self) -> None:
        super().connect()  # HTTPSConnection's too, in _HTTPSConnection (its TLS socket)
        self._deadline.watch(self.sock)


class _HTTPSConnection(_HTTPConnection, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        # the connection classes take the extra `deadline`, which typeshed's protocol lacks
        return self.do_open(_HTTPConnection, req, deadline=self._deadline)  # type: ignore[arg-type]


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        context = self._context  # type: ignore[attr-defined]
        connection = _HTTPSConnection
        return self.do_open(connection, req, context=context, deadline=self._deadline)  # type: ignore[arg-type]


def _opener(deadline: _Deadline) -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(
        _NoRedirects, _HTTPHandler(deadline), _HTTPSHandler(deadline)
    )


class Upstream:
    """One vendor API at `base_url`, called with the same `headers` each time.

    `bearer` is the usual credential, sent as `Authorization: Bearer <token>` and kept out
    of problems like the other `secrets`. `timeout` bounds each request as a whole, and an
    answer body over `max_answer_bytes` is a 502.
    """

    def __init__(
        self,
        vendor: str,
        base_url: str,
        *,
        bearer: str | None = None,
        headers: Mapping[str, str] | None = None,
        secrets: Iterable[str] = (),
        timeout: float = DEFAULT_TIMEOUT,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        split = urlsplit(base_url)
        if split.scheme not in ("http", "https") or not split.netloc:
            raise RuntimeError(f"the {vendor} base URL {base_url!r} is not an http(s) URL")
        self.vendor = vendor
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers or {})
        self.secrets = tuple(secret for secret in secrets if secret.strip())
        if bearer is not None:
            self.headers["Authorization"] = f"Bearer {bearer}"
            self.secrets += (bearer,)
        self.timeout = timeout
        self.max_answer_bytes = max_answer_bytes

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int] | Sequence[tuple[str, str | int]] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """Call `method path` (relative to the base URL, or an absolute URL under it).

        Answers the vendor's reply for any HTTP status; raises a 502/504 `HttpError` when
        there is no reply to give.
        """
        url = self._url(path)
        if query:
            url += ("&" if "?" in url else "?") + urlencode(query, quote_via=quote)
        data = None
        sent = dict(self.headers)
        if json is not None:
            data = jsonlib.dumps(json).encode()
            sent["Content-Type"] = "application/json; charset=utf-8"
        sent.update(headers or {})
        # S310: the base URL is checked to be http(s) and every URL is under it
        request = urllib.request.Request(url, data=data, headers=sent, method=method)  # noqa: S310
        try:
            with _Deadline(self.timeout) as deadline:
                try:
                    with _opener(deadline).open(request, timeout=self.timeout) as answer:
                        reply = Reply(
                            answer.status, answer.headers, self._read(answer), self.vendor
                        )
                except urllib.error.HTTPError as answer:
                    with answer:
                        reply = Reply(answer.code, answer.headers, self._read(answer), self.vendor)
                finally:
                    if deadline.expired:
                        raise self._timeout() from None
                return reply
        except urllib.error.URLError as failure:
            if isinstance(failure.reason, TimeoutError):
                raise self._timeout() from None
            raise self.error(f"could not be reached: {failure.reason}") from None
        except TimeoutError:
            raise self._timeout() from None
        except OSError as failure:
            raise self.error(f"broke off the answer: {failure}") from None
        except http.client.HTTPException as failure:  # a bad status line, a short body, ...
            reason = str(failure).strip() or type(failure).__name__
            raise self.error(f"answered with a broken HTTP message: {reason}") from None

    def error(
        self, detail: str, *, status: int = 502, headers: dict[str, str] | None = None
    ) -> HttpError:
        """A problem about the vendor: `problem(vendor, detail, ...)` with its secrets."""
        return problem(self.vendor, detail, secrets=self.secrets, status=status, headers=headers)

    def rate_limited(self, whose: str, wait: int) -> HttpError:
        """The 429 for a caller when the vendor is rate limiting `whose` calls: retry after
        `wait` seconds (also in `Retry-After`)."""
        return self.error(
            f"is rate limiting {whose}; retry after {wait} s",
            status=429,
            headers={"Retry-After": str(wait)},
        )

    def _read(self, answer: Any) -> bytes:
        """The body, or a 502 when it is larger than `max_answer_bytes` (one more is read
        to tell). A read of a given size does not raise on a short body, so a body shorter
        than its Content-Length (`length` is what was left unread) is raised here."""
        body: bytes = answer.read(self.max_answer_bytes + 1)
        if len(body) > self.max_answer_bytes:
            raise self.error(f"answered more than {self.max_answer_bytes} bytes")
        missing = getattr(answer, "length", None)
        if isinstance(missing, int) and missing > 0:
            raise http.client.IncompleteRead(body, missing)
        return body

    def _timeout(self) -> HttpError:
        return self.error(f"did not answer within {self.timeout:g} s", status=504)

    def _url(self, path: str) -> str:
        if path.startswith("/"):
            return self.base_url + path
        if path == self.base_url or path.startswith(self.base_url + "/"):
            return path
        raise self.error(f"pointed to {path!r}, which is outside {self.base_url}")
