"""The Instagram Graph API for one business account: its follower count, and the
`follower_count` insight by day, which Meta documents as the new followers of each day
(not the total), for days already over, and not at all for accounts under 100 followers.

Shapes as the Graph API answers them: `GET /{version}/{ig-user-id}?fields=followers_count`
gives `{"followers_count", "id"}`; `GET /{version}/{ig-user-id}/insights?metric=
follower_count&period=day&since=&until=` gives `{"data": [{"name", "period", "values":
[{"value", "end_time"}], ...}], "paging"}`, a value per day from `since` up to `until`
(today excluded), each ending the next day at 07:00 UTC; `{"data": []}` when there is
none. Errors are HTTP 400 with `{"error": {"message",
"type", "code", "fbtrace_id"}}`. The token comes as `Authorization: Bearer` or
`access_token`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from servicebay.fakes.base import Answer, FakeServer, Received

DEMO_TOKEN = "EAAServiceBayDemoInstagramToken0000000000"  # noqa: S105 (the fake's own, printed for the demo)
DEMO_USER = "17841400000000000"
VERSION = "v19.0"
MAX_DAYS = 30
NEW_A_DAY = 15
MIN_FOLLOWERS = 100
"""Meta gives no follower_count insight for an account with fewer followers."""
USER_FIELDS = frozenset(
    {"id", "username", "name", "followers_count", "follows_count", "media_count"}
)


class FakeInstagram(FakeServer):
    """One account, `user_id`, followed by `followers_count` accounts now, of which
    `count_on(day)` started following on `day` (the `follower_count` insight; default 15
    a day)."""

    name = "instagram"
    not_found = {
        "error": {
            "message": "Unknown path components",
            "type": "OAuthException",
            "code": 2500,
            "fbtrace_id": "AServiceBayFake",
        }
    }

    def __init__(
        self,
        *,
        token: str = DEMO_TOKEN,
        user_id: str = DEMO_USER,
        followers_count: int = 7100,
        count_on: Callable[[date], int] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.token = token
        self.user_id = user_id
        self.followers_count = followers_count
        self.count_on = count_on or self._trend
        version = r"/(?P<version>v[0-9]+\.[0-9]+)"
        self.route("GET", version + r"/(?P<user>[0-9]+)", self._user)
        self.route("GET", version + r"/(?P<user>[0-9]+)/insights", self._insights)

    @property
    def base_url(self) -> str:
        """What a client uses in place of https://graph.facebook.com/v19.0."""
        return f"{self.url}/{VERSION}"

    def describe(self) -> str:
        return (
            f"Instagram Graph API fake: INSTAGRAM_BASE_URL={self.base_url} "
            f"INSTAGRAM_ACCESS_TOKEN={self.token} INSTAGRAM_USER_ID={self.user_id}"
        )

    @staticmethod
    def _trend(day: date) -> int:
        return NEW_A_DAY

    def _refusal(self, received: Received, user: str) -> Answer | None:
        bearer = received.headers.get("authorization", "")
        token = bearer.removeprefix("Bearer ") if bearer.startswith("Bearer ") else None
        token = token or received.param("access_token")
        if not token:
            return _error(
                "An active access token must be used to query information about the current user.",
                "OAuthException",
                2500,
            )
        if token != self.token:
            return _error(
                "Invalid OAuth access token - Cannot parse access token", "OAuthException", 190
            )
        if user != self.user_id:
            return _error(
                f"Unsupported get request. Object with ID '{user}' does not exist, cannot be "
                "loaded due to missing permissions, or does not support this operation.",
                "GraphMethodException",
                100,
            )
        return None

    def _user(self, received: Received, version: str, user: str) -> Answer:
        refused = self._refusal(received, user)
        if refused is not None:
            return refused
        fields = [field for field in (received.param("fields") or "id").split(",") if field]
        for field in fields:
            if field not in USER_FIELDS:
                return _error(
                    f"(#100) Tried accessing nonexisting field ({field}) on node type (IGUser)",
                    "OAuthException",
                    100,
                )
        values = {
            "id": self.user_id,
            "username": "servicebay_demo",
            "name": "ServiceBay Demo",
            "followers_count": self.followers_count,
            "follows_count": 120,
            "media_count": 640,
        }
        return Answer(200, {field: values[field] for field in [*fields, "id"]})

    def _insights(self, received: Received, version: str, user: str) -> Answer:
        refused = self._refusal(received, user)
        if refused is not None:
            return refused
        metric = received.param("metric")
        if metric != "follower_count":
            return _error(
                "(#100) metric[0] must be one of the following values: follower_count, "
                "impressions, reach, profile_views",
                "OAuthException",
                100,
            )
        if received.param("period") != "day":
            return _error("(#100) The period for follower_count must be day", "OAuthException", 100)
        try:
            since = _day(received.param("since"))
            until = _day(received.param("until")) if received.param("until") else None
        except ValueError as error:
            return _error(f"(#100) {error}", "OAuthException", 100)
        if since is None:
            return _error("(#100) The parameter since is required", "OAuthException", 100)
        until = until or since + timedelta(days=1)
        if not since < until <= since + timedelta(days=MAX_DAYS):
            return _error(
                f"(#100) There cannot be more than {MAX_DAYS} days between since and until, "
                "and until must be after since",
                "OAuthException",
                100,
            )
        today = datetime.now(UTC).date()
        days = [since + timedelta(days=offset) for offset in range((until - since).days)]
        days = [day for day in days if day < today]
        if self.followers_count < MIN_FOLLOWERS or not days:
            return Answer(200, {"data": []})
        values = [
            {"value": self.count_on(day), "end_time": f"{day + timedelta(days=1)}T07:00:00+0000"}
            for day in days
        ]
        insight = {
            "name": "follower_count",
            "period": "day",
            "values": values,
            "title": "Follower Count",
            "description": "The number of new followers each day",
            "id": f"{user}/insights/follower_count/day",
        }
        return Answer(200, {"data": [insight], "paging": {"previous": "", "next": ""}})


def _day(text: str | None) -> date | None:
    """The Graph API takes a date or a Unix time for `since` and `until`."""
    if not text:
        return None
    if text.isdigit():
        return datetime.fromtimestamp(int(text), UTC).date()
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"The value {text!r} is not a valid date or Unix time") from None


def _error(message: str, kind: str, code: int) -> Answer:
    return Answer(
        400,
        {
            "error": {
                "message": message,
                "type": kind,
                "code": code,
                "fbtrace_id": "AServiceBayFake",
            }
        },
    )
