"""`http` services through a real `bay serve`, forwarding to a real HTTP server on loopback.

A call is admitted like any service call (key, grant, audit), then forwarded with the
service's own credential and nothing of the caller's; what goes wrong upstream is a 502
or 504 naming the service and the route, and the secret appears nowhere.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.responses import JSONResponse, PlainTextResponse, Response

from tests.conftest import Server, free_port
from tests.gateway.gateway_support import assert_problem, find_event, unique_name
from tests.services.http.upstream import Received, Upstream, running_upstream

IG_USER = "17841400000000000"


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with running_upstream() as running:
        yield running


@pytest.fixture
def token() -> str:
    """The upstream credential a test's service holds: unique, so a leak is found by grep."""
    return f"EAAG{secrets.token_hex(16)}"


def register(
    admin: httpx.Client,
    base_url: str,
    routes: dict[str, Any],
    *,
    token: str | None = None,
    **extra: Any,
) -> str:
    """Register an `http` service (its secret allowed for it when there is a token)."""
    name = unique_name("api")
    document: dict[str, Any] = {
        "name": name,
        "kind": "http",
        "description": "A stand-in SaaS API",
        "base_url": base_url,
        "routes": routes,
        **extra,
    }
    if token is not None:
        secret = f"TOKEN_{secrets.token_hex(4).upper()}"
        stored = admin.put(
            f"/api/v1/secrets/{secret}", json={"value": token, "allow": [f"service:{name}"]}
        )
        assert stored.status_code == 200, stored.text
        document["secret"] = secret
    registered = admin.post("/api/v1/services", json=document)
    assert registered.status_code == 201, registered.text
    return name


def grant(admin: httpx.Client, email: str, resource: str, *actions: str) -> None:
    granted = admin.post(
        "/api/v1/grants",
        json={"principal": f"user:{email}", "resource": resource, "actions": list(actions)},
    )
    assert granted.status_code == 201, granted.text


FOLLOWERS = {
    "get_follower_count": {
        "path": f"/{IG_USER}?fields=followers_count",
        "description": "The account's follower count now.",
    }
}


def test_a_granted_call_reaches_the_upstream_with_the_services_credential_only(
    server: Server, admin: httpx.Client, upstream: Upstream, token: str
) -> None:
    upstream.answer("GET", f"/v19.0/{IG_USER}", 200, {"followers_count": 7100, "id": IG_USER})
    name = register(admin, upstream.url + "/v19.0", FOLLOWERS, token=token)
    email, key = server.new_user()
    grant(admin, email, f"service:{name}/get_follower_count", "read")

    with server.client(key) as client:
        answer = client.get(
            f"/{name}/get_follower_count",
            params={"locale": "en_US"},
            headers={"Cookie": "session=abc", "X-Custom": "mine"},
        )
    with server.client() as client:
        by_query = client.get(f"/{name}/get_follower_count", params={"api_key": key})

    assert answer.status_code == 200, answer.text
    assert answer.json() == {"followers_count": 7100, "id": IG_USER}
    assert by_query.status_code == 200, by_query.text
    first, second = upstream.requests_to(f"/v19.0/{IG_USER}")
    assert first.query == [("fields", "followers_count"), ("locale", "en_US")]
    assert second.query == [("fields", "followers_count")]  # the caller's key stays behind
    for received in (first, second):
        assert received.headers["authorization"] == f"Bearer {token}"
        assert key not in json.dumps(received.headers)
        assert "cookie" not in received.headers
        assert "x-custom" not in received.headers
    assert first.headers["x-request-id"] == answer.headers["x-request-id"]
    event = find_event(admin, answer.headers["x-request-id"], actor=email)
    assert (event["resource"], event["action"], event["outcome"]) == (
        f"service:{name}/get_follower_count",
        "service.read",
        "allowed",
    )


