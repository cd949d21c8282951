from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from servicebay.core import grants, identity
from servicebay.core.errors import InvalidInput
from servicebay.core.grants import ACTIONS, Subject
from servicebay.gateway.api.common import API, Cursor, Limit, audit_change, page, transaction
from servicebay.gateway.auth import Caller, get_instance, require_admin
from servicebay.gateway.schemas import DecisionOut, GrantIn, GrantOut, Page

router = APIRouter(prefix=API, tags=["permissions"])
GrantId = Annotated[str, Path(max_length=32)]


@router.post("/grants", status_code=201, response_model=GrantOut, summary="Grant a permission")
async def create_grant(request: Request, body: GrantIn, caller: Caller) -> GrantOut:
    require_admin(caller, "grant permissions")
    async with transaction(request) as session:
        grant = await grants.create_grant(
            session,
            principal=body.principal,
            resource=body.resource,
            actions=body.actions,
            created_by=caller.email,
        )
    get_instance(request).authorizer.forget()
    audit_change(request).record(
        "grant.create",
        grant.resource,
        grant_id=grant.id,
        principal=grant.principal,
        actions=grant.actions,
    )
    return GrantOut.of(grant)


@router.get("/grants", response_model=Page[GrantOut], summary="List grants")
async def list_grants(
    request: Request,
    caller: Caller,
    principal: Annotated[str | None, Query(max_length=400)] = None,
    resource: Annotated[str | None, Query(max_length=400)] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[GrantOut]:
    """Every grant for an admin; for anyone else, the grants that apply to them."""
    wanted: frozenset[str] | None = (
        frozenset({grants.parse_principal(principal, source="query")}) if principal else None
    )
    if not caller.admin:
        own = caller.subject.principals
        wanted = own if wanted is None else wanted & own
    async with transaction(request) as session:
        found = await grants.list_grants(
            session, principals=wanted, resource=resource, limit=limit, cursor=cursor
        )
    return page(found, GrantOut.of)


@router.delete("/grants/{grant_id}", status_code=204, summary="Delete a grant")
async def delete_grant(request: Request, grant_id: GrantId, caller: Caller) -> Response:
    require_admin(caller, "delete grants")
    async with transaction(request) as session:
        grant = await grants.get_grant(session, grant_id)
        await grants.delete_grant(session, grant)
    get_instance(request).authorizer.forget()
    audit_change(request).record(
        "grant.delete", grant.resource, grant_id=grant.id, principal=grant.principal
    )
    return Response(status_code=204)


@router.get("/permissions/check", response_model=DecisionOut, summary="May this principal do this?")
async def check_permission(
    request: Request,
    caller: Caller,
    resource: Annotated[str, Query(max_length=400)],
    action: Annotated[str, Query(max_length=20, description=", ".join(ACTIONS))],
    principal: Annotated[
        str | None, Query(max_length=400, description="user:<email>, team:<name>; default: you")
    ] = None,
) -> DecisionOut:
    """Says yes or no, and which grant (or rule) decided."""
    grants.parse_resource(resource, source="query")
    if action not in ACTIONS:
        raise InvalidInput(
            f"unknown action {action!r}; choose from {', '.join(ACTIONS)}",
            errors=[{"loc": ["query", "action"], "msg": "unknown action", "type": "value_error"}],
        )
    who = grants.parse_principal(principal, source="query") if principal else f"user:{caller.email}"
    if who != f"user:{caller.email}":
        require_admin(caller, "check other principals' permissions")
    if who == f"user:{caller.email}":
        subject = caller.subject
    elif who.startswith("user:"):
        async with transaction(request) as session:
            user = await identity.get_user(session, who.removeprefix("user:"))
        subject = Subject(who, tuple(user.teams), user.admin, user.disabled)
    else:
        subject = Subject(who, (who.removeprefix("team:"),) if who.startswith("team:") else ())
    decision = await get_instance(request).authorizer.decide(subject, resource, action)
    return DecisionOut(
        allowed=decision.allowed,
        reason=decision.reason,
        grant=decision.grant,
        principal=who,
        resource=resource,
        action=action,
    )
