"""Reflected SQL types as `ValueType`s: what each column accepts and how it is shown."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeEngine

from servicebay.services.sql.values import Kind, ValueType

_INTEGER_BITS: tuple[tuple[type[TypeEngine[int]], int], ...] = (
    (mysql.TINYINT, 8),
    (sa.SmallInteger, 16),
    (mysql.MEDIUMINT, 24),
    (sa.BigInteger, 64),
    (sa.Integer, 32),
)


def value_type(sql_type: TypeEngine[object], dialect: str) -> ValueType:
    """The order of the checks matters: Boolean before Integer (MySQL's tinyint(1)),
    Float before Numeric and Enum before String (subclasses first)."""
    if isinstance(sql_type, sa.Boolean) or (
        isinstance(sql_type, mysql.TINYINT) and sql_type.display_width == 1
    ):
        return ValueType(Kind.BOOLEAN)
    if isinstance(sql_type, sa.Integer):
        return _integer(sql_type, dialect)
    if isinstance(sql_type, sa.Float):
        return ValueType(Kind.FLOAT)
    if isinstance(sql_type, sa.Numeric):
        return ValueType(Kind.DECIMAL, precision=sql_type.precision, scale=sql_type.scale)
    if isinstance(sql_type, sa.Enum):
        return ValueType(Kind.STRING, choices=tuple(str(choice) for choice in sql_type.enums))
    if isinstance(sql_type, sa.String):
        return ValueType(Kind.STRING, max_length=sql_type.length)
    if isinstance(sql_type, sa.DateTime):
        return ValueType(Kind.DATETIME, timezone=bool(sql_type.timezone))
    if isinstance(sql_type, sa.Date):
        return ValueType(Kind.DATE)
    if isinstance(sql_type, sa.Time):
        return ValueType(Kind.TIME, timezone=bool(sql_type.timezone))
    if isinstance(sql_type, sa.Uuid):
        return ValueType(Kind.UUID)
    if isinstance(sql_type, sa.JSON):
        return ValueType(Kind.JSON)
    if isinstance(sql_type, sa.LargeBinary | sa.BINARY | sa.VARBINARY):
        return ValueType(Kind.BYTES, max_length=getattr(sql_type, "length", None))
    return ValueType(Kind.OPAQUE)


def _integer(sql_type: sa.Integer, dialect: str) -> ValueType:
    """SQLite stores every integer in up to 64 bits, whatever the declared name."""
    bits = 64
    if dialect != "sqlite":
        bits = next(size for kind, size in _INTEGER_BITS if isinstance(sql_type, kind))
    if getattr(sql_type, "unsigned", False):
        return ValueType(Kind.INTEGER, minimum=0, maximum=2**bits - 1)
    return ValueType(Kind.INTEGER, minimum=-(2 ** (bits - 1)), maximum=2 ** (bits - 1) - 1)