def test_a_custom_header_carries_the_secret_where_the_upstream_wants_it(
    admin: httpx.Client, upstream: Upstream, token: str
) -> None:
    upstream.answer("GET", "/v1/me", 200, {"me": True})
    name = register(
        admin,
        upstream.url + "/v1",
        {"me": {"path": "/me", "description": "Who the token belongs to."}},
        token=token,
        auth_header={"name": "X-Api-Token", "value": "Token {secret}"},
    )
    assert admin.get(f"/{name}/me").status_code == 200
    (received,) = upstream.requests_to("/v1/me")
    assert received.headers["x-api-token"] == f"Token {token}"
    assert "authorization" not in received.headers


POSTS = {
    "get_posts": {
        "path": "/users/{user}/posts?since={day}&limit={limit}",
        "description": "A user's posts since a day.",
        "params": {
            "user": {"required": True, "description": "The user's handle."},
            "day": {"type": "date", "required": True, "description": "The first day."},
            "limit": {"type": "integer", "description": "At most this many posts."},
        },
    }
}


def test_placeholders_are_filled_from_the_query_or_path_segments_and_encoded_whole(
    admin: httpx.Client, upstream: Upstream
) -> None:
    # The fake routes on the decoded path; what was sent on the wire is in raw_path.
    upstream.route("GET", "/users/a/b/posts", lambda _: JSONResponse({"data": []}))
    upstream.route("GET", "/users/knicks/posts", lambda _: JSONResponse({"data": [1]}))
    name = register(admin, upstream.url, POSTS)

    by_query = admin.get(f"/{name}/get_posts", params={"user": "a/b", "day": "2026-11-20"})
    by_segment = admin.get(
        f"/{name}/get_posts/knicks", params={"day": "2026-11-20", "limit": "5", "extra": "x"}
    )

    assert by_query.status_code == 200, by_query.text
    assert by_query.json() == {"data": []}
    assert by_segment.json() == {"data": [1]}
    encoded, plain = upstream.received
    assert encoded.raw_path == "/users/a%2Fb/posts"
    assert encoded.query == [("since", "2026-11-20")]  # no limit given: the pair is left out
    assert plain.query == [("since", "2026-11-20"), ("limit", "5"), ("extra", "x")]


def test_parameters_are_checked_before_anything_is_sent(
    admin: httpx.Client, upstream: Upstream
) -> None:
    name = register(admin, upstream.url, POSTS)
    missing = admin.get(f"/{name}/get_posts", params={"user": "knicks"})
    body = assert_problem(missing, 400, "day is required: The first day.")
    assert body["errors"][0]["loc"] == ["query", "day"]
    wrong = admin.get(
        f"/{name}/get_posts", params={"user": "knicks", "day": "Friday", "limit": "ten"}
    )
    locs = [error["loc"] for error in assert_problem(wrong, 400)["errors"]]
    assert sorted(locs) == [["query", "day"], ["query", "limit"]]
    climbing = admin.get(f"/{name}/get_posts", params={"user": "..", "day": "2026-11-20"})
    assert_problem(climbing, 400, "user fills a path segment")
    assert upstream.received == []


def test_a_json_body_is_passed_on_or_built_from_the_routes_template(
    admin: httpx.Client, upstream: Upstream, token: str
) -> None:
    upstream.answer("POST", "/api/chat.postMessage", 200, {"ok": True, "ts": "1.2"})
    upstream.answer("POST", "/api/files.remote.add", 201, {"ok": True})
    routes = {
        "post_message_to_channel": {
            "method": "POST",
            "path": "/api/chat.postMessage",
            "description": "Post a message to a channel.",
            "params": {
                "message": {"required": True, "description": "The text."},
                "channel_name": {"required": True, "description": "The channel."},
                "unfurl": {"type": "boolean", "description": "Unfurl links."},
            },
            "body": {"channel": "{channel_name}", "text": "{message}", "unfurl_links": "{unfurl}"},
        },
        "add_file": {
            "method": "POST",
            "path": "/api/files.remote.add",
            "description": "Add a remote file; the body is Slack's.",
        },
    }
    name = register(admin, upstream.url, routes, token=token)

    from_query = admin.post(
        f"/{name}/post_message_to_channel",
        params={"message": "Hi\nthere & you", "channel_name": "Marketing"},
    )
    from_body = admin.post(
        f"/{name}/post_message_to_channel",
        json={"message": "Hello", "channel_name": "Sales", "unfurl": False},
    )
    passed_on = admin.post(f"/{name}/add_file", json={"external_id": "x", "title": "Q4"})

    assert from_query.status_code == 200, from_query.text
    assert from_query.json() == {"ok": True, "ts": "1.2"}
    assert passed_on.status_code == 201
    first, second = upstream.requests_to("/api/chat.postMessage")
    assert first.json == {"channel": "Marketing", "text": "Hi\nthere & you"}
    assert first.query == []  # the template's parameters are consumed
    assert second.json == {"channel": "Sales", "text": "Hello", "unfurl_links": False}
    assert first.headers["content-type"] == "application/json"
    assert upstream.requests_to("/api/files.remote.add")[0].json == {
        "external_id": "x",
        "title": "Q4",
    }
    assert from_body.status_code == 200


