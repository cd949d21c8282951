"""Opaque cursors for keyset pagination: lists answer `{"data": [...], "next": cursor}`."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from servicebay.core.errors import InvalidInput

T = TypeVar("T")

MAX_LIMIT = 500


@dataclass(frozen=True)
class Page(Generic[T]):
    items: Sequence[T]
    next: str | None


def encode_cursor(position: str) -> str:
    return base64.urlsafe_b64encode(position.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    if not cursor:
        return None
    try:
        # validate=True: characters outside the alphabet are an error, not silently dropped
        # (which turned a cursor like "%%%" into "", i.e. "from the start").
        padded = cursor + "=" * (-len(cursor) % 4)
        position = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        position = None
    if not position or not position.isprintable():
        raise invalid_cursor()
    return position


def invalid_cursor() -> InvalidInput:
    return InvalidInput(
        "the cursor is not one this server handed out",
        errors=[{"loc": ["query", "cursor"], "msg": "invalid cursor", "type": "value_error"}],
    )


def page_of(rows: Sequence[T], limit: int, position: str | None) -> Page[T]:
    """Rows were fetched with `limit + 1`: the extra one says whether a next page exists."""
    if len(rows) > limit:
        return Page(rows[:limit], encode_cursor(position) if position is not None else None)
    return Page(rows, None)
