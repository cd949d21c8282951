"""The Slack connector posts a message with chat.postMessage, as Slack's Web API expects."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from servicebay.fakes.base import Answer
from servicebay.fakes.slack import FakeSlack
from tests.connectors.conftest import (
    Connector,
    RunConnector,
    assert_documented,
    assert_identity_required,
    assert_problem,
)

TOKEN = "xoxb-1111111111-2222222222-ConnectorTestToken"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeSlack]:
    with FakeSlack(token=TOKEN) as fake:
        yield fake


@pytest.fixture(scope="module")
def slack(fake: FakeSlack, run_connector: RunConnector) -> Connector:
    return run_connector("slack", {"SLACK_BOT_TOKEN": TOKEN, "SLACK_BASE_URL": fake.base_url})


@pytest.fixture(autouse=True)
def fresh(fake: FakeSlack) -> None:
    fake.clear()


def test_a_message_is_posted_with_the_bot_token_as_json(slack: Connector, fake: FakeSlack) -> None:
    answer = slack.call(
        "POST",
        "/post_message_to_channel",
        params={"channel_name": "marketing", "message": "Followers: 7100 (+2.2%)"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["channel"] == "C0MARKETING"
    (sent,) = fake.requests_to("/api/chat.postMessage")
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["content-type"].startswith("application/json")
    assert sent.json == {"channel": "marketing", "text": "Followers: 7100 (+2.2%)"}
    assert answer.json()["ts"] == fake.messages[-1].ts


def test_an_unknown_channel_is_a_404_naming_slacks_error(slack: Connector) -> None:
    answer = slack.call(
        "POST", "/post_message_to_channel", params={"channel_name": "nope", "message": "hi"}
    )
    assert_problem(answer, 404, "Slack", "'nope'", "channel_not_found")


def test_an_empty_message_is_refused_before_slack_is_called(
    slack: Connector, fake: FakeSlack
) -> None:
    answer = slack.call(
        "POST", "/post_message_to_channel", params={"channel_name": "general", "message": "  "}
    )
    assert_problem(answer, 400, "message")
    both = slack.call(
        "POST", "/post_message_to_channel", params={"channel_name": " ", "message": ""}
    )
    problem = assert_problem(both, 400, "query.channel_name", "query.message")
    assert len(problem["errors"]) == 2
    missing = slack.call("POST", "/post_message_to_channel", params={"channel_name": "general"})
    assert missing.status_code == 400
    assert missing.json()["errors"][0]["loc"] == ["query", "message"]
    assert fake.received == []


def test_slacks_rate_limit_is_a_429_with_its_retry_after(slack: Connector, fake: FakeSlack) -> None:
    fake.rate_limit(retry_after=17)
    answer = slack.call(
        "POST", "/post_message_to_channel", params={"channel_name": "general", "message": "hi"}
    )
    assert_problem(answer, 429, "Slack", "17 s")
    assert answer.headers["Retry-After"] == "17"


def test_a_retry_after_that_is_not_ascii_digits_is_slacks_usual_30_s(
    slack: Connector, fake: FakeSlack
) -> None:
    fake.interject("POST", ".*/chat.postMessage", Answer(429, None, {"Retry-After": "\xb2"}))
    answer = slack.call(
        "POST", "/post_message_to_channel", params={"channel_name": "general", "message": "hi"}
    )
    assert_problem(answer, 429, "Slack", "30 s")
    assert answer.headers["Retry-After"] == "30"


def test_a_refused_token_is_a_502_for_the_admin_that_never_shows_the_token(
    fake: FakeSlack, run_connector: RunConnector
) -> None:
    wrong = run_connector(
        "slack", {"SLACK_BOT_TOKEN": "xoxb-wrong", "SLACK_BASE_URL": fake.base_url}
    )
    answer = wrong.call(
        "POST", "/post_message_to_channel", params={"channel_name": "general", "message": "hi"}
    )
    assert_problem(answer, 502, "Slack", "invalid_auth", "SLACK_BOT_TOKEN")
    assert "xoxb-wrong" not in answer.text


def test_a_call_without_the_gateways_identity_is_a_401(slack: Connector, fake: FakeSlack) -> None:
    assert_identity_required(slack, "POST", "/post_message_to_channel?channel_name=a&message=b")
    assert fake.received == []


def test_the_endpoint_is_documented(slack: Connector) -> None:
    assert_documented(slack, {("POST", "/post_message_to_channel")})


def test_the_token_is_in_no_answer_or_log_line(slack: Connector) -> None:
    for channel in ("general", "nope"):
        answer = slack.call(
            "POST",
            "/post_message_to_channel",
            params={"channel_name": channel, "message": "the quarter's numbers"},
        )
        assert TOKEN not in answer.text
    assert TOKEN not in slack.log_text()
    assert "numbers" not in slack.log_text()  # the message is a query parameter: not logged


def test_a_connector_without_its_token_does_not_start(fake: FakeSlack) -> None:
    with pytest.raises(AssertionError, match="SLACK_BOT_TOKEN is not set"):
        Connector("slack", {"SLACK_BASE_URL": fake.base_url})
