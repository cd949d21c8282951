"""Request bodies for create and update, checked column by column before any SQL runs.

Every problem is collected, so one 400 lists every bad field of every row, each at its
place: `["body", 3, "email"]` in an array, `["body", "email"]` in an object. Hidden
columns answer exactly as columns that do not exist.
"""

from __future__ import annotations

from typing import Any

from servicebay.services.sql.errors import FieldError, field_error, invalid
from servicebay.services.sql.schema import TableModel
from servicebay.services.sql.values import BadValue

Row = dict[str, Any]


def rows_to_create(table: TableModel, body: Any, max_rows: int) -> tuple[list[Row], bool]:
    """The rows a create request holds, and whether it sent an array of them."""
    if isinstance(body, dict):
        return [_checked(table, body, ["body"], partial=False)], False
    if not isinstance(body, list):
        raise _body_error("expected an object, or an array of objects", "type_error")
    if not body:
        raise _body_error("the array is empty: nothing to create", "value_error")
    if len(body) > max_rows:
        raise _body_error(f"at most {max_rows} rows at once", "value_error")
    errors: list[FieldError] = []
    rows = [_row(table, item, ["body", index], False, errors) for index, item in enumerate(body)]
    if errors:
        raise invalid(errors)
    return rows, True


def changes(table: TableModel, body: Any) -> Row:
    """The columns an update sets (a partial row)."""
    if not isinstance(body, dict):
        raise _body_error("expected an object of the columns to change", "type_error")
    if not body:
        raise _body_error("name at least one column to change", "value_error")
    return _checked(table, body, ["body"], partial=True)


def _checked(table: TableModel, item: Any, loc: list[Any], *, partial: bool) -> Row:
    errors: list[FieldError] = []
    row = _row(table, item, loc, partial, errors)
    if errors:
        raise invalid(errors)
    return row


def _row(
    table: TableModel, item: Any, loc: list[Any], partial: bool, errors: list[FieldError]
) -> Row:
    if not isinstance(item, dict):
        errors.append({"loc": loc, "msg": "expected an object", "type": "type_error"})
        return {}
    row: Row = {}
    for name, value in item.items():
        where = [*loc, name]
        column = table.column(name)
        if column is None:
            errors.append({"loc": where, "msg": "unknown column", "type": "extra_forbidden"})
        elif not column.writable:
            errors.append({"loc": where, "msg": "read-only column", "type": "read_only"})
        elif value is None:
            if column.nullable:
                row[name] = None
            else:
                errors.append({"loc": where, "msg": "may not be null", "type": "value_error"})
        else:
            try:
                row[name] = column.type.from_json(value)
            except BadValue as error:
                errors.append(field_error(where, error))
    if not partial:
        for column in table.columns.values():
            if column.required and column.name not in item:
                errors.append({"loc": [*loc, column.name], "msg": "required", "type": "missing"})
    return row


def _body_error(message: str, kind: str) -> Exception:
    return invalid([{"loc": ["body"], "msg": message, "type": kind}])
