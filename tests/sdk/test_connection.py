"""What the Client sends and how it treats connections and answers, seen by a local server."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from servicebay import ApiError, Client, __version__
from servicebay.fakes.tls import self_signed, server_context
from servicebay.sdk import ApiUnavailable
from tests.sdk.sdk_support import FakeServer, Reply, Seen

Fake = Callable[..., FakeServer]
KEY = "bay_" + "k" * 43


def echo(seen: Seen) -> Reply:
    return Reply(body=f'{{"target": "{seen.target}"}}'.encode())


def test_calls_share_one_kept_alive_connection(fake: Fake) -> None:
    server = fake(echo)
    with Client(url=server.url, api_key=KEY) as client:
        answers = [client.get(f"call/{number}") for number in range(3)]
    assert answers == [{"target": f"/call/{number}"} for number in range(3)]
    assert server.connections == 1
    assert {seen.connection for seen in server.seen} == {1}


def test_threads_take_turns_on_the_connection(fake: Fake) -> None:
    server = fake(echo)
    client = Client(url=server.url, api_key=KEY)
    answers: dict[str, object] = {}

    def work(name: str) -> None:
        for number in range(10):
            answers[f"{name}/{number}"] = client.get(f"{name}/{number}")

    threads = [threading.Thread(target=work, args=(f"t{index}",)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    assert answers == {path: {"target": f"/{path}"} for path in answers}
    assert len(answers) == 40
    assert server.connections == 1


def test_an_idle_connection_the_server_closed_is_replaced_before_the_next_call(
    fake: Fake,
) -> None:
    server = fake(lambda seen: Reply(then="close"))
    with Client(url=server.url, api_key=KEY) as client:
        assert client.get("first") == {"ok": True}
        assert client.post("second", json={"n": 2}) == {"ok": True}
    assert [(seen.method, seen.connection) for seen in server.seen] == [("GET", 1), ("POST", 2)]


def test_a_reused_connection_dropped_before_answering_is_retried_once(fake: Fake) -> None:
    """The server hangs up on the second call of the first connection, as one closing an
    idle connection at the moment the call arrives would; a fresh connection answers."""
    server = fake(lambda seen: Reply(then="hang_up" if len(server.seen) == 2 else "keep"))
    with Client(url=server.url, api_key=KEY) as client:
        assert client.get("one") == {"ok": True}
        assert client.get("two") == {"ok": True}
    assert [(seen.target, seen.connection) for seen in server.seen] == [
        ("/one", 1),
        ("/two", 1),
        ("/two", 2),
    ]


def test_a_fresh_connection_dropped_before_answering_is_not_retried(fake: Fake) -> None:
    server = fake(lambda seen: Reply(then="hang_up"))
    with Client(url=server.url, api_key=KEY) as client, pytest.raises(ApiUnavailable) as raised:
        client.post("reports", json={"once": True})
    assert f"{server.url} closed the connection without answering" in str(raised.value)
    assert len(server.seen) == 1


def test_no_answer_within_the_timeout_is_unavailable(fake: Fake) -> None:
    server = fake(lambda seen: Reply(then="stall"))
    with Client(url=server.url, api_key=KEY, timeout=0.2) as client:
        with pytest.raises(ApiUnavailable) as raised:
            client.get("slow")
        assert f"{server.url} did not answer within 0.2 s" in str(raised.value)
        server.reply = echo
        assert client.get("after") == {"target": "/after"}  # a new connection


def test_every_call_says_who_and_what_it_is(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    server = fake()
    with Client(url=server.url, api_key=KEY) as client:
        client.get("plain")
        monkeypatch.setenv("BAY_RUN_ID", "run_42")
        with Client(url=server.url, api_key=KEY) as in_a_run:
            in_a_run.post("sent", json={"day": dt.date(2026, 11, 27), "n": 1.5, "name": "é"})
    plain, sent = server.seen
    for seen in (plain, sent):
        assert seen.headers["authorization"] == f"Bearer {KEY}"
        assert seen.headers["accept"] == "application/json"
        assert seen.headers["user-agent"] == f"servicebay-sdk/{__version__}"
    assert "x-bay-run-id" not in plain.headers
    assert sent.headers["x-bay-run-id"] == "run_42"
    assert sent.headers["content-type"] == "application/json"
    assert sent.body.decode() == '{"day": "2026-11-27", "n": 1.5, "name": "é"}'


def test_params_are_encoded_from_python_values(fake: Fake) -> None:
    server = fake()
    with Client(url=server.url + "/bay/", api_key=KEY) as client:
        client.get(
            "/sales/customer",
            params={
                "plan": "pro & more",
                "active": True,
                "limit": 10,
                "ratio": 0.5,
                "since": dt.date(2026, 1, 31),
                "cursor": None,
            },
        )
        client.get("tiktok/get_views?days=7&from=https://x.io", params=[("tag", "a"), ("tag", "b")])
        client.get("sql/customer/julius@nyknicks.com", headers={"X-Trace": "t1"})
    first, second, third = server.seen
    assert first.target == (
        "/bay/sales/customer?plan=pro+%26+more&active=true&limit=10&ratio=0.5&since=2026-01-31"
    )
    assert second.target == "/bay/tiktok/get_views?days=7&from=https://x.io&tag=a&tag=b"
    assert third.target == "/bay/sql/customer/julius@nyknicks.com"
    assert third.headers["x-trace"] == "t1"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply(status=204, body=b"", content_type=None), None),
        (Reply(status=201, body=b'[1, "two"]'), [1, "two"]),
        (Reply(body=b'{"a": 1}', content_type="application/problem+json"), {"a": 1}),
        (Reply(body=b"day,users\n", content_type="text/csv; charset=utf-8"), "day,users\n"),
        (Reply(body="café".encode("latin-1"), content_type="text/plain; charset=latin-1"), "café"),
        (Reply(body=b"no type", content_type=None), "no type"),
        (Reply(body=b"\x89PNG\r\n", content_type="image/png"), b"\x89PNG\r\n"),
    ],
)
def test_answers_are_json_text_or_bytes_by_their_content_type(
    fake: Fake, reply: Reply, expected: object
) -> None:
    server = fake(lambda seen: reply)
    with Client(url=server.url, api_key=KEY) as client:
        assert client.request("get", "thing") == expected


def test_an_answer_that_is_not_the_json_it_claims_is_an_error(fake: Fake) -> None:
    server = fake(lambda seen: Reply(body=b"{oops", headers=[("X-Request-ID", "r1")]))
    with Client(url=server.url, api_key=KEY) as client, pytest.raises(ApiError) as raised:
        client.get("broken")
    assert raised.value.status == 200
    assert raised.value.title == "Unreadable answer"
    assert raised.value.request_id == "r1"


def test_an_error_without_problem_json_keeps_the_start_of_its_text(fake: Fake) -> None:
    page = f"<html><body><h1>Bad gateway</h1> upstream said {KEY}</body></html>" + " x" * 500
    server = fake(lambda seen: Reply(status=502, body=page.encode(), content_type="text/html"))
    with Client(url=server.url, api_key=KEY) as client, pytest.raises(ApiError) as raised:
        client.get("through/a/proxy")
    error = raised.value
    assert (error.status, error.title, error.type, error.errors) == (502, "Bad Gateway", None, [])
    assert error.detail.startswith("<html><body><h1>Bad gateway</h1> upstream said [redacted]")
    assert len(error.detail) == 300
    assert KEY not in str(error)
    assert str(error).startswith("502 Bad Gateway: <html>")


def test_https_with_a_trusted_certificate(
    fake: Fake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    certificate, key = self_signed(tmp_path)
    tls = server_context(certificate, key)
    server = fake(echo, tls=tls)
    with Client(url=server.url, api_key=KEY) as client:
        with pytest.raises(ApiUnavailable) as untrusted:
            client.get("secure")
        assert f"TLS with {server.url} failed: CERTIFICATE_VERIFY_FAILED" in str(untrusted.value)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate))  # how a private CA is trusted
    with Client(url=server.url, api_key=KEY) as client:
        assert client.get("secure") == {"target": "/secure"}
        assert client.get("again") == {"target": "/again"}
    assert server.seen[-1].connection == server.seen[-2].connection
