"""The errors this service answers with: field problems, and database failures turned
into answers a caller can act on, with nothing of SQL, data or driver text.

Driver messages quote statements and values, so none is ever passed on: only the kind of
violation and an identifier-shaped constraint or column name read out of it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from servicebay.core.errors import (
    ConfigurationError,
    Conflict,
    InvalidInput,
    ServiceBayError,
    ServiceUnavailable,
)
from servicebay.services.sql.values import BadValue

log = logging.getLogger(__name__)

_NAME = r"[A-Za-z_][A-Za-z0-9_$]*"
_POSTGRES_KINDS = {"23505": "unique", "23503": "foreign_key", "23514": "check", "23502": "not_null"}
_MYSQL: dict[int, tuple[str, str | None]] = {
    1062: ("unique", rf"for key '(?:{_NAME}\.)?({_NAME})'"),
    1451: ("foreign_key", rf"CONSTRAINT `({_NAME})`"),
    1452: ("foreign_key", rf"CONSTRAINT `({_NAME})`"),
    1216: ("foreign_key", None),
    1217: ("foreign_key", None),
    1048: ("not_null", rf"Column '({_NAME})'"),
    3819: ("check", rf"constraint '({_NAME})'"),
    4025: ("check", rf"CONSTRAINT `({_NAME})`"),
}
_MYSQL_RETRYABLE = {1040, 1205, 1213}
"""Too many connections, lock wait timeout, deadlock."""
_DROPPED_WHILE_CONNECTING = "Transport does not expose socket instance"
"""asyncmy's bare RuntimeError when the server (or a proxy in front of it) closes a
connection while it is being opened: the database is going away, not a bug here."""
_SQLITE_UNAVAILABLE = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN", "SQLITE_IOERR")
_SQLITE = {
    "UNIQUE": "unique",
    "PRIMARY KEY": "unique",
    "FOREIGN KEY": "foreign_key",
    "CHECK": "check",
    "NOT NULL": "not_null",
}
_WHAT = {
    "unique": "a row with the same value already exists (unique constraint {})",
    "foreign_key": "a foreign key forbids it (constraint {})",
    "check": "a value fails check constraint {}",
    "not_null": "column {} may not be null",
}


FieldError = dict[str, Any]


def field_error(loc: list[Any], error: BadValue) -> FieldError:
    return {"loc": loc, "msg": error.message, "type": error.kind}


def unknown_parameter(name: str) -> FieldError:
    return {"loc": ["query", name], "msg": "unknown parameter", "type": "extra_forbidden"}


def given_twice(name: str) -> FieldError:
    return {"loc": ["query", name], "msg": "given more than once", "type": "value_error"}


def invalid(errors: list[FieldError]) -> InvalidInput:
    """One 400 for all the problems found, its message naming where each is."""
    where = ", ".join(".".join(str(part) for part in error["loc"]) for error in errors)
    return InvalidInput(f"the request is invalid at: {where}", errors=errors)


@dataclass(frozen=True)
class Violation:
    kind: str
    name: str | None


@contextmanager
def translated(
    service: str, table: sa.Table | None = None, deleting: bool = False
) -> Iterator[None]:
    """Database failures inside the block as ServiceBayErrors safe to answer with."""
    try:
        yield
    except DBAPIError as error:
        violation = _violation(error, table, deleting)
        if violation is not None:
            raise _conflict(violation) from None
        raise _failure(service, error) from None
    except (PoolTimeout, OSError, TimeoutError) as error:
        raise ServiceUnavailable(
            f"the database of service {service!r} is unreachable ({type(error).__name__})"
        ) from None
    except RuntimeError as error:
        if _DROPPED_WHILE_CONNECTING not in str(error):
            raise
        raise ServiceUnavailable(
            f"the database of service {service!r} is unreachable (connection dropped)"
        ) from None


def _conflict(violation: Violation) -> Conflict:
    message = _WHAT[violation.kind].format(violation.name or "(unnamed)")
    error: dict[str, Any] = {"loc": ["body"], "msg": message, "type": f"{violation.kind}_violation"}
    if violation.name:
        error["constraint"] = violation.name
    return Conflict(message, errors=[error])


def _failure(service: str, error: DBAPIError) -> ServiceBayError:
    reason = describe(error)
    log.warning("service %s: database error %s", service, reason)
    if isinstance(error, sa.exc.DataError):
        return InvalidInput(
            "the database refused a value (out of its range or not storable in the column)"
        )
    if _unavailable(error):
        return ServiceUnavailable(
            f"the database of service {service!r} is unavailable; retry later ({reason})"
        )
    return ConfigurationError(
        f"the database of service {service!r} refused the statement ({reason})"
    )


def _unavailable(error: DBAPIError) -> bool:
    """A lost or refused connection, or a lock the caller may retry after; not a statement
    the database rejects (MySQL and SQLite report both as OperationalError: their codes
    tell)."""
    if error.connection_invalidated or isinstance(error, sa.exc.InterfaceError):
        return True
    sqlite_error = getattr(error.orig, "sqlite_errorname", None)
    if isinstance(sqlite_error, str):
        return sqlite_error.startswith(_SQLITE_UNAVAILABLE)
    code = error.orig.args[0] if error.orig is not None and error.orig.args else None
    if isinstance(code, int):
        return code >= 2000 or code in _MYSQL_RETRYABLE
    return isinstance(error, sa.exc.OperationalError)


def describe(error: BaseException) -> str:
    """The driver's error class and code: enough to look up, nothing of the message."""
    orig = error.orig if isinstance(error, DBAPIError) else error
    name = type(orig).__name__
    code = getattr(orig, "sqlstate", None) or (orig.args[0] if orig and orig.args else None)
    return f"{name} {code}" if isinstance(code, int | str) and str(code).isalnum() else name


