"""JSON with `#` and `//` comments: comments go, strings stay, errors point at the original."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from servicebay.core.jsonc import JsoncError, load, loads, strip_comments


def test_both_comment_styles_go_to_the_end_of_the_line() -> None:
    text = """# cron.json, as the article writes it
{"cron_frequency" : "0 9 * * 5", # cron syntax
 // a whole line
 "script_to_run": "report.py"// no space before the comment
}"""
    assert loads(text) == {"cron_frequency": "0 9 * * 5", "script_to_run": "report.py"}


@pytest.mark.parametrize(
    "value",
    [
        "http://example.com/path",
        "#1 in sales",
        "a // b",
        'say "# hi"',
        "back\\slash",
        "ends with a backslash \\",
        "\\\\ // two backslashes",
        "tab\tand # unicode é ✓",
    ],
)
def test_markers_inside_strings_are_data(value: str) -> None:
    text = json.dumps({"k#//": value}) + "  # trailing comment"
    assert loads(text) == {"k#//": value}


def test_escaped_quotes_do_not_end_a_string() -> None:
    text = r'{"a": "x\"# not a comment", "b": "y\\"} # a comment after \\'
    assert loads(text) == {"a": 'x"# not a comment', "b": "y\\"}


def test_quotes_inside_a_comment_do_not_open_a_string() -> None:
    text = '{ // don\'t "open" a string here\n "a": 1 # nor "here\n}'
    assert loads(text) == {"a": 1}


def test_stripping_keeps_length_lines_and_everything_but_comments() -> None:
    text = '{"a": "#x", # c1\n  // c2\n "b": 2} //c3'
    stripped = strip_comments(text)
    assert len(stripped) == len(text)
    assert stripped.split("\n")[0] == '{"a": "#x",     '
    assert stripped.split("\n")[1] == "       "
    assert stripped.endswith('"b": 2}     ')


def test_a_lone_slash_is_not_a_comment_and_is_reported_where_it_is() -> None:
    with pytest.raises(JsoncError) as raised:
        loads('{"a": 1, / not a comment\n}', source="x.json")
    assert (raised.value.line, raised.value.column) == (1, 10)


def test_a_syntax_error_is_located_in_the_original_text() -> None:
    text = (
        "// server_deployment.json, missing a comma as in the article\n"
        '{"sub_domain": "my_flask_server", # the "host"\n'
        '\t"build command": "pip install -r requirements.txt"  // then start\n'
        '\t"start command": "flask run"}\n'
    )
    with pytest.raises(JsoncError) as raised:
        loads(text, source="server_deployment.json")
    error = raised.value
    assert str(error) == "server_deployment.json:4:2: Expecting ',' delimiter"
    assert error.text == '\t"start command": "flask run"}'
    assert error.excerpt() == ['4 | \t"start command": "flask run"}', "  | \t^"]


def test_a_line_made_only_of_comment_still_counts_as_a_line() -> None:
    with pytest.raises(JsoncError) as raised:
        loads('# one\n// two\n{"a": tru}')
    assert (raised.value.line, raised.value.column) == (3, 7)


def test_windows_and_old_mac_line_ends_give_the_same_positions() -> None:
    for newline in ("\n", "\r\n", "\r"):
        text = newline.join(["{ # c", ' "a": 1,', ' "b": }'])
        with pytest.raises(JsoncError) as raised:
            loads(text)
        assert (raised.value.line, raised.value.column) == (3, 7), repr(newline)
        assert raised.value.text == ' "b": }'


def test_an_unterminated_string_is_reported_at_its_start() -> None:
    with pytest.raises(JsoncError) as raised:
        loads('{"a": "open # not a comment\n}')
    assert raised.value.line == 1
    assert raised.value.column >= 7


@pytest.mark.parametrize("text", ["", "   \n", "# only\n// comments\n"])
def test_nothing_but_comments_is_an_error_without_a_position(text: str) -> None:
    with pytest.raises(JsoncError, match="empty or only comments") as raised:
        loads(text, source="service.json")
    assert str(raised.value).startswith("service.json: ")
    assert raised.value.excerpt() == []


def test_a_key_given_twice_is_an_error() -> None:
    with pytest.raises(JsoncError, match="'tables' appears twice"):
        loads('{"tables": "*", "name": "a", "tables": {}}')
    assert loads('{"a": {"x": 1}, "b": {"x": 2}}') == {"a": {"x": 1}, "b": {"x": 2}}


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constants_are_errors(constant: str) -> None:
    with pytest.raises(JsoncError, match="is not JSON"):
        loads(f'{{"limit": {constant}}}')


def test_load_names_the_file_and_accepts_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "service.json"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1, # c\r\n "b": [1,]}\r\n')
    with pytest.raises(JsoncError) as raised:
        load(path)
    assert str(raised.value) == f"{path}:2:10: Expecting value"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1} # c\r\n')
    assert load(path) == {"a": 1}


def test_load_reports_bytes_that_are_not_utf8_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "service.json"
    path.write_bytes(b'{\n "a": "caf\xe9"\n}')
    with pytest.raises(JsoncError) as raised:
        load(path)
    assert str(raised.value) == f"{path}:2:11: not UTF-8 text"


def test_load_reports_a_file_it_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(JsoncError, match="cannot be read"):
        load(tmp_path / "missing.json")


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
COMMENT = st.sampled_from(["#", "//"]).flatmap(
    lambda marker: st.text(alphabet=st.characters(exclude_characters="\r\n"), max_size=12).map(
        lambda body: marker + body
    )
)


@given(value=JSON_VALUES, ensure_ascii=st.booleans())
def test_plain_json_is_left_exactly_as_it_is(value: Any, ensure_ascii: bool) -> None:
    text = json.dumps(value, ensure_ascii=ensure_ascii)
    assert strip_comments(text) == text
    assert loads(text) == value


@given(value=JSON_VALUES, comments=st.lists(COMMENT, min_size=1, max_size=4))
def test_comments_at_line_ends_never_change_the_value(value: Any, comments: list[str]) -> None:
    lines = json.dumps(value, indent=1, ensure_ascii=False).split("\n")
    for index, comment in enumerate(comments):
        lines[index % len(lines)] += " " + comment
    assert loads("\n".join([comments[0], *lines])) == value
