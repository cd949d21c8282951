"""The fakes answer like their vendors whoever calls them (here: plain httpx), and each runs
from the command line as `bay demo` will run it."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from servicebay.fakes import FAKES, fake_class
from servicebay.fakes.instagram import FakeInstagram
from servicebay.fakes.salesforce import FakeSalesforce
from servicebay.fakes.slack import FakeSlack


def test_it_answers_slacks_error_codes_with_http_200() -> None:
    with FakeSlack(token="xoxb-t") as fake, httpx.Client(base_url=fake.base_url) as client:
        bearer = {"Authorization": "Bearer xoxb-t"}
        cases = [
            ({}, {"channel": "general", "text": "hi"}, "not_authed"),
            (
                {"Authorization": "Bearer xoxb-x"},
                {"channel": "general", "text": "hi"},
                "invalid_auth",
            ),
            (bearer, {"channel": "random", "text": "hi"}, "channel_not_found"),
            (bearer, {"channel": "general"}, "no_text"),
            (bearer, {"channel": "general", "text": "x" * 40_001}, "msg_too_long"),
        ]
        for headers, body, error in cases:
            answer = client.post("/chat.postMessage", headers=headers, json=body)
            assert (answer.status_code, answer.json()) == (200, {"ok": False, "error": error})
        form = client.post(
            "/chat.postMessage", data={"token": "xoxb-t", "channel": "#general", "text": "hi"}
        )
        assert form.json()["ok"] is True
        assert form.json()["channel"] == "C0GENERAL"
        assert [message.text for message in fake.messages] == ["hi"]


@pytest.mark.parametrize("name", sorted(FAKES))
def test_each_fake_runs_from_the_command_line_and_says_how_to_reach_it(name: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "servicebay.fakes", name], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "fake" in line
        assert "127.0.0.1" in line
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_the_slack_fake_from_the_command_line_answers_at_its_base_url() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "servicebay.fakes", "slack"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        base_url = line.split()[4].removeprefix("SLACK_BASE_URL=")
        answer = httpx.post(f"{base_url}/chat.postMessage", json={})
        assert answer.json() == {"ok": False, "error": "not_authed"}
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_an_unknown_fake_is_named_with_the_ones_there_are() -> None:
    with pytest.raises(KeyError, match="there are: email, github, instagram"):
        fake_class("hubspot")


def test_the_salesforce_fake_refuses_a_query_with_text_pasted_into_it() -> None:
    with FakeSalesforce(token="t") as fake, httpx.Client(base_url=fake.url) as client:
        fake.add_contact(Email="a@corp.com", LastName="A")
        headers = {"Authorization": "Bearer t"}
        pasted = "SELECT Id FROM Contact WHERE Email = 'x' OR Email != '' LIMIT 2"
        answer = client.get("/services/data/v61.0/query", params={"q": pasted}, headers=headers)
        assert answer.status_code == 400
        assert answer.json()[0]["errorCode"] == "MALFORMED_QUERY"
        escaped = "SELECT Id FROM Contact WHERE Email = 'x\\' OR Email != \\'' LIMIT 2"
        answer = client.get("/services/data/v61.0/query", params={"q": escaped}, headers=headers)
        assert answer.json() == {"totalSize": 0, "done": True, "records": []}
        unauthenticated = client.get("/services/data/v61.0/query", params={"q": escaped})
        assert unauthenticated.status_code == 401
        assert unauthenticated.json()[0]["errorCode"] == "INVALID_SESSION_ID"


def test_the_instagram_fake_counts_new_followers_a_day_as_meta_does() -> None:
    """Meta's `follower_count` insight: new followers per day, only for days already over,
    and no data at all for an account under 100 followers."""
    today = datetime.now(UTC).date()
    query = {"metric": "follower_count", "period": "day"}
    since = str(today - timedelta(days=2))
    with FakeInstagram(token="t", user_id="1", followers_count=7100) as fake:
        url, bearer = f"{fake.base_url}/1/insights", {"Authorization": "Bearer t"}
        until = str(today + timedelta(days=1))
        answer = httpx.get(url, params={**query, "since": since, "until": until}, headers=bearer)
        (insight,) = answer.json()["data"]
        assert [value["value"] for value in insight["values"]] == [15, 15]
        assert insight["description"] == "The number of new followers each day"
        fake.followers_count = 99
        answer = httpx.get(url, params={**query, "since": since}, headers=bearer)
        assert answer.json() == {"data": []}