def test_the_upstreams_own_client_errors_come_back_with_their_status(
    admin: httpx.Client, upstream: Upstream
) -> None:
    error = {"error": {"message": "Invalid OAuth access token.", "type": "OAuthException"}}
    upstream.answer("GET", f"/{IG_USER}", 400, error)
    upstream.route(
        "GET",
        "/limited",
        lambda _: JSONResponse({"error": "ratelimited"}, 429, headers={"Retry-After": "30"}),
    )
    routes = {**FOLLOWERS, "limited": {"path": "/limited", "description": "Rate limited."}}
    name = register(admin, upstream.url, routes)
    answer = admin.get(f"/{name}/get_follower_count")
    assert answer.status_code == 400
    assert answer.json() == error
    limited = admin.get(f"/{name}/limited")
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "30")


def test_unknown_routes_are_404_and_other_methods_405(
    admin: httpx.Client, upstream: Upstream
) -> None:
    name = register(admin, upstream.url, FOLLOWERS)
    assert_problem(admin.get(f"/{name}/get_following_count"), 404, "has no route")
    assert_problem(admin.get(f"/{name}/get_follower_count/extra/segments"), 404)
    assert_problem(admin.get(f"/{name}"), 404)
    wrong_method = admin.post(f"/{name}/get_follower_count", json={})
    assert_problem(wrong_method, 405)
    assert wrong_method.headers["allow"] == "GET"
    assert upstream.received == []


def test_a_caller_without_a_grant_is_refused_audited_and_nothing_is_sent(
    server: Server, admin: httpx.Client, upstream: Upstream
) -> None:
    routes = {
        **FOLLOWERS,
        "post_message": {"method": "POST", "path": "/post", "description": "Post."},
    }
    name = register(admin, upstream.url, routes)
    email, key = server.new_user()
    grant(admin, email, f"service:{name}/get_follower_count", "read")
    with server.client(key) as client:
        refused = client.post(f"/{name}/post_message", json={"text": "hi"})
    body = assert_problem(refused, 403, f"you need `create` on `service:{name}/post_message`")
    event = find_event(admin, body["request_id"], actor=email)
    assert (event["resource"], event["action"], event["outcome"]) == (
        f"service:{name}/post_message",
        "service.create",
        "denied",
    )
    assert upstream.received == []


def test_an_invoke_grant_on_the_service_covers_every_route(
    server: Server, admin: httpx.Client, upstream: Upstream
) -> None:
    upstream.answer("POST", "/post", 200, {"ok": True})
    routes = {"post_message": {"method": "POST", "path": "/post", "description": "Post."}}
    name = register(admin, upstream.url, routes)
    email, key = server.new_user()
    grant(admin, email, f"service:{name}", "invoke")
    with server.client(key) as client:
        assert client.post(f"/{name}/post_message", json={"text": "hi"}).status_code == 200


