from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from servicebay.core import identity
from servicebay.core.errors import Conflict
from servicebay.gateway.api.common import API, Cursor, Limit, audit_change, page, transaction
from servicebay.gateway.auth import Caller, get_instance, require_admin
from servicebay.gateway.schemas import Page, UserIn, UserOut, UserPatch

router = APIRouter(prefix=f"{API}/users", tags=["identity"])
EmailPath = Annotated[str, Path(max_length=320, description="The user's e-mail.")]


@router.post("", status_code=201, response_model=UserOut, summary="Add a user")
async def create_user(request: Request, body: UserIn, caller: Caller) -> UserOut:
    require_admin(caller, "add users")
    async with transaction(request) as session:
        user = await identity.create_user(
            session, email=body.email, name=body.name, teams=body.teams, admin=body.admin
        )
    audit_change(request).record(
        "user.create", f"user:{user.email}", teams=user.teams, admin=user.admin
    )
    return UserOut.of(user)


@router.get("", response_model=Page[UserOut], summary="List users")
async def list_users(
    request: Request,
    caller: Caller,
    team: Annotated[str | None, Query(max_length=63)] = None,
    include_disabled: bool = False,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[UserOut]:
    require_admin(caller, "list users")
    async with transaction(request) as session:
        users = await identity.list_users(
            session, team=team, include_disabled=include_disabled, limit=limit, cursor=cursor
        )
    return page(users, UserOut.of)


@router.get("/{email}", response_model=UserOut, summary="Show a user")
async def get_user(request: Request, email: EmailPath, caller: Caller) -> UserOut:
    if identity.normalize_email(email) != caller.email:
        require_admin(caller, "see other users")
    async with transaction(request) as session:
        return UserOut.of(await identity.get_user(session, email))


@router.patch("/{email}", response_model=UserOut, summary="Change, disable or enable a user")
async def update_user(
    request: Request, email: EmailPath, body: UserPatch, caller: Caller
) -> UserOut:
    """Users are disabled, never deleted: the audit log keeps pointing at them."""
    require_admin(caller, "change users")
    if identity.normalize_email(email) == caller.email and (body.disabled or body.admin is False):
        raise Conflict("you may not disable yourself or drop your own admin rights")
    async with transaction(request) as session:
        user = await identity.update_user(
            session,
            await identity.get_user(session, email),
            name=body.name,
            teams=body.teams,
            admin=body.admin,
            disabled=body.disabled,
        )
    get_instance(request).authenticator.forget()
    audit_change(request).record(
        "user.update", f"user:{user.email}", changes=body.model_dump(exclude_none=True)
    )
    return UserOut.of(user)
