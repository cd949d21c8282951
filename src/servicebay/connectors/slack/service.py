"""Slack: post a message to a channel, as the bot whose token the admin stored.

Settings: `SLACK_BOT_TOKEN` (secret, `xoxb-...`), `SLACK_BASE_URL` (default
https://slack.com/api; a fake's address in tests and `bay demo`).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from servicebay.sdk import Service
from servicebay.sdk.service import field_error, invalid
from servicebay.sdk.upstream import Upstream, setting

app = Service(
    "slack",
    description="Post messages to the workspace's Slack channels as the bot.",
    log_queries=False,  # the message is a query parameter
)

REFUSED_TOKEN = frozenset(
    {"not_authed", "invalid_auth", "account_inactive", "token_revoked", "token_expired"}
)
"""Slack's answers saying the stored token is wrong: the admin's to fix, not the caller's."""
CALLER_ERRORS = {
    "channel_not_found": 404,
    "not_in_channel": 403,
    "is_archived": 409,
    "msg_too_long": 400,
    "no_text": 400,
}
"""Slack's answers about what the caller asked for, and the status each becomes."""


@cache
def slack() -> Upstream:
    return Upstream(
        "Slack",
        setting("SLACK_BASE_URL", "https://slack.com/api"),
        bearer=setting("SLACK_BOT_TOKEN"),
    )


@app.post("/post_message_to_channel")
def post_message_to_channel(channel_name: str, message: str) -> dict[str, Any]:
    """Post `message` to the channel `channel_name` (a name like `marketing`, or an id).

    Answers the channel's id and the message's `ts`. A channel the bot cannot see is a 404,
    one it is not a member of a 403; Slack's rate limit is a 429 with Slack's Retry-After.
    """
    errors = [
        field_error(name, f"is empty: {why}", "missing")
        for name, value, why in (
            ("channel_name", channel_name, "give a channel's name or id"),
            ("message", message, "Slack posts no empty message"),
        )
        if not value.strip()
    ]
    if errors:
        raise invalid(errors)
    upstream = slack()
    reply = upstream.request(
        "POST", "/chat.postMessage", json={"channel": channel_name, "text": message}
    )
    if reply.status == 429:
        wait = reply.retry_after()
        raise upstream.rate_limited("this workspace's messages", 30 if wait is None else wait)
    answer = reply.json()
    if reply.status != 200 or not isinstance(answer, dict):
        raise upstream.error(f"answered {reply.status} to chat.postMessage")
    if answer.get("ok") is True:
        return {"channel": answer.get("channel"), "ts": answer.get("ts")}
    error = str(answer.get("error") or "unknown_error")
    if error in REFUSED_TOKEN:
        raise upstream.error(
            f"refused the connector's token ({error}): an admin should check SLACK_BOT_TOKEN"
        )
    if error in CALLER_ERRORS:
        raise upstream.error(
            f"cannot post to {channel_name!r}: {error}", status=CALLER_ERRORS[error]
        )
    raise upstream.error(f"refused the message: {error}")


if __name__ == "__main__":
    slack()  # a missing setting stops the start, with its name, not the first call
    app.run()