def test_an_upstream_failure_is_a_502_naming_the_service_and_route_not_the_upstream(
    admin: httpx.Client, upstream: Upstream
) -> None:
    upstream.answer("GET", "/fails", 503, {"error": "maintenance"})
    upstream.route("GET", "/html", lambda _: PlainTextResponse("<html>hi</html>", 200))
    upstream.route("GET", "/moved", lambda _: Response(status_code=302, headers={"Location": "/"}))
    routes = {
        "fails": {"path": "/fails", "description": "Fails."},
        "html": {"path": "/html", "description": "Not JSON."},
        "moved": {"path": "/moved", "description": "Redirects."},
    }
    name = register(admin, upstream.url, routes)
    failed = assert_problem(admin.get(f"/{name}/fails"), 502, "failed with status 503")
    not_json = assert_problem(admin.get(f"/{name}/html"), 502, "text/plain, not JSON")
    moved = assert_problem(admin.get(f"/{name}/moved"), 502, "status 302")
    for body, route in ((failed, "fails"), (not_json, "html"), (moved, "moved")):
        assert f"service '{name}', route '{route}'" in body["detail"]
        assert str(upstream.port) not in body["detail"]
    assert len(upstream.requests_to("/moved")) == 1  # the redirect was not followed


def test_an_upstream_that_refuses_connections_is_a_502(admin: httpx.Client) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    name = register(admin, closed, FOLLOWERS)
    body = assert_problem(admin.get(f"/{name}/get_follower_count"), 502, "could not be reached")
    assert "127.0.0.1" not in body["detail"]


def test_an_upstream_that_does_not_answer_in_time_is_a_504(
    admin: httpx.Client, upstream: Upstream
) -> None:
    upstream.hold("GET", "/slow")
    routes = {"slow": {"path": "/slow", "description": "Never answers."}}
    name = register(admin, upstream.url, routes, timeout_seconds=0.3)
    assert_problem(admin.get(f"/{name}/slow"), 504, "did not answer within 0.3 s")


def test_the_secret_appears_in_no_answer_audit_record_or_log(
    server: Server, admin: httpx.Client, upstream: Upstream, token: str
) -> None:
    def echo(received: Received) -> Response:
        return JSONResponse({"you_sent": received.headers}, status_code=400)

    upstream.route("GET", "/echo", echo)
    upstream.route(
        "GET", "/crash", lambda r: JSONResponse({"auth": r.headers["authorization"]}, 500)
    )
    routes = {
        "echo": {"path": "/echo", "description": "Echoes the request's headers."},
        "crash": {"path": "/crash", "description": "Fails, quoting the credential."},
    }
    name = register(admin, upstream.url, routes, token=token)

    echoed = admin.get(f"/{name}/echo")
    crashed = admin.get(f"/{name}/crash")
    described = admin.get(f"/api/v1/services/{name}")
    documented = admin.get(f"/{name}/openapi.json")

    assert echoed.json()["you_sent"]["authorization"] == "Bearer [redacted]"
    assert_problem(crashed, 502)
    assert upstream.requests_to("/echo")[0].headers["authorization"] == f"Bearer {token}"
    audit = admin.get("/api/v1/audit", params={"limit": 200}).text
    for text in (echoed.text, crashed.text, described.text, documented.text, audit):
        assert token not in text
    assert token not in server.log_text()


def test_a_caller_cannot_change_what_the_routes_fixed_query_sets(
    admin: httpx.Client, upstream: Upstream
) -> None:
    """An upstream that takes the last of two values would otherwise take the caller's."""
    upstream.route("GET", "/search", lambda _: JSONResponse({"hits": []}))
    routes = {"search": {"path": "/search?account_id=123", "description": "One account's."}}
    name = register(admin, upstream.url, routes)

    refused = admin.get(f"/{name}/search", params={"account_id": "999", "q": "x"})

    body = assert_problem(refused, 400, "account_id is set by the route")
    assert [error["loc"] for error in body["errors"]] == [["query", "account_id"]]
    assert upstream.requests_to("/search") == []
    assert admin.get(f"/{name}/search", params={"q": "x"}).status_code == 200
    assert upstream.requests_to("/search")[0].query == [("account_id", "123"), ("q", "x")]


