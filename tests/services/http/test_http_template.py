"""Route templates: a value fills its slot and nothing else, whatever characters it holds."""

from __future__ import annotations

import pytest

from servicebay.services.http.template import Slot, TemplateError, compile_route


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        ("a/b", "a%2Fb"),
        ("x?admin=1", "x%3Fadmin%3D1"),
        ("x#frag", "x%23frag"),
        ("%2e%2e", "%252e%252e"),
        ("Knicks Fan é", "Knicks%20Fan%20%C3%A9"),
    ],
)
def test_a_path_value_is_encoded_whole_so_it_stays_in_its_segment(value: str, sent: str) -> None:
    template = compile_route("/v1/users/{user}.json")
    assert template.render_path({"user": value}) == f"/v1/users/{sent}.json"


def test_the_fixed_query_keeps_its_order_and_drops_pairs_of_absent_optional_values() -> None:
    template = compile_route("/insights?metric=follower_count&since={day}&until={until}&x=a%20b")
    assert template.query == (
        ("metric", "follower_count"),
        ("since", Slot("day")),
        ("until", Slot("until")),
        ("x", "a b"),
    )
    assert template.render_query({"day": "2026-11-22"}) == [
        ("metric", "follower_count"),
        ("since", "2026-11-22"),
        ("x", "a b"),
    ]


def test_a_body_template_takes_typed_values_and_only_whole_string_slots() -> None:
    template = compile_route(
        "/post",
        {"channel": "{channel}", "text": "Hello {name}", "n": "{n}", "tags": ["{tag}"]},
    )
    assert template.placeholders == {"channel", "n", "tag"}
    assert template.render_body({"channel": "Marketing", "n": 3}) == {
        "channel": "Marketing",
        "text": "Hello {name}",  # part of a string is text, not a placeholder
        "n": 3,
        "tags": [None],
    }


def test_path_placeholders_are_listed_in_order() -> None:
    assert compile_route("/orgs/{org}/repos/{repo}/pulls?state={state}").in_path == (
        "org",
        "repo",
    )


@pytest.mark.parametrize(
    "path", ["relative", "//host/x", "/a/../b", "/a/%2E%2E", "/a b", "/a\\b", "/a/{b", "/a/}"]
)
def test_a_path_that_could_leave_its_base_or_is_malformed_is_refused(path: str) -> None:
    with pytest.raises(TemplateError):
        compile_route(path)
