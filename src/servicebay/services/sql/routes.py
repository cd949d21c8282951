"""Which endpoint a call is for, and the permission it needs: pure, before any I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from servicebay.core.errors import MethodNotAllowed, NotFound
from servicebay.services.base import Permission, ServiceCall
from servicebay.services.sql.queries import NamedQuery
from servicebay.services.sql.schema import TableModel

QUERIES = "queries"
COLLECTION = {"GET": "read", "POST": "create"}
ITEM = {"GET": "read", "PATCH": "update", "DELETE": "delete"}


@dataclass(frozen=True)
class Route:
    permission: Permission
    table: TableModel | None = None
    key: str | None = None
    """The item's key as given in the path, for `/{table}/{key}`."""
    query: NamedQuery | None = None
    refusal: str | None = None
    """Why the service's own spec refuses the call. Refused in `handle`, after the grant
    check: the attempt is audited under the resource it was for, like any refusal."""


def route(
    service: str,
    tables: Mapping[str, TableModel],
    queries: Mapping[str, NamedQuery],
    call: ServiceCall,
) -> Route:
    path, method = call.path, call.method.upper()
    where = "/" + "/".join(segment[:100] for segment in path)
    if len(path) == 2 and path[0] == QUERIES:
        query = queries.get(path[1])
        if query is None:
            raise NotFound(f"service {service!r} has no query at {where}")
        if method != "GET":
            raise MethodNotAllowed(f"{method} is not allowed on {where}", allow=["GET"])
        return Route(Permission(f"service:{service}/{QUERIES}/{query.name}", "read"), query=query)
    table = tables.get(path[0]) if 1 <= len(path) <= 2 else None
    if table is None:
        raise NotFound(f"service {service!r} has no table or query at {where}")
    actions = ITEM if len(path) == 2 else COLLECTION
    action = actions.get(method)
    if action is None:
        allowed = [name for name, needs in actions.items() if needs in table.operations]
        raise MethodNotAllowed(f"{method} is not allowed on {where}", allow=allowed)
    refusal = None
    if action not in table.operations:
        refusal = f"the service does not allow {action} on {table.name}"
    permission = Permission(f"service:{service}/{table.name}", action)
    return Route(permission, table=table, key=path[1] if len(path) == 2 else None, refusal=refusal)