def test_the_upstream_url_with_the_callers_values_stays_out_of_the_log(
    server: Server, admin: httpx.Client, upstream: Upstream
) -> None:
    """httpx logs every request's URL; the gateway's own access line redacts secrets."""
    upstream.route("GET", "/search", lambda _: JSONResponse({"hits": []}))
    name = register(admin, upstream.url, {"search": {"path": "/search", "description": "Find."}})

    assert admin.get(f"/{name}/search", params={"password": "hunter2-in-a-url"}).status_code == 200

    assert upstream.requests_to("/search")[0].query == [("password", "hunter2-in-a-url")]
    assert f"/{name}/search" in server.log_text()
    assert "hunter2-in-a-url" not in server.log_text()


def test_each_route_is_documented_in_the_services_and_the_platforms_openapi(
    server: Server, admin: httpx.Client, upstream: Upstream
) -> None:
    name = register(admin, upstream.url, {**FOLLOWERS, **POSTS})
    with server.client() as anyone:
        own = anyone.get(f"/{name}/openapi.json")
        platform = anyone.get("/openapi.json")
    assert own.status_code == 200
    paths = own.json()["paths"]
    assert set(paths) == {f"/{name}/get_follower_count", f"/{name}/get_posts"}
    operation = paths[f"/{name}/get_posts"]["get"]
    assert operation["description"].startswith("A user's posts since a day.")
    assert operation["tags"] == [name]
    assert operation["security"]
    parameters = {param["name"]: param for param in operation["parameters"]}
    assert parameters["day"]["required"] is True
    assert parameters["day"]["schema"] == {"type": "string", "format": "date"}
    assert parameters["limit"]["schema"] == {"type": "integer"}
    assert set(operation["responses"]) >= {"200", "400", "502", "504"}
    assert f"/{name}/get_follower_count" in platform.json()["paths"]


def test_registration_refuses_a_bad_document_or_a_secret_not_allowed_for_it(
    admin: httpx.Client, upstream: Upstream
) -> None:
    bad = admin.post(
        "/api/v1/services",
        json={"name": unique_name("api"), "kind": "http", "description": "Bad",
              "base_url": "ftp://example.com", "routes": {"r": {"path": "/r"}}},
    )  # fmt: skip
    locs = sorted(error["loc"] for error in assert_problem(bad, 400)["errors"])
    assert locs == [["body", "base_url"], ["body", "routes", "r", "description"]]
    secret = f"TOKEN_{secrets.token_hex(4).upper()}"
    stored = admin.put(f"/api/v1/secrets/{secret}", json={"value": "t", "allow": []})
    assert stored.status_code == 200
    name = unique_name("api")
    not_allowed = admin.post(
        "/api/v1/services",
        json={"name": name, "kind": "http", "description": "Not allowed", "secret": secret,
              "base_url": upstream.url, "routes": FOLLOWERS},
    )  # fmt: skip
    assert_problem(not_allowed, 400, f"bay secrets allow {secret} service:{name}")


def test_a_secret_that_cannot_be_a_header_is_refused_at_registration_unquoted(
    admin: httpx.Client, upstream: Upstream
) -> None:
    secret = f"TOKEN_{secrets.token_hex(4).upper()}"
    name = unique_name("api")
    stored = admin.put(
        f"/api/v1/secrets/{secret}",
        json={"value": "line-one-token\nline-two", "allow": [f"service:{name}"]},
    )
    assert stored.status_code == 200, stored.text
    refused = admin.post(
        "/api/v1/services",
        json={"name": name, "kind": "http", "description": "Bad token", "secret": secret,
              "base_url": upstream.url, "routes": FOLLOWERS},
    )  # fmt: skip
    body = assert_problem(refused, 400, "cannot be sent in a header")
    assert "line-one-token" not in json.dumps(body)
    assert admin.get(f"/api/v1/services/{name}").status_code == 404
