"""The Slack fake answers like Slack's Web API, whoever calls it (here: plain httpx)."""

from __future__ import annotations

import subprocess
import sys

import httpx

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


def test_it_runs_from_the_command_line() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "servicebay.fakes", "slack"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("Slack Web API fake: SLACK_BASE_URL=http://127.0.0.1:")
        base_url = line.split()[4].removeprefix("SLACK_BASE_URL=")
        answer = httpx.post(f"{base_url}/chat.postMessage", json={})
        assert answer.json() == {"ok": False, "error": "not_authed"}
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
