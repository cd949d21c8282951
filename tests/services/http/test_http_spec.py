"""`service.json` of kind `http`: what a registrant may write, and where each mistake is.

A document is refused with every problem located (`loc`), without echoing a value that
could be a credential, before anything is stored or any upstream is called.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from servicebay.core.errors import InvalidInput
from servicebay.services.http.spec import HttpServiceSpec
from servicebay.services.kinds import parse_spec

VALID: dict[str, Any] = {
    "name": "instagram",
    "kind": "http",
    "description": "The Knicks' Instagram account",
    "base_url": "https://graph.facebook.com/v19.0/",
    "secret": "INSTAGRAM_TOKEN",
    "routes": {
        "get_follower_count": {
            "path": "/17841400000000000?fields=followers_count",
            "description": "Today's follower count",
        },
        "get_user": {
            "path": "/users/{id}",
            "description": "One user",
            "params": {"id": {"required": True, "description": "The user's id"}},
        },
        "post_message": {
            "method": "post",
            "path": "/api/chat.postMessage",
            "description": "Post to a channel",
            "params": {
                "channel_name": {"required": True, "description": "Where"},
                "message": {"required": True, "description": "What"},
            },
            "body": {"channel": "{channel_name}", "text": "{message}"},
        },
    },
}


def document(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(VALID)
    doc.update(changes)
    return doc


def with_route(name: str, **route: Any) -> dict[str, Any]:
    doc = document()
    doc["routes"] = {name: route}
    return doc


def refusal(doc: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(InvalidInput) as refused:
        parse_spec(doc)
    assert refused.value.errors
    return refused.value.errors


def locations(doc: dict[str, Any]) -> list[list[Any]]:
    return [error["loc"] for error in refusal(doc)]


def test_a_valid_document_gets_its_defaults() -> None:
    spec = parse_spec(document())
    assert isinstance(spec, HttpServiceSpec)
    assert spec.base_url == "https://graph.facebook.com/v19.0"  # the trailing / is dropped
    assert spec.timeout_seconds == 10
    assert spec.header is not None
    assert (spec.header.name, spec.header.value) == ("Authorization", "Bearer {secret}")
    routes = spec.routes
    assert routes["get_follower_count"].method == "GET"
    assert routes["get_follower_count"].grant_action == "read"
    assert routes["post_message"].method == "POST"
    assert routes["post_message"].grant_action == "create"


def test_a_route_may_name_its_grant_action_and_a_service_its_header() -> None:
    doc = with_route("refresh", method="PUT", path="/refresh", description="Refresh", action="read")
    doc["auth_header"] = {"name": "X-Api-Token", "value": "Token {secret}"}
    spec = parse_spec(doc)
    assert isinstance(spec, HttpServiceSpec)
    assert spec.routes["refresh"].grant_action == "read"
    assert spec.header is not None
    assert spec.header.name == "X-Api-Token"


def test_a_service_without_a_secret_sends_no_auth_header() -> None:
    doc = document()
    del doc["secret"]
    spec = parse_spec(doc)
    assert isinstance(spec, HttpServiceSpec)
    assert spec.header is None


def test_every_route_needs_a_description_and_a_service_at_least_one_route() -> None:
    assert locations(with_route("get", path="/x")) == [["body", "routes", "get", "description"]]
    assert locations(with_route("get", path="/x", description="")) == [
        ["body", "routes", "get", "description"]
    ]
    assert locations(document(routes={})) == [["body", "routes"]]


def test_a_parameter_needs_a_description() -> None:
    doc = with_route("get", path="/x", description="X", params={"day": {"type": "date"}})
    assert locations(doc) == [["body", "routes", "get", "params", "day", "description"]]


@pytest.mark.parametrize(
    "base_url",
    [
        "graph.facebook.com/v19.0",
        "ftp://graph.facebook.com",
        "file:///etc/passwd",
        "https://",
        "https://graph.facebook.com/v19.0?access_token=EAAB",
        "https://graph.facebook.com:99999",
        "https://graph.facebook.com/a b",
    ],
)
def test_a_base_url_is_an_http_url_to_a_host_without_query(base_url: str) -> None:
    errors = refusal(document(base_url=base_url))
    assert [error["loc"] for error in errors] == [["body", "base_url"]]
    assert "EAAB" not in str(errors)


def test_credentials_in_the_base_url_are_refused_without_being_repeated() -> None:
    errors = refusal(document(base_url="https://bot:hunter2secret@slack.com/api"))
    assert [error["loc"] for error in errors] == [["body", "base_url"]]
    assert "secret" in errors[0]["msg"]
    assert "hunter2secret" not in str(errors)


def test_a_secret_is_named_never_given() -> None:
    errors = refusal(document(secret="xoxb-1234-5678-abcdef"))
    assert [error["loc"] for error in errors] == [["body", "secret"]]
    assert "xoxb" not in str(errors)


def test_an_auth_header_needs_a_secret_and_one_slot_for_it() -> None:
    doc = document(auth_header={"value": "Bearer {secret}"})
    del doc["secret"]
    assert locations(doc) == [["body", "auth_header"]]
    assert locations(document(auth_header={"value": "Bearer token"})) == [
        ["body", "auth_header", "value"]
    ]
    assert locations(document(auth_header={"value": "{secret}{secret}"})) == [
        ["body", "auth_header", "value"]
    ]
    assert locations(document(auth_header={"name": "Host"})) == [["body", "auth_header", "name"]]
    assert locations(document(auth_header={"name": "Bad Header"})) == [
        ["body", "auth_header", "name"]
    ]


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "FETCH", 3])
def test_a_route_method_is_one_of_get_post_put_patch_delete(method: object) -> None:
    doc = with_route("go", method=method, path="/go", description="Go")
    assert locations(doc) == [["body", "routes", "go", "method"]]


def test_a_timeout_is_positive_and_bounded() -> None:
    assert locations(document(timeout_seconds=0)) == [["body", "timeout_seconds"]]
    assert locations(document(timeout_seconds=3600)) == [["body", "timeout_seconds"]]


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("users/{id}", "relative to base_url"),
        ("//evil.example.com/users", "relative to base_url"),
        ("/../admin", "'..'"),
        ("/users/%2e%2e/admin", "'..'"),
        ("/./users", "'..'"),
        ("/users#fragment", "'#'"),
        ("/users/{id", "brace"),
        ("/users/{1d}", "brace"),
        ("/users?since=day-{id}", "whole value"),
        ("/users?{id}=1", "brace"),
        ("/users/{undeclared}", "declared"),
        ("/users/{optional}", "must be required"),
    ],
)
def test_a_route_path_stays_under_the_base_url_with_declared_placeholders(
    path: str, why: str
) -> None:
    params = {
        "id": {"required": True, "description": "The id"},
        "optional": {"description": "Not required"},
    }
    errors = refusal(with_route("get", path=path, description="Get", params=params))
    assert [error["loc"] for error in errors] == [["body", "routes", "get"]]
    assert why in errors[0]["msg"]


def test_a_body_template_names_declared_parameters_and_only_where_a_body_goes() -> None:
    undeclared = with_route(
        "post", method="POST", path="/p", description="Post", body={"text": "{message}"}
    )
    assert "message" in refusal(undeclared)[0]["msg"]
    on_get = with_route(
        "get",
        path="/g",
        description="Get",
        params={"q": {"description": "Q"}},
        body={"q": "{q}"},
    )
    assert locations(on_get) == [["body", "routes", "get"]]


def test_route_and_parameter_names_are_plain() -> None:
    assert locations(with_route("no/slash", path="/x", description="X")) == [["body", "routes"]]
    bad_param = with_route(
        "get", path="/x", description="X", params={"a-b": {"description": "Dashed"}}
    )
    assert locations(bad_param) == [["body", "routes", "get", "params"]]


def test_unknown_keys_are_refused_where_they_are() -> None:
    doc = document()
    doc["routes"]["get_follower_count"]["verb"] = "GET"
    doc["headers"] = {"X-Extra": "1"}
    assert sorted(locations(doc)) == [
        ["body", "headers"],
        ["body", "routes", "get_follower_count", "verb"],
    ]