def _violation(error: DBAPIError, table: sa.Table | None, deleting: bool) -> Violation | None:
    orig = error.orig
    sqlstate = getattr(orig, "sqlstate", None)
    cause = getattr(orig, "__cause__", None)
    if sqlstate in _POSTGRES_KINDS and cause is not None:
        name = getattr(cause, "constraint_name", None)
        if _POSTGRES_KINDS[sqlstate] == "not_null":
            name = getattr(cause, "column_name", None)
        return Violation(_POSTGRES_KINDS[sqlstate], _identifier(name))
    args = orig.args if orig is not None else ()
    code = args[0] if args else None
    if isinstance(code, int) and code in _MYSQL:
        kind, pattern = _MYSQL[code]
        text = str(args[1]) if len(args) > 1 else ""
        found = re.search(pattern, text) if pattern else None
        return Violation(kind, found.group(1) if found else None)
    if isinstance(error, IntegrityError) and isinstance(code, str):
        return _sqlite_violation(code, table, deleting)
    return None


def _sqlite_violation(message: str, table: sa.Table | None, deleting: bool) -> Violation | None:
    """SQLite names columns ("UNIQUE constraint failed: customer.email") rather than
    constraints: the reflected table supplies the name where one constraint matches."""
    head, _, detail = message.partition(" constraint failed")
    kind = _SQLITE.get(head)
    if kind is None:
        return None
    columns = [part.split(".")[-1] for part in detail.lstrip(": ").split(", ") if part]
    if kind == "not_null":
        return Violation(kind, _identifier(columns[0]) if columns else None)
    if kind == "check":
        return Violation(kind, _identifier(detail.lstrip(": ")))
    if table is None:
        return Violation(kind, None)
    if kind == "unique":
        return Violation(kind, _unique_name(table, columns))
    return Violation(kind, _foreign_key_name(table, deleting))


def _unique_name(table: sa.Table, columns: list[str]) -> str | None:
    candidates: list[sa.UniqueConstraint | sa.PrimaryKeyConstraint | sa.Index] = [
        constraint
        for constraint in table.constraints
        if isinstance(constraint, sa.UniqueConstraint | sa.PrimaryKeyConstraint)
    ]
    candidates += [index for index in table.indexes if index.unique]
    for candidate in candidates:
        if [column.name for column in candidate.columns] == columns:
            return _identifier(candidate.name)
    return None


def _foreign_key_name(table: sa.Table, deleting: bool) -> str | None:
    """Deleting, the constraint is one pointing at the table; writing, one of its own."""
    if deleting:
        candidates = [
            key.constraint
            for other in table.metadata.tables.values()
            for key in other.foreign_keys
            if key.column.table is table
        ]
    else:
        candidates = [key.constraint for key in table.foreign_keys]
    # An unnamed constraint has no name to give (its `name` is None, not "None").
    names = {constraint.name for constraint in candidates if constraint is not None}
    return _identifier(names.pop()) if len(names) == 1 else None


def _identifier(name: Any) -> str | None:
    return name if isinstance(name, str) and re.fullmatch(_NAME, name) else None
