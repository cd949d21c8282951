"""Calling a vendor's JSON API from a code service, with failures as clear problems.

    slack = Upstream("Slack", "https://slack.com/api", bearer=token)
    reply = slack.request("POST", "/chat.postMessage", json={"channel": "C1", "text": "hi"})
    if reply.status != 200:
        raise slack.error(f"answered {reply.status}")

Every connector shipped with ServiceBay calls its vendor through this one helper, and the
SDK is where it lives because a deployed code service gets only its own folder and the
staged SDK on its path. Standard library only (`urllib`), like the rest of the SDK.

What it guarantees: a vendor that cannot be reached, times out or answers something that
is not JSON (or is not HTTP) becomes a 502 or 504 `HttpError` naming the vendor, never a traceback;
redirects are not followed (they would carry the credential to wherever they point); a
URL outside the base URL is refused (a vendor's pagination link cannot send the token
elsewhere); and the `secrets` given never appear in a problem's detail.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import os
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from servicebay.sdk.service import HttpError

__all__ = ["Reply", "Upstream", "problem", "setting"]

DEFAULT_TIMEOUT = 30.0
_REDACTED = "[redacted]"


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


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect would resend the credential to the address it names: answer it as is."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


class Upstream:
    """One vendor API at `base_url`, called with the same `headers` each time.

    `bearer` is the usual credential, sent as `Authorization: Bearer <token>` and kept out
    of problems like the other `secrets`.
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
            with _OPENER.open(request, timeout=self.timeout) as answer:
                return Reply(answer.status, answer.headers, answer.read(), self.vendor)
        except urllib.error.HTTPError as answer:
            with answer:
                return Reply(answer.code, answer.headers, answer.read(), self.vendor)
        except urllib.error.URLError as failure:
            if isinstance(failure.reason, TimeoutError):
                raise self._timeout() from None
            raise self.error(f"could not be reached: {failure.reason}") from None
        except TimeoutError:
            raise self._timeout() from None
        except OSError as failure:
            raise self.error(f"broke off the answer: {failure}") from None
        except http.client.HTTPException as failure:  # a bad status line, a short body, ...
            reason = str(failure) or type(failure).__name__
            raise self.error(f"answered with a broken HTTP message: {reason}") from None

    def error(
        self, detail: str, *, status: int = 502, headers: dict[str, str] | None = None
    ) -> HttpError:
        """A problem about the vendor: `problem(vendor, detail, ...)` with its secrets."""
        return problem(self.vendor, detail, secrets=self.secrets, status=status, headers=headers)

    def _timeout(self) -> HttpError:
        return self.error(f"did not answer within {self.timeout:g} s", status=504)

    def _url(self, path: str) -> str:
        if path.startswith("/"):
            return self.base_url + path
        if path == self.base_url or path.startswith(self.base_url + "/"):
            return path
        raise self.error(f"pointed to {path!r}, which is outside {self.base_url}")
