"""sdk/upstream, the helper every HTTP connector calls its vendor with: what it refuses to
do with a credential, and how failures become problems naming the vendor."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import suppress

import pytest

from servicebay.fakes.base import Answer, FakeServer, Received
from servicebay.sdk import HttpError
from servicebay.sdk.upstream import MAX_ANSWER_BYTES, Upstream, problem, setting, whole_seconds

TOKEN = "vendor-token-0123456789"


@pytest.fixture
def vendor() -> Iterator[FakeServer]:
    with FakeServer() as fake:
        yield fake


@pytest.fixture
def elsewhere() -> Iterator[FakeServer]:
    with FakeServer() as fake:
        yield fake


def test_a_call_sends_the_bearer_token_the_query_and_a_json_body(vendor: FakeServer) -> None:
    vendor.route("POST", "/v1/things", lambda received: Answer(201, {"id": 7}))
    upstream = Upstream("Vendor", vendor.url + "/v1/", bearer=TOKEN, headers={"Accept": "x/y"})
    reply = upstream.request("POST", "/things", query={"q": "a b&c"}, json={"name": "é"})
    assert (reply.status, reply.json()) == (201, {"id": 7})
    (sent,) = vendor.received
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["accept"] == "x/y"
    assert sent.query == [("q", "a b&c")]
    assert sent.json == {"name": "é"}


def test_a_redirect_is_answered_as_is_and_never_followed(
    vendor: FakeServer, elsewhere: FakeServer
) -> None:
    """Following it would hand the token to whatever address the redirect names."""
    vendor.route("GET", "/moved", lambda _: Answer(302, None, {"Location": elsewhere.url + "/x"}))
    reply = Upstream("Vendor", vendor.url, bearer=TOKEN).request("GET", "/moved")
    assert reply.status == 302
    assert elsewhere.received == []


def test_a_url_outside_the_base_url_is_refused(vendor: FakeServer, elsewhere: FakeServer) -> None:
    upstream = Upstream("Vendor", vendor.url + "/api", bearer=TOKEN)
    for url in (elsewhere.url + "/api/next", vendor.url + "/apix", vendor.url + "/other"):
        with pytest.raises(HttpError) as refused:
            upstream.request("GET", url)
        assert refused.value.status == 502
        assert "outside" in refused.value.detail
    assert elsewhere.received == []
    assert upstream.request("GET", vendor.url + "/api/next").status == 404


def test_an_answer_that_is_not_json_is_a_502_naming_the_vendor(vendor: FakeServer) -> None:
    page = Answer(502, b"<html>Bad Gateway</html>", {"Content-Type": "text/html"})
    vendor.route("GET", "/page", lambda _: page)
    reply = Upstream("Vendor", vendor.url).request("GET", "/page")
    with pytest.raises(HttpError) as failed:
        reply.json()
    assert (failed.value.status, failed.value.detail) == (
        502,
        "Vendor answered 502 with a body that is not JSON",
    )


def raw_vendor(answer: bytes) -> str:
    """A vendor that answers each request with exactly `answer`, HTTP or not, then hangs up."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"HELLO THERE\r\n\r\n", "HELLO THERE"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}", "IncompleteRead"),
        (
            b"HTTP/1.1 200 OK\r\n"
            + b"".join(b"X-%d: a\r\n" % n for n in range(101))
            + b"Content-Length: 2\r\n\r\n{}",
            "more than 100 headers",
        ),
    ],
    ids=["status line", "short body", "too many headers"],
)
def test_an_answer_that_is_not_http_is_a_502_naming_the_vendor(answer: bytes, reason: str) -> None:
    with pytest.raises(HttpError) as failed:
        Upstream("Vendor", raw_vendor(answer), bearer=TOKEN).request("GET", "/x")
    assert failed.value.status == 502
    assert failed.value.detail.startswith("Vendor answered with a broken HTTP message")
    assert reason in failed.value.detail


