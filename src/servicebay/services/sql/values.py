"""Column values: checking what callers send, and turning what databases return into JSON.

Input is checked here, before any SQL runs, so that a bad value is a 400 naming its field
instead of a driver error (whose text would leak SQL) or a silently truncated value.
Output is JSON with one convention on every backend: decimals as strings (exact, unlike
JSON numbers in most clients), dates and times in ISO 8601, bytes in base64.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import json
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, TypeVar

T = TypeVar("T")


class Kind(StrEnum):
    INTEGER = "integer"
    DECIMAL = "decimal"
    FLOAT = "float"
    BOOLEAN = "boolean"
    STRING = "string"
    DATE = "date"
    TIME = "time"
    DATETIME = "datetime"
    UUID = "uuid"
    JSON = "json"
    BYTES = "bytes"
    OPAQUE = "opaque"
    """A type ServiceBay does not model (intervals, arrays, geometry...): shown as text,
    never written or compared."""


COMPARABLE = frozenset(
    {Kind.INTEGER, Kind.DECIMAL, Kind.FLOAT, Kind.STRING}
    | {Kind.DATE, Kind.TIME, Kind.DATETIME, Kind.UUID}
)
"""Kinds with a total order that every backend agrees on: usable in `gt`, `lt`..."""
SORTABLE = COMPARABLE | {Kind.BOOLEAN}
"""Kinds a list may be ordered by (and so a cursor may hold)."""

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_INTEGER = re.compile(r"^[+-]?\d{1,40}$")
_BOOLEANS = {"true": True, "false": False}


class BadValue(ValueError):
    """A value the column cannot hold; `message` is safe to show (it never echoes input)."""

    def __init__(self, message: str, kind: str = "value_error") -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind


@dataclass(frozen=True)
class ValueType:
    """What a column accepts, from its reflected SQL type."""

    kind: Kind
    minimum: int | None = None
    maximum: int | None = None
    precision: int | None = None
    scale: int | None = None
    max_length: int | None = None
    choices: tuple[str, ...] | None = None
    timezone: bool = False
    """Date-times and times: the column keeps an offset (PostgreSQL's timestamptz, timetz)."""

    @property
    def writable(self) -> bool:
        return self.kind is not Kind.OPAQUE

    def from_json(self, value: Any) -> Any:
        """A JSON value from a request body (or a cursor) as the Python value to bind."""
        parse = _FROM_JSON[self.kind]
        return parse(self, value)

    def from_text(self, text: str) -> Any:
        """A value from a URL (a filter, a key), where everything arrives as text."""
        if self.kind is Kind.INTEGER:
            if not _INTEGER.match(text):
                raise BadValue("expected an integer")
            return self.from_json(int(text))
        if self.kind in (Kind.DECIMAL, Kind.FLOAT):
            if not _NUMBER.match(text):
                raise BadValue("expected a number")
            return self.from_json(text if self.kind is Kind.DECIMAL else float(text))
        if self.kind is Kind.BOOLEAN:
            if text not in _BOOLEANS:
                raise BadValue("expected true or false")
            return _BOOLEANS[text]
        if self.kind is Kind.STRING:
            return _text(self, text, limit=False)
        if self.kind in (Kind.JSON, Kind.BYTES, Kind.OPAQUE):
            raise BadValue(f"a {self.kind} column cannot be compared with a value")
        return self.from_json(text)

    def to_json(self, value: Any, *, raw: bool = False) -> Any:
        """A value as read from the database, as JSON; `raw` when read as stored (SQLite),
        without the column type's conversions, so JSON arrives as its text.

        SQLite hands back whatever was stored, whatever the declared type: a value that
        does not fit its column's kind is shown as it is rather than refused.
        """
        if value is None or (self.kind in _AS_READ and type(value) in (int, str)):
            return value  # the common cases, answered before the checks below
        if type(value) is dt.datetime:
            return value.isoformat()
        if self.kind is Kind.BOOLEAN and type(value) is int and value in (0, 1):
            return bool(value)
        if self.kind is Kind.DECIMAL and isinstance(value, int | float | Decimal | str):
            return _decimal_text(self, value)
        if self.kind in _TEMPORAL and isinstance(value, str):
            return _iso_or_text(_TEMPORAL[self.kind], value)
        if self.kind is Kind.JSON and raw and isinstance(value, str | bytes):
            try:
                return json.loads(value)
            except ValueError:
                return value if isinstance(value, str) else plain_json(value)
        return plain_json(value)


_AS_READ = frozenset({Kind.INTEGER, Kind.STRING})
"""Kinds whose ints and strings are shown exactly as read (what `plain_json` would do)."""


def plain_json(value: Any) -> Any:
    """Any value a driver returns, as JSON, by its Python type (named queries' results)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        return format(value, "f") if value.is_finite() else str(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, dict):
        return {str(key): plain_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain_json(item) for item in value]
    return str(value)


def _integer(vtype: ValueType, value: Any) -> int:
    if type(value) is not int:
        raise BadValue("expected an integer", "type_error")
    if vtype.minimum is not None and value < vtype.minimum:
        raise BadValue(f"must be at least {vtype.minimum}")
    if vtype.maximum is not None and value > vtype.maximum:
        raise BadValue(f"must be at most {vtype.maximum}")
    return value


def _decimal(vtype: ValueType, value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadValue("expected a decimal number or a string holding one", "type_error")
    if isinstance(value, str) and not _NUMBER.match(value):
        raise BadValue("expected a decimal number")
    number = Decimal(str(value))
    if not number.is_finite():
        raise BadValue("expected a finite number")
    _, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)  # finite, checked above
    places = max(0, -exponent)
    if vtype.scale is not None and places > vtype.scale:
        raise BadValue(f"at most {vtype.scale} decimal places")
    whole_digits = max(0, len(digits) + exponent) if number else 0
    if vtype.precision is not None:
        allowed = vtype.precision - (vtype.scale or 0)
        if whole_digits > allowed:
            raise BadValue(f"at most {allowed} digits before the decimal point")
    return number


def _float(vtype: ValueType, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadValue("expected a number", "type_error")
    number = float(value)
    if not math.isfinite(number):
        raise BadValue("expected a finite number")
    return number


def _boolean(vtype: ValueType, value: Any) -> bool:
    if not isinstance(value, bool):
        raise BadValue("expected true or false", "type_error")
    return value


def _string(vtype: ValueType, value: Any) -> str:
    return _text(vtype, value, limit=True)


def _text(vtype: ValueType, value: Any, *, limit: bool) -> str:
    if not isinstance(value, str):
        raise BadValue("expected a string", "type_error")
    if "\x00" in value:
        raise BadValue("may not contain a NUL character")
    if limit and vtype.max_length is not None and len(value) > vtype.max_length:
        raise BadValue(f"at most {vtype.max_length} characters")
    if vtype.choices is not None and value not in vtype.choices:
        raise BadValue("expected one of: " + ", ".join(vtype.choices))
    return value


def _parsed(value: Any, parse: Callable[[str], T], what: str) -> T:
    if not isinstance(value, str):
        raise BadValue(f"expected {what} as a string", "type_error")
    try:
        return parse(value)
    except ValueError:
        raise BadValue(f"expected {what}") from None


def _date(vtype: ValueType, value: Any) -> dt.date:
    return _parsed(value, _date_only, "an ISO 8601 date (YYYY-MM-DD)")


def _date_only(text: str) -> dt.date:
    if len(text) != 10:
        raise ValueError(text)
    return dt.date.fromisoformat(text)


def _time(vtype: ValueType, value: Any) -> dt.time:
    """An offset means nothing to a time-of-day column without one, so it is refused."""
    moment = _parsed(value, dt.time.fromisoformat, "an ISO 8601 time (HH:MM[:SS])")
    if moment.tzinfo is not None and not vtype.timezone:
        raise BadValue("expected a time of day without offset")
    return moment


def _datetime(vtype: ValueType, value: Any) -> dt.datetime:
    """Naive input is UTC for a timezone-aware column; aware input is stored as UTC in a
    naive one, so a value means the same instant on every backend."""
    moment = _parsed(value, dt.datetime.fromisoformat, "an ISO 8601 date-time")
    if vtype.timezone and moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    if not vtype.timezone and moment.tzinfo is not None:
        return moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment


def _uuid(vtype: ValueType, value: Any) -> uuid.UUID:
    return _parsed(value, uuid.UUID, "a UUID")


def _json(vtype: ValueType, value: Any) -> Any:
    return value


def _bytes(vtype: ValueType, value: Any) -> bytes:
    if not isinstance(value, str):
        raise BadValue("expected base64 text", "type_error")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadValue("expected base64 text") from None
    if vtype.max_length is not None and len(data) > vtype.max_length:
        raise BadValue(f"at most {vtype.max_length} bytes")
    return data


def _opaque(vtype: ValueType, value: Any) -> Any:
    raise BadValue("this column's type cannot be written through the service")


_FROM_JSON: dict[Kind, Callable[[ValueType, Any], Any]] = {
    Kind.INTEGER: _integer,
    Kind.DECIMAL: _decimal,
    Kind.FLOAT: _float,
    Kind.BOOLEAN: _boolean,
    Kind.STRING: _string,
    Kind.DATE: _date,
    Kind.TIME: _time,
    Kind.DATETIME: _datetime,
    Kind.UUID: _uuid,
    Kind.JSON: _json,
    Kind.BYTES: _bytes,
    Kind.OPAQUE: _opaque,
}

_TEMPORAL: dict[Kind, Callable[[str], dt.date | dt.time]] = {
    Kind.DATE: dt.date.fromisoformat,
    Kind.TIME: dt.time.fromisoformat,
    Kind.DATETIME: dt.datetime.fromisoformat,
}


def _iso_or_text(parse: Callable[[str], dt.date | dt.time], text: str) -> str:
    try:
        return parse(text).isoformat()
    except ValueError:
        return text


def _decimal_text(vtype: ValueType, value: int | float | Decimal | str) -> Any:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return value
    if not number.is_finite():
        return str(number)
    if vtype.scale is not None:
        with contextlib.suppress(InvalidOperation):  # more digits than a Decimal holds
            number = number.quantize(Decimal(1).scaleb(-vtype.scale))
    return format(number, "f")
