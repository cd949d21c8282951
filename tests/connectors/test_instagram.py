"""The Instagram connector reads the follower count and its daily insight from the Graph API."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest

from servicebay.fakes.base import Answer
from servicebay.fakes.instagram import FakeInstagram
from tests.connectors.conftest import (
    Connector,
    RunConnector,
    assert_documented,
    assert_identity_required,
    assert_problem,
)

TOKEN = "EAAGConnectorTestInstagramToken0123456789"
USER = "17841405822304914"


def count_on(day: date) -> int:
    """New followers on `day`, as Meta's `follower_count` insight counts them."""
    return 100 + day.day


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeInstagram]:
    with FakeInstagram(token=TOKEN, user_id=USER, followers_count=7100, count_on=count_on) as fake:
        yield fake


def settings(fake: FakeInstagram, token: str = TOKEN, user: str = USER) -> dict[str, str]:
    return {
        "INSTAGRAM_ACCESS_TOKEN": token,
        "INSTAGRAM_USER_ID": user,
        "INSTAGRAM_BASE_URL": fake.base_url,
    }


@pytest.fixture(scope="module")
def instagram(fake: FakeInstagram, run_connector: RunConnector) -> Connector:
    return run_connector("instagram", settings(fake))


@pytest.fixture(autouse=True)
def fresh(fake: FakeInstagram) -> None:
    fake.clear()


def test_the_follower_count_is_the_accounts_followers_count(
    instagram: Connector, fake: FakeInstagram
) -> None:
    answer = instagram.call("GET", "/get_follower_count")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"followers_count": 7100, "user_id": USER}
    (sent,) = fake.requests_to(f"/v19.0/{USER}")
    assert sent.query == [("fields", "followers_count")]
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"


def test_the_new_followers_by_date_are_the_follower_count_insight_of_each_day(
    instagram: Connector, fake: FakeInstagram
) -> None:
    first = datetime.now(UTC).date() - timedelta(days=9)
    last = first + timedelta(days=2)
    answer = instagram.call(
        "GET", "/get_follower_count_by_date", params={"date": str(first), "until": str(last)}
    )
    assert answer.status_code == 200, answer.text
    days = [first + timedelta(days=offset) for offset in range(3)]
    assert answer.json() == {
        "days": [{"date": str(day), "new_followers": count_on(day)} for day in days]
    }
    (sent,) = fake.requests_to(f"/v19.0/{USER}/insights")
    assert dict(sent.query) == {
        "metric": "follower_count",
        "period": "day",
        "since": str(first),
        "until": str(last + timedelta(days=1)),
    }
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"

    one = instagram.call("GET", "/get_follower_count_by_date", params={"date": str(first)})
    assert one.json() == {"days": [{"date": str(first), "new_followers": count_on(first)}]}


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"date": "last friday"}, ["date", "YYYY-MM-DD"]),
        ({"date": "2026-01-10", "until": "2026-01-09"}, ["before"]),
        ({"date": "2026-01-01", "until": "2026-03-01"}, ["at most 30 days"]),
        ({"date": "2999-01-01"}, ["today or later"]),
        ({"date": str(datetime.now(UTC).date())}, ["today or later", "once it is over"]),
        ({"date": "someday", "until": "2999-01-01"}, ["query.date", "query.until"]),
    ],
)
def test_bad_days_are_400s_before_instagram_is_called(
    instagram: Connector, fake: FakeInstagram, params: dict[str, str], words: list[str]
) -> None:
    answer = instagram.call("GET", "/get_follower_count_by_date", params=params)
    assert_problem(answer, 400, *words)
    assert fake.received == []


def test_a_refused_token_is_a_502_naming_the_graph_error_never_the_token(
    fake: FakeInstagram, run_connector: RunConnector
) -> None:
    wrong = run_connector("instagram", settings(fake, token="EAAG-wrong-token"))
    answer = wrong.call("GET", "/get_follower_count")
    assert_problem(
        answer, 502, "Instagram", "Invalid OAuth access token", "190", "INSTAGRAM_ACCESS_TOKEN"
    )
    assert "EAAG-wrong-token" not in answer.text


def test_an_unknown_account_is_a_502_naming_the_graph_error(
    fake: FakeInstagram, run_connector: RunConnector
) -> None:
    elsewhere = run_connector("instagram", settings(fake, user="1234"))
    answer = elsewhere.call("GET", "/get_follower_count")
    assert_problem(
        answer, 502, "Instagram", "Object with ID '1234' does not exist", "GraphMethodException"
    )


def test_an_unreachable_graph_api_is_a_502(run_connector: RunConnector) -> None:
    closed = FakeInstagram().start()
    address = closed.base_url
    closed.stop()
    offline = run_connector(
        "instagram",
        {"INSTAGRAM_ACCESS_TOKEN": TOKEN, "INSTAGRAM_USER_ID": USER, "INSTAGRAM_BASE_URL": address},
    )
    answer = offline.call("GET", "/get_follower_count")
    assert_problem(answer, 502, "Instagram could not be reached")
    assert TOKEN not in answer.text


def test_calls_without_the_gateways_identity_are_401s(
    instagram: Connector, fake: FakeInstagram
) -> None:
    assert_identity_required(instagram, "GET", "/get_follower_count")
    assert fake.received == []


def test_the_endpoints_are_documented_and_the_token_is_in_no_log_line(
    instagram: Connector,
) -> None:
    assert_documented(
        instagram, {("GET", "/get_follower_count"), ("GET", "/get_follower_count_by_date")}
    )
    assert TOKEN not in instagram.log_text()


def test_an_insight_of_an_unknown_shape_is_a_502(instagram: Connector, fake: FakeInstagram) -> None:
    fake.interject("GET", f"/v19.0/{USER}/insights", Answer(200, {"data": [{"values": [{}]}]}))
    day = str(datetime.now(UTC).date() - timedelta(days=3))
    answer = instagram.call("GET", "/get_follower_count_by_date", params={"date": day})
    assert_problem(answer, 502, "Instagram answered a follower_count insight of an unknown shape")


def test_days_meta_has_no_insight_for_are_an_empty_list(
    fake: FakeInstagram, run_connector: RunConnector
) -> None:
    """Meta answers `{"data": []}` for an account under 100 followers."""
    with FakeInstagram(token=TOKEN, user_id=USER, followers_count=99) as small:
        connector = run_connector("instagram", settings(small))
        day = str(datetime.now(UTC).date() - timedelta(days=3))
        answer = connector.call("GET", "/get_follower_count_by_date", params={"date": day})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"days": []}
