"""Setting a Client up: where the URL and key come from, and what a wrong one is told."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date

import pytest

from servicebay import Client
from servicebay.sdk import ConfigurationError
from tests.sdk.sdk_support import FakeServer

Fake = Callable[..., FakeServer]
KEY = "bay_" + "s" * 43


def test_without_a_url_the_error_says_to_set_bay_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTERNAL_API_KEY", KEY)
    with pytest.raises(ConfigurationError, match=r"no ServiceBay URL: set BAY_URL"):
        Client()


def test_without_a_key_the_error_names_both_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAY_URL", "http://127.0.0.1:8600")
    with pytest.raises(ConfigurationError) as raised:
        Client()
    assert "no API key: set INTERNAL_API_KEY or BAY_API_KEY" in str(raised.value)
    assert "`bay keys create`" in str(raised.value)


def test_bay_api_key_serves_when_no_internal_key_is_set(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = fake()
    monkeypatch.setenv("BAY_URL", server.url)
    monkeypatch.setenv("BAY_API_KEY", KEY + "\n")  # as pasted from a file
    with Client() as client:
        client.get("me")
        assert repr(client) == f"<Client {server.url} key from BAY_API_KEY>"
    assert server.seen[0].headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("api.knicks.io", "BAY_URL 'api.knicks.io' has no scheme: write https://api.knicks.io"),
        ("ftp://files.example.com", "BAY_URL must be an http:// or https:// URL"),
        ("http://:8600", "BAY_URL 'http://:8600' names no host"),
        ("http://127.0.0.1:port", "BAY_URL (http://127.0.0.1) has an invalid port"),
    ],
)
def test_a_malformed_url_is_explained(
    url: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAY_URL", url)
    with pytest.raises(ConfigurationError) as raised:
        Client(api_key=KEY)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"https://bay.example.com/?api_key={KEY}", "has a query string or fragment"),
        (f"https://me:{KEY}@bay.example.com", "holds a user name or password"),
        (f"bay.example.com/x?api_key={KEY}", "has no scheme"),
    ],
)
def test_a_key_put_in_the_url_is_refused_without_being_repeated(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Client(url=url, api_key=KEY)
    assert message in str(raised.value)
    assert KEY not in str(raised.value)


@pytest.mark.parametrize("key", [f"{KEY}\nX-Injected: 1", f"bay_{'é' * 10}", "bay_one two"])
def test_a_key_that_cannot_be_a_header_is_refused_without_being_repeated(key: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Client(url="http://127.0.0.1:8600", api_key=key)
    assert "the API key from the api_key argument contains a space" in str(raised.value)
    assert key not in str(raised.value)
    assert key.split()[0] not in str(raised.value)


@pytest.mark.parametrize("timeout", [0, -1, True, "30"])
def test_the_timeout_must_be_positive_seconds(timeout: object) -> None:
    with pytest.raises(ConfigurationError, match="timeout must be a positive number"):
        Client(url="http://127.0.0.1:8600", api_key=KEY, timeout=timeout)  # type: ignore[arg-type]


def test_calls_that_cannot_be_sent_are_refused_before_sending(fake: Fake) -> None:
    server = fake()
    with Client(url=server.url, api_key=KEY) as client:
        with pytest.raises(ValueError, match="not a full URL"):
            client.get(f"https://elsewhere.example.com/steal?api_key={KEY}")
        with pytest.raises(TypeError, match=r"query parameter 'day': a set cannot be sent"):
            client.get("sales/queries/dau", params={"day": {date(2026, 1, 1)}})  # type: ignore[dict-item]
        with pytest.raises(TypeError, match=r"list of \(name, value\) pairs"):
            client.get("sales/customer", params=["plan=pro"])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="NaN or infinity"):
            client.post("metrics", json={"ratio": math.nan})
        with pytest.raises(TypeError, match="the json body holds a bytes"):
            client.post("files", json={"content": b"raw"})
        with pytest.raises(ValueError, match="not a valid header name"):
            client.get("x", headers={"Bad Header": "1"})
        with pytest.raises(ValueError, match="ASCII text without line breaks"):
            client.get("x", headers={"X-Note": "a\r\nInjected: yes"})
        with pytest.raises(ValueError, match="ASCII text without line breaks"):
            client.get("x", headers={"X-Note": "café"})
        with pytest.raises(ValueError, match="is not an HTTP method"):
            client.request("GET /x", "y")
    assert server.seen == []