def test_json_nested_too_deep_to_parse_is_a_502_naming_the_vendor(vendor: FakeServer) -> None:
    vendor.route("GET", "/deep", lambda _: Answer(200, b"[" * 100_000 + b"]" * 100_000))
    with pytest.raises(HttpError) as failed:
        Upstream("Vendor", vendor.url).request("GET", "/deep").json()
    assert (failed.value.status, failed.value.detail) == (
        502,
        "Vendor answered 200 with a body that is not JSON",
    )


def test_a_vendor_that_does_not_answer_in_time_is_a_504(vendor: FakeServer) -> None:
    release = threading.Event()

    def stall(received: Received) -> Answer:
        release.wait(30)
        return Answer(200, {})

    vendor.route("GET", "/slow", stall)
    try:
        with pytest.raises(HttpError) as failed:
            Upstream("Vendor", vendor.url, timeout=0.2).request("GET", "/slow")
    finally:
        release.set()
    assert failed.value.status == 504
    assert failed.value.detail == "Vendor did not answer within 0.2 s"


def test_a_vendor_that_answers_a_byte_at_a_time_is_cut_off_at_the_timeout() -> None:
    """Each byte comes well within the timeout, the whole answer never would."""
    listener = socket.create_server(("127.0.0.1", 0))

    def drip() -> None:
        connection, _ = listener.accept()
        with connection, suppress(OSError):
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            for _ in range(1000):
                connection.sendall(b" ")
                time.sleep(0.05)

    threading.Thread(target=drip, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    started = time.monotonic()
    with pytest.raises(HttpError) as failed:
        Upstream("Vendor", url, timeout=0.5).request("GET", "/drip")
    assert time.monotonic() - started < 3
    assert (failed.value.status, failed.value.detail) == (504, "Vendor did not answer within 0.5 s")
    listener.close()


def test_an_answer_larger_than_the_cap_is_a_502(vendor: FakeServer) -> None:
    vendor.route("GET", "/big", lambda _: Answer(200, b"x" * 1001))
    vendor.route("GET", "/fits", lambda _: Answer(200, b"x" * 1000))
    upstream = Upstream("Vendor", vendor.url, max_answer_bytes=1000)
    assert upstream.request("GET", "/fits").body == b"x" * 1000
    with pytest.raises(HttpError) as failed:
        upstream.request("GET", "/big")
    assert (failed.value.status, failed.value.detail) == (
        502,
        "Vendor answered more than 1000 bytes",
    )
    assert MAX_ANSWER_BYTES == 16 * 1024 * 1024


def test_an_unreachable_vendor_is_a_502() -> None:
    closed = FakeServer().start()
    url = closed.url
    closed.stop()
    with pytest.raises(HttpError) as failed:
        Upstream("Vendor", url, bearer=TOKEN).request("GET", "/")
    assert failed.value.status == 502
    assert failed.value.detail.startswith("Vendor could not be reached")


def test_problems_never_carry_the_secrets() -> None:
    upstream = Upstream("Vendor", "https://vendor.example", bearer=TOKEN, secrets=["pw-1"])
    error = upstream.error(f"echoed Bearer {TOKEN} and pw-1", status=400)
    assert (error.status, error.detail) == (400, "Vendor echoed Bearer [redacted] and [redacted]")
    assert problem("Mail", "said pw-1", secrets=["pw-1"]).detail == "Mail said [redacted]"


def test_a_base_url_that_is_not_http_and_a_missing_setting_are_clear_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(RuntimeError, match="is not an http"):
        Upstream("Vendor", "file:///etc/passwd")
    monkeypatch.setenv("SOME_TOKEN", "  ")
    with pytest.raises(RuntimeError, match="SOME_TOKEN is not set"):
        setting("SOME_TOKEN")
    assert setting("SOME_TOKEN", "fallback") == "fallback"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("42", 42),
        (" 7 ", 7),
        ("\xb2", None),
        ("\u0663", None),
        ("-1", None),
        ("1.5", None),
        ("9" * 5000, None),
        ("Wed, 21 Oct 2026 07:28:00 GMT", None),
        ("", None),
        (None, None),
    ],
)
def test_whole_seconds_are_ascii_digits_only(value: str | None, seconds: int | None) -> None:
    """ "²" and "٣" pass `str.isdigit()`; `int()` fails on the first (and 5000 digits)."""
    assert whole_seconds(value) == seconds
