"""The webhook call as a script sees it: the request file in, one response file out."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from servicebay.webhook import WebhookError, WebhookRequest, WebhookResponse


def write_call(path: Path, body: bytes, **fields: Any) -> Path:
    document = {
        "method": "POST",
        "path": "/lookup/extra",
        "query": [["email", "julius@nyknicks.com"], ["tag", "a"], ["tag", "b"]],
        "headers": [
            ["Content-Type", "application/json"],
            ["X-Tag", "one"],
            ["x-tag", "two"],
        ],
        "body_base64": base64.b64encode(body).decode(),
        **fields,
    }
    path.write_text(json.dumps(document))
    return path


@pytest.fixture
def call_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = write_call(tmp_path / "request.json", b'{"name": "Julius"}')
    monkeypatch.setenv("BAY_WEBHOOK_REQUEST", str(path))
    return path


@pytest.fixture
def answer_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "out" / "response.json"
    path.parent.mkdir()
    monkeypatch.setenv("BAY_WEBHOOK_RESPONSE", str(path))
    return path


COOKIES = [["Set-Cookie", "a=1"], ["Set-Cookie", "b=2"]]


def read_answer(path: Path) -> tuple[int, list[list[str]], bytes]:
    document = json.loads(path.read_text())
    return document["status_code"], document["headers"], base64.b64decode(document["body_base64"])


def test_the_request_file_reads_as_the_call(call_file: Path) -> None:
    request = WebhookRequest()
    assert request.method == "POST"
    assert request.path == "/lookup/extra"
    assert request.query == [("email", "julius@nyknicks.com"), ("tag", "a"), ("tag", "b")]
    assert request.args == {"email": "julius@nyknicks.com", "tag": "a"}
    assert request.headers["content-type"] == "application/json"
    assert request.headers["X-TAG"] == "one"
    assert request.headers.get_all("x-tag") == ["one", "two"]
    assert "Content-Type" in request.headers
    assert list(request.headers) == ["Content-Type", "X-Tag"]
    assert request.headers.get("missing") is None
    assert request.body == b'{"name": "Julius"}'
    assert request.text == '{"name": "Julius"}'
    assert request.json() == {"name": "Julius"}
    assert repr(request) == "<webhook request POST /lookup/extra>"


def test_the_file_is_read_once_on_first_use(call_file: Path) -> None:
    request = WebhookRequest()
    assert repr(request) == "<webhook request, read from $BAY_WEBHOOK_REQUEST on first use>"
    assert request.method == "POST"
    call_file.unlink()
    assert request.json() == {"name": "Julius"}


def test_text_follows_the_declared_charset_and_json_says_what_it_got(tmp_path: Path) -> None:
    headers = [["content-type", "text/plain; charset=latin-1"]]
    path = write_call(tmp_path / "call.json", "café".encode("latin-1"), headers=headers)
    empty = write_call(tmp_path / "empty.json", b"", headers=[])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BAY_WEBHOOK_REQUEST", str(path))
        request = WebhookRequest()
        assert request.text == "café"
        with pytest.raises(ValueError, match="Content-Type is 'text/plain; charset=latin-1'"):
            request.json()
        patch.setenv("BAY_WEBHOOK_REQUEST", str(empty))
        assert WebhookRequest().json() is None


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "is malformed: not JSON"),
        ('["a list"]', "is malformed: not a JSON object"),
        ('{"method": "POST", "query": "a=1"}', '"query" must be a list of [name, value]'),
        ('{"method": "POST", "body_base64": "@@"}', '"body_base64" is not base64'),
        ('{"method": "GET /x"}', '"method" must be an HTTP method'),
    ],
)
def test_a_malformed_request_file_is_named(
    content: str, problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "request.json"
    path.write_text(content)
    monkeypatch.setenv("BAY_WEBHOOK_REQUEST", str(path))
    with pytest.raises(WebhookError) as raised:
        WebhookRequest().method  # noqa: B018 - reading is what raises
    assert f"the webhook call in {path} ($BAY_WEBHOOK_REQUEST)" in str(raised.value)
    assert problem in str(raised.value)


def test_outside_a_webhook_run_both_sides_say_how_to_get_one(tmp_path: Path) -> None:
    request = WebhookRequest()
    with pytest.raises(WebhookError) as reading:
        request.json()
    with pytest.raises(WebhookError) as answering:
        WebhookResponse().send_response(data={"hello": "world"})
    for raised, variable in ((reading, "BAY_WEBHOOK_REQUEST"), (answering, "BAY_WEBHOOK_RESPONSE")):
        message = str(raised.value)
        assert f"needs the environment variable {variable}, which is not set" in message
        assert "`bay run DIR --local`" in message


def test_the_articles_answer_is_written_once(answer_file: Path) -> None:
    response = WebhookResponse()
    response.send_response(
        data={"hello": "world"}, headers={"content-type": "application/json"}, status_code=200
    )
    assert response.sent
    assert read_answer(answer_file) == (
        200,
        [["content-type", "application/json"]],
        b'{"hello": "world"}',
    )
    with pytest.raises(WebhookError, match=r"already answered \(status 200\)"):
        response.send_response(data="again")
    assert read_answer(answer_file)[2] == b'{"hello": "world"}'
    assert sorted(path.name for path in answer_file.parent.iterdir()) == ["response.json"]


@pytest.mark.parametrize(
    ("data", "headers", "expected_headers", "body"),
    [
        ([1, {"d": "x"}], None, [["content-type", "application/json"]], b'[1, {"d": "x"}]'),
        ("plain words", None, [["content-type", "text/plain; charset=utf-8"]], b"plain words"),
        (b"\x00\x01", None, [["content-type", "application/octet-stream"]], b"\x00\x01"),
        ("a,b\n", {"Content-Type": "text/csv"}, [["Content-Type", "text/csv"]], b"a,b\n"),
        (None, [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")], COOKIES, b""),
        (None, {"Retry-After": 30}, [["Retry-After", "30"]], b""),
    ],
)  # fmt: skip
def test_data_sets_the_body_and_a_content_type_unless_given(
    answer_file: Path,
    data: Any,
    headers: Any,
    expected_headers: list[list[str]],
    body: bytes,
) -> None:
    WebhookResponse().send_response(data=data, headers=headers, status_code=202)
    assert read_answer(answer_file) == (202, expected_headers, body)


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"status_code": 600}, ValueError, "status_code 600 is not an HTTP status (100 to 599)"),
        ({"status_code": 99}, ValueError, "status_code 99 is not an HTTP status"),
        ({"status_code": "200"}, TypeError, "status_code must be an int like 200, not '200'"),
        ({"status_code": True}, TypeError, "status_code must be an int"),
        ({"headers": {"X-A": "1\r\nSet-Cookie: x"}}, ValueError, "the value holds a line break"),
        ({"headers": {"Bad Name": "1"}}, ValueError, "'Bad Name' is not a valid header name"),
        ({"headers": {"Content-Length": "5"}}, ValueError, "is set by the platform: leave it out"),
        ({"headers": {"X-A": 1.5}}, TypeError, "'X-A': the value must be a str or an int"),
        ({"headers": ["X-A: 1"]}, TypeError, "a list of (name, value) pairs"),
        ({"data": "x", "status_code": 204}, ValueError, "a 204 answer carries no body"),
        ({"data": {"when": object()}}, TypeError, "data holds a object, which is not JSON"),
        ({"data": {"ratio": float("inf")}}, ValueError, "NaN or infinity"),
    ],
)  # fmt: skip
def test_a_wrong_answer_is_refused_and_nothing_is_written(
    answer_file: Path, arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    response = WebhookResponse()
    with pytest.raises(error) as raised:
        response.send_response(**arguments)
    assert message in str(raised.value)
    assert not response.sent
    assert list(answer_file.parent.iterdir()) == []
    response.send_response(data="corrected")
    assert read_answer(answer_file)[2] == b"corrected"


def test_an_unwritable_answer_file_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "no such dir" / "response.json"
    monkeypatch.setenv("BAY_WEBHOOK_RESPONSE", str(target))
    response = WebhookResponse()
    with pytest.raises(WebhookError, match=re.escape(f"cannot write the answer to {target}")):
        response.send_response(data={})
    assert not response.sent
