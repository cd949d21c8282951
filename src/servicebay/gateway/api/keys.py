from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from servicebay.core import identity
from servicebay.core.access import Principal
from servicebay.core.errors import NotFound
from servicebay.gateway.api.common import API, Cursor, Limit, audit_change, page, transaction
from servicebay.gateway.auth import Caller, get_instance, require_admin
from servicebay.gateway.schemas import KeyCreated, KeyIn, KeyOut, Page

router = APIRouter(prefix=f"{API}/keys", tags=["identity"])
KeyId = Annotated[str, Path(max_length=32)]


def _owned_or_admin(caller: Principal, owner_email: str, to: str) -> None:
    if owner_email != caller.email:
        require_admin(caller, to)


@router.post("", status_code=201, response_model=KeyCreated, summary="Create an API key")
async def create_key(request: Request, body: KeyIn, caller: Caller) -> KeyCreated:
    """The answer holds the key itself: the only time anyone sees it."""
    owner = identity.normalize_email(body.user) if body.user else caller.email
    _owned_or_admin(caller, owner, "create keys for other users")
    async with transaction(request) as session:
        user = await identity.get_user(session, owner)
        issued = await identity.create_key(session, user, name=body.name, lifetime=body.lifetime)
    audit_change(request).record(
        "key.create", f"user:{user.email}", key_id=issued.record.id, name=issued.record.name
    )
    return KeyCreated(**KeyOut.of(issued.record, user).model_dump(), key=issued.secret)


@router.get("", response_model=Page[KeyOut], summary="List API keys")
async def list_keys(
    request: Request,
    caller: Caller,
    user: Annotated[str | None, Query(max_length=320)] = None,
    include_revoked: bool = False,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[KeyOut]:
    """Your own keys; an admin sees everybody's, or one user's with `?user=`."""
    async with transaction(request) as session:
        owner_id: str | None = None
        if user is not None:
            _owned_or_admin(caller, identity.normalize_email(user), "list other users' keys")
            owner_id = (await identity.get_user(session, user)).id
        elif not caller.admin:
            owner_id = caller.user_id
        keys = await identity.list_keys(
            session, user_id=owner_id, include_revoked=include_revoked, limit=limit, cursor=cursor
        )
    return page(keys, lambda row: KeyOut.of(*row))


@router.delete("/{key_id}", status_code=204, summary="Revoke an API key")
async def revoke_key(request: Request, key_id: KeyId, caller: Caller) -> Response:
    async with transaction(request) as session:
        key, owner = await identity.get_key(session, key_id)
        if owner.email != caller.email and not caller.admin:
            raise NotFound(f"no key with id {key_id}")  # other users' key ids stay unknowable
        await identity.revoke_key(session, key)
    get_instance(request).authenticator.forget()
    audit_change(request).record("key.revoke", f"user:{owner.email}", key_id=key.id)
    return Response(status_code=204)
