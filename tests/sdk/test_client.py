"""The SDK's Client against a real `bay serve`: a script's three steps, and every refusal."""

from __future__ import annotations

import pickle
from datetime import date
from typing import TYPE_CHECKING

import pytest

from servicebay import ApiError, Client
from servicebay.sdk import ApiUnavailable
from tests.conftest import free_port
from tests.gateway.gateway_support import unique_name, well_formed_unknown_key

if TYPE_CHECKING:
    from tests.conftest import Server


def test_a_script_finds_the_server_and_its_identity_in_the_environment(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAY_URL", server.url)
    monkeypatch.setenv("INTERNAL_API_KEY", server.admin_key)
    monkeypatch.setenv("BAY_API_KEY", well_formed_unknown_key())  # INTERNAL_API_KEY wins
    with Client() as client:
        me = client.get("api/v1/me")
        assert client.get("/api/v1/me")["id"] == me["id"]
    assert me["email"] == server.admin_email


def test_pull_with_params_and_write_back_through_a_sql_service(
    server: Server, sales_service: str
) -> None:
    team = unique_name("analysts")
    _, key = server.new_user(teams=[team])
    with Client(url=server.url, api_key=server.admin_key) as admin:
        admin.post(
            "api/v1/grants",
            json={
                "principal": f"team:{team}",
                "resource": f"service:{sales_service}/customer",
                "actions": ["read", "create", "delete"],
            },
        )
        active = admin.get(
            f"{sales_service}/queries/daily_active_users", params={"day": date(2026, 11, 27)}
        )
    assert active["data"] == [{"users": 2}]

    with Client(url=server.url, api_key=key) as client:
        pro = client.get(f"{sales_service}/customer", params=[("plan", "pro")])
        assert [row["email"] for row in pro["data"]] == ["julius@nyknicks.com"]
        julius = client.get(f"/{sales_service}/customer/julius@nyknicks.com")
        assert julius["name"] == "Julius Randle"

        created = client.post(
            f"{sales_service}/customer",
            json={"email": "mitchell robinson@nyknicks.com", "name": "Mitchell Robinson"},
        )
        assert created["plan"] == "free"
        # The space in the key is escaped on the way, not taken for the end of the path.
        assert client.delete(f"{sales_service}/customer/mitchell robinson@nyknicks.com") is None


def test_a_missing_grant_is_an_api_error_naming_the_permission(
    server: Server, sales_service: str
) -> None:
    _, key = server.new_user()
    with Client(url=server.url, api_key=key) as client, pytest.raises(ApiError) as raised:
        client.get(f"{sales_service}/customer", params={"plan": "pro"})
    error = raised.value
    assert error.status == 403
    assert error.title == "Forbidden"
    assert f"service:{sales_service}/customer" in error.detail
    assert error.type is not None
    assert error.type.startswith("urn:servicebay:problem")
    assert error.request_id
    assert str(error) == (
        f"403 Forbidden: {error.detail} "
        f"(GET {server.url}/{sales_service}/customer, request {error.request_id})"
    )


def test_unknown_things_are_404s_and_bad_input_lists_its_fields(server: Server) -> None:
    with Client(url=server.url, api_key=server.admin_key) as client:
        with pytest.raises(ApiError) as missing:
            client.get("no_such_service/anything")
        with pytest.raises(ApiError) as invalid:
            client.post("api/v1/users", json={"email": 5, "teams": "not a list"})
    assert missing.value.status == 404
    assert missing.value.title == "Not Found"
    assert missing.value.detail
    assert invalid.value.status == 400
    assert invalid.value.errors
    for problem in invalid.value.errors:
        assert str(problem["msg"]) in str(invalid.value)


def test_a_bad_key_is_a_401_whose_text_never_holds_the_key(server: Server) -> None:
    key = well_formed_unknown_key()
    client = Client(url=server.url, api_key=key)
    with client, pytest.raises(ApiError) as raised:
        client.get("api/v1/me")
    assert raised.value.status == 401
    assert raised.value.title == "Unauthorized"
    assert raised.value.request_id
    for text in (str(raised.value), repr(raised.value), repr(client), str(vars(raised.value))):
        assert key not in text
    assert "key from the api_key argument" in repr(client)


def test_a_refused_connection_names_the_url_and_is_an_api_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    key = well_formed_unknown_key()
    with Client(url=url, api_key=key) as client, pytest.raises(ApiError) as raised:
        client.get("api/v1/me")
    assert isinstance(raised.value, ApiUnavailable)
    assert raised.value.status is None
    assert f"connection refused: is ServiceBay running at {url}?" in str(raised.value)
    assert f"GET {url}/api/v1/me" in str(raised.value)
    assert key not in str(raised.value)


def test_errors_survive_pickling_for_worker_processes(server: Server) -> None:
    client = Client(url=server.url, api_key=server.admin_key)
    with client, pytest.raises(ApiError) as raised:
        client.get("no_such_service/anything")
    copy = pickle.loads(pickle.dumps(raised.value))  # noqa: S301 - our own bytes
    assert type(copy) is ApiError
    assert (copy.status, copy.request_id, str(copy)) == (
        404,
        raised.value.request_id,
        str(raised.value),
    )
