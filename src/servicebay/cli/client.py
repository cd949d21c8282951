"""Finding the server and the caller's key, and talking to `/api/v1` with clean errors.

Where the URL and key come from, first match wins: the global `--url`/`--key` options,
then `BAY_URL` and `BAY_API_KEY` (or `INTERNAL_API_KEY`, which deployments receive),
then the file `bay login` wrote; the URL defaults to a local `bay serve`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import quote

import httpx
import typer

from servicebay import __version__
from servicebay.cli.config import load_login
from servicebay.cli.output import Row, fail

DEFAULT_URL = "http://127.0.0.1:8600"
PAGE_SIZE = 500

_HINTS = {
    401: "Check the key: run `bay login`, or set BAY_API_KEY.",
    403: "Ask an admin for this right; `bay permissions check` explains who may do what.",
    404: "Check the name or id; the `list` commands show what exists.",
}


@dataclass(frozen=True)
class Target:
    """The global `--url`/`--key` options, as given on the command line."""

    url: str | None = None
    key: str | None = None


def target_of(ctx: typer.Context) -> Target:
    return ctx.obj if isinstance(ctx.obj, Target) else Target()


def resolve_url(option: str | None) -> str:
    url = option or os.environ.get("BAY_URL") or load_login().get("url") or DEFAULT_URL
    if not url.startswith(("http://", "https://")):
        fail(f"{url!r} is not a URL", "Give one like http://127.0.0.1:8600 (--url or BAY_URL).")
    return str(url).rstrip("/")


def resolve_key(option: str | None) -> str | None:
    return (
        option
        or os.environ.get("BAY_API_KEY")
        or os.environ.get("INTERNAL_API_KEY")
        or load_login().get("key")
    )


def api_path(*segments: str) -> str:
    """`/api/v1/...` with each segment escaped, so an e-mail or id cannot change the route."""
    return "/api/v1/" + "/".join(quote(segment, safe="@:") for segment in segments)


def connect(ctx: typer.Context) -> Api:
    """The API client for an administrative command; no key is a clear error."""
    target = target_of(ctx)
    url = resolve_url(target.url)
    key = resolve_key(target.key)
    if not key:
        fail(
            "no API key",
            "Run `bay login`, or set BAY_API_KEY (and BAY_URL), then try again.",
        )
    return Api(url, key)


class Api:
    """A thin httpx client whose failures end the command with a readable message."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self._http = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {key}", "User-Agent": f"bay/{__version__}"},
            timeout=30.0,
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """The decoded JSON answer (None for 204), or the command ends with the problem."""
        return self.exchange(method, path, json=json, params=params)[1]

    def exchange(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> tuple[int, Any]:
        """Like `request`, with the success status too (201 created, 200 replaced, ...)."""
        with self._guard():
            response = self._http.request(method, path, json=json, params=_query(params))
        if response.is_error:
            self._fail(response)
        if response.status_code == 204 or not response.content:
            return response.status_code, None
        try:
            return response.status_code, response.json()
        except ValueError:
            fail(
                f"{self.url}{path} did not answer JSON",
                "Is BAY_URL the address of a ServiceBay gateway?",
            )

    def collect(
        self, path: str, params: Mapping[str, Any] | None = None, *, limit: int | None = None
    ) -> list[Row]:
        """Every item of a list endpoint (or the first `limit`), following `next` cursors."""
        query = dict(params or {})
        items: list[Row] = []
        while limit is None or len(items) < limit:
            wanted = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - len(items))
            page = self.request("GET", path, params={**query, "limit": wanted})
            items.extend(page["data"])
            if not page.get("next") or not page["data"]:
                break
            query["cursor"] = page["next"]
        return items

    def probe(self, path: str) -> Any:
        """A GET whose answer is only nice to have (an example, a hint): its JSON, or None
        when it cannot be had, without ending the command."""
        try:
            response = self._http.get(path)
            return response.json() if response.is_success else None
        except (httpx.HTTPError, ValueError):
            return None

    @contextmanager
    def stream(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[Iterator[str]]:
        """The lines of a long answer (an export), read as they arrive."""
        with self._guard(), self._http.stream("GET", path, params=_query(params)) as response:
            if response.is_error:
                response.read()
                self._fail(response)
            yield response.iter_lines()

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except httpx.ConnectError:
            fail(f"cannot reach ServiceBay at {self.url}: is `bay serve` running? (set BAY_URL)")
        except httpx.TimeoutException:
            fail(f"ServiceBay at {self.url} did not answer in time", "Try again in a moment.")
        except httpx.HTTPError as exc:
            fail(f"talking to ServiceBay at {self.url} failed: {exc}")

    def _fail(self, response: httpx.Response) -> NoReturn:
        """Turn a problem+json answer into `Error: title: detail`, field errors, request id."""
        try:
            problem = response.json()
        except ValueError:
            problem = None
        if not isinstance(problem, dict):
            problem = {}
        title = problem.get("title") or response.reason_phrase or f"HTTP {response.status_code}"
        detail = problem.get("detail")
        lines = [_field_error(item) for item in problem.get("errors") or []]
        lines = [line for line in lines if not (detail and line.endswith(f": {detail}"))]
        request_id = problem.get("request_id") or response.headers.get("x-request-id")
        if request_id:
            lines.append(f"request id: {request_id}")
        if not problem:
            lines.append(f"{self.url} answered HTTP {response.status_code} without a problem.")
        if response.status_code == 429:
            lines.append(f"Wait {response.headers.get('retry-after', 'a few')} s and try again.")
        elif response.status_code in _HINTS:
            lines.append(_HINTS[response.status_code])
        fail(f"{title}: {detail}" if detail else str(title), *lines)


def _query(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Drop unset filters so the server applies its defaults."""
    return {name: value for name, value in (params or {}).items() if value is not None}


def _field_error(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    where = [str(part) for part in item.get("loc") or [] if part != "body"]
    message = item.get("msg") or item.get("message") or "invalid"
    return f"{'.'.join(where)}: {message}" if where else str(message)
