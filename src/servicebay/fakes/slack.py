"""Slack's Web API, `chat.postMessage`, as Slack answers it.

Slack answers HTTP 200 with `{"ok": false, "error": "<code>"}` for most failures
(`not_authed`, `invalid_auth`, `channel_not_found`, `no_text`, `msg_too_long`), and 429
with `Retry-After` when a method's rate limit is hit. The token comes in
`Authorization: Bearer`, or as a `token` form field; the body is JSON or a form.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl

from servicebay.fakes.base import Answer, FakeServer, Received

DEMO_TOKEN = "xoxb-0000000000-0000000000-ServiceBayDemoToken"  # noqa: S105 (the fake's own, printed for the demo)
MAX_TEXT = 40_000


@dataclass(frozen=True)
class Posted:
    channel: str
    """The channel's id."""
    text: str
    ts: str


class FakeSlack(FakeServer):
    """A workspace with `channels` (name -> id) where the bot holding `token` may post."""

    name = "slack"
    not_found = {"ok": False, "error": "unknown_method"}

    def __init__(
        self,
        *,
        token: str = DEMO_TOKEN,
        channels: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.token = token
        self.channels = channels or {"general": "C0GENERAL", "marketing": "C0MARKETING"}
        self.messages: list[Posted] = []
        self._counter = itertools.count(1)
        self._state = threading.Lock()
        self.route("POST", r"/api/chat\.postMessage", self._post_message)

    @property
    def base_url(self) -> str:
        """What a client uses in place of https://slack.com/api."""
        return f"{self.url}/api"

    def describe(self) -> str:
        return f"Slack Web API fake: SLACK_BASE_URL={self.base_url} SLACK_BOT_TOKEN={self.token}"

    def rate_limit(self, retry_after: int = 30) -> None:
        """Answer the next message with 429 and `Retry-After: retry_after`, as Slack does."""
        answer = Answer(429, _error("ratelimited"), {"Retry-After": str(retry_after)})
        self.interject("POST", r"/api/chat\.postMessage", answer)

    def _post_message(self, received: Received) -> Answer:
        fields = _fields(received)
        bearer = received.headers.get("authorization", "")
        token = bearer.removeprefix("Bearer ") if bearer.startswith("Bearer ") else None
        token = token or str(fields.get("token") or "")
        if not token:
            return Answer(200, _error("not_authed"))
        if token != self.token:
            return Answer(200, _error("invalid_auth"))
        channel = self._channel_id(str(fields.get("channel") or ""))
        if channel is None:
            return Answer(200, _error("channel_not_found"))
        text = fields.get("text")
        if not isinstance(text, str) or not text:
            return Answer(200, _error("no_text"))
        if len(text) > MAX_TEXT:
            return Answer(200, _error("msg_too_long"))
        ts = f"{int(time.time())}.{next(self._counter):06d}"
        with self._state:
            self.messages.append(Posted(channel, text, ts))
        message = {
            "type": "message",
            "subtype": "bot_message",
            "text": text,
            "ts": ts,
            "bot_id": "B0SERVICEBAY",
        }
        return Answer(200, {"ok": True, "channel": channel, "ts": ts, "message": message})

    def _channel_id(self, given: str) -> str | None:
        """Slack takes a channel's id or its name (with or without `#`)."""
        if given in self.channels.values():
            return given
        return self.channels.get(given.removeprefix("#").lower())


def _fields(received: Received) -> dict[str, object]:
    content_type = received.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        body = received.json
        return body if isinstance(body, dict) else {}
    if content_type.startswith("application/x-www-form-urlencoded"):
        return dict(parse_qsl(received.body.decode("utf-8", "replace")))
    return {}


def _error(code: str) -> dict[str, object]:
    return {"ok": False, "error": code}
