"""A route's upstream path, fixed query and body, with `{param}` placeholders.

The template is parsed once, into literal pieces and slots, so filling it never
re-parses text a caller wrote: a value fills its slot and nothing else. Path values are
percent-encoded whole (a `/`, `?` or `#` in a value stays inside its segment), query
values are encoded by the HTTP client, and body values replace a whole JSON string.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]{0,62})\}")
UNSAFE_PATH = re.compile(r"[\x00-\x20\x7f#\\]")
DOT_SEGMENTS = frozenset({".", ".."})


class TemplateError(ValueError):
    """A route template that is malformed or could leave its base URL."""


@dataclass(frozen=True)
class Slot:
    """Where a parameter's value goes."""

    name: str


Piece = str | Slot


@dataclass(frozen=True)
class RouteTemplate:
    path: tuple[Piece, ...]
    query: tuple[tuple[str, Piece], ...]
    body: Any
    """The body with a `Slot` wherever a string was exactly `{param}`; None: no body."""

    @property
    def in_path(self) -> tuple[str, ...]:
        """The path's placeholders in order: extra path segments of a call fill them."""
        return tuple(piece.name for piece in self.path if isinstance(piece, Slot))

    @property
    def placeholders(self) -> frozenset[str]:
        names = set(self.in_path)
        names.update(value.name for _, value in self.query if isinstance(value, Slot))
        names.update(_body_slots(self.body))
        return frozenset(names)

    def render_path(self, values: Mapping[str, str]) -> str:
        """The path with every slot's value percent-encoded, `/` included."""
        return "".join(
            quote(values[piece.name], safe="") if isinstance(piece, Slot) else piece
            for piece in self.path
        )

    def render_query(self, values: Mapping[str, str]) -> list[tuple[str, str]]:
        """The fixed query; a pair whose optional parameter has no value is left out."""
        rendered = []
        for name, value in self.query:
            if isinstance(value, Slot):
                if value.name not in values:
                    continue
                rendered.append((name, values[value.name]))
            else:
                rendered.append((name, value))
        return rendered

    def render_body(self, values: Mapping[str, Any]) -> Any:
        """The body with each slot's value; an object member whose optional parameter has
        no value is left out (a list item becomes null)."""
        return _fill(self.body, values)


def compile_route(path: str, body: Any = None) -> RouteTemplate:
    if not path.startswith("/") or path.startswith("//"):
        raise TemplateError("path starts with a single '/': it is relative to base_url")
    if UNSAFE_PATH.search(path):
        raise TemplateError("path holds no spaces, control characters, '#' or '\\'")
    raw_path, _, raw_query = path.partition("?")
    for segment in raw_path.split("/")[1:]:
        if unquote(segment) in DOT_SEGMENTS:
            raise TemplateError("path has no '.' or '..' segments: it stays under base_url")
    return RouteTemplate(_pieces(raw_path), _query(raw_query), _compile_body(body))


def _pieces(text: str) -> tuple[Piece, ...]:
    pieces: list[Piece] = []
    position = 0
    for match in PLACEHOLDER.finditer(text):
        pieces.append(_literal(text[position : match.start()]))
        pieces.append(Slot(match.group(1)))
        position = match.end()
    pieces.append(_literal(text[position:]))
    return tuple(piece for piece in pieces if piece != "")


def _literal(text: str) -> str:
    if "{" in text or "}" in text:
        raise TemplateError(
            "a brace in path that is not a placeholder: write `{name}` with a plain identifier"
        )
    return text


def _query(text: str) -> tuple[tuple[str, Piece], ...]:
    pairs: list[tuple[str, Piece]] = []
    for item in text.split("&") if text else []:
        name, _, value = item.partition("=")
        if not name:
            raise TemplateError("a query parameter in path has no name")
        literal_name = unquote(_literal(name))
        slot = PLACEHOLDER.fullmatch(value)
        if slot is not None:
            pairs.append((literal_name, Slot(slot.group(1))))
        else:
            if "{" in value or "}" in value:
                raise TemplateError(
                    "a placeholder in the query is a whole value, as in `?since={date}`"
                )
            pairs.append((literal_name, unquote(value)))
    return tuple(pairs)


def _compile_body(body: Any) -> Any:
    if isinstance(body, str):
        slot = PLACEHOLDER.fullmatch(body)
        return Slot(slot.group(1)) if slot is not None else body
    if isinstance(body, dict):
        return {key: _compile_body(value) for key, value in body.items()}
    if isinstance(body, list):
        return [_compile_body(item) for item in body]
    return body


def _body_slots(body: Any) -> set[str]:
    if isinstance(body, Slot):
        return {body.name}
    if isinstance(body, dict):
        return set().union(*(_body_slots(value) for value in body.values()))
    if isinstance(body, list):
        return set().union(*(_body_slots(item) for item in body))
    return set()


def _fill(body: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(body, Slot):
        return values.get(body.name)
    if isinstance(body, dict):
        return {
            key: _fill(value, values)
            for key, value in body.items()
            if not (isinstance(value, Slot) and value.name not in values)
        }
    if isinstance(body, list):
        return [_fill(item, values) for item in body]
    return body
