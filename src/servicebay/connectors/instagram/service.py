"""Instagram: the business account's follower count now, and its new followers by day,
from the Graph API.

Settings: `INSTAGRAM_ACCESS_TOKEN` (secret), `INSTAGRAM_USER_ID` (the account's Instagram
user id, stored as a secret too: one per instance, no folder edit), `INSTAGRAM_BASE_URL`
(default https://graph.facebook.com/v19.0; a fake's address in tests and `bay demo`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any

from servicebay.sdk import Service
from servicebay.sdk.service import field_error, invalid
from servicebay.sdk.upstream import Reply, Upstream, setting

app = Service(
    "instagram",
    description="The company's Instagram business account: its follower count now, and its "
    "new followers by day.",
)

MAX_DAYS = 30
"""The Graph API gives at most 30 days of an insight per call."""
TOKEN_ERRORS = frozenset({102, 190, 2500})
"""Graph API error codes that mean the access token is missing, expired or wrong."""


@cache
def graph() -> tuple[Upstream, str]:
    """The Graph API with the account's token, and the account's user id."""
    upstream = Upstream(
        "Instagram",
        setting("INSTAGRAM_BASE_URL", "https://graph.facebook.com/v19.0"),
        bearer=setting("INSTAGRAM_ACCESS_TOKEN"),
    )
    user = setting("INSTAGRAM_USER_ID")
    if not user.isdigit():
        raise RuntimeError(f"INSTAGRAM_USER_ID {user!r} is not an Instagram user id (digits)")
    return upstream, user


@app.get("/get_follower_count")
def get_follower_count() -> dict[str, Any]:
    """How many accounts follow the business account now: `followers_count`."""
    upstream, user = graph()
    answer = _answer(
        upstream, upstream.request("GET", f"/{user}", query={"fields": "followers_count"})
    )
    return {"followers_count": answer.get("followers_count"), "user_id": user}


@app.get("/get_follower_count_by_date")
def get_follower_count_by_date(date: str, until: str | None = None) -> dict[str, Any]:
    """The accounts that started following on `date`, or on each day from `date` to `until`
    (both included): `{"days": [{"date", "new_followers"}, ...]}`.

    This is the Graph API's `follower_count` insight, which Meta documents as the new
    followers of each day (unfollows not subtracted), not the total: a total on a past day
    cannot be rebuilt from it. Days are `YYYY-MM-DD`, at most 30 of them, before today
    (Meta gives a day once it is over). `days` is empty when Meta has no insight for them
    (an account under 100 followers, or days more than 30 back).
    """
    errors: list[dict[str, Any]] = []
    first = _day("date", date, errors)
    last = _day("until", until, errors) if until else first
    if first and last:
        if last < first:
            errors.append(field_error("until", f"({last}) is before `date` ({first})", "range"))
        elif (last - first).days >= MAX_DAYS:
            errors.append(field_error("until", f"at most {MAX_DAYS} days at once", "range"))
    if errors or first is None or last is None:
        raise invalid(errors)
    upstream, user = graph()
    query = {
        "metric": "follower_count",
        "period": "day",
        "since": first.isoformat(),
        "until": (last + timedelta(days=1)).isoformat(),
    }
    answer = _answer(upstream, upstream.request("GET", f"/{user}/insights", query=query))
    try:
        if answer["data"] == []:
            return {"days": []}
        (insight,) = answer["data"]
        values = [(value["end_time"][:10], value.get("value")) for value in insight["values"]]
        # A day's value ends at the start of the next day.
        days = [
            {"date": str(_date_of(end) - timedelta(days=1)), "new_followers": count}
            for end, count in values
        ]
    except (KeyError, TypeError, ValueError):
        raise upstream.error("answered a follower_count insight of an unknown shape") from None
    return {"days": days}


def _date_of(text: str) -> date:
    return datetime.strptime(text, "%Y-%m-%d").date()


def _day(name: str, text: str, errors: list[dict[str, Any]]) -> date | None:
    """The day `text`, or None with what is wrong with it added to `errors`."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        errors.append(field_error(name, f"should be a day as YYYY-MM-DD, not {text!r}", "date"))
        return None
    if day >= datetime.now(UTC).date():
        errors.append(
            field_error(
                name, f"({day}) is today or later: Meta gives a day once it is over", "future"
            )
        )
        return None
    return day


def _answer(upstream: Upstream, reply: Reply) -> dict[str, Any]:
    """The Graph API's answer, or its `{"error": {"message", "type", "code"}}` as a problem."""
    answer = reply.json()
    if reply.status == 200 and isinstance(answer, dict):
        return answer
    error = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(error, dict):
        raise upstream.error(f"answered {reply.status}")
    named = f"{error.get('message')} ({error.get('type')}, code {error.get('code')})"
    if error.get("code") in TOKEN_ERRORS:
        raise upstream.error(
            f"refused the connector's token: {named}; an admin should check INSTAGRAM_ACCESS_TOKEN"
        )
    raise upstream.error(f"refused the request: {named}")


if __name__ == "__main__":
    graph()  # a missing setting stops the start, with its name, not the first call
    app.run()
