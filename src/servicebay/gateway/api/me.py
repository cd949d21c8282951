from __future__ import annotations

from fastapi import APIRouter, Request

from servicebay.core import identity
from servicebay.gateway.api.common import API, transaction
from servicebay.gateway.auth import Caller
from servicebay.gateway.schemas import KeyOut, MeOut, UserOut

router = APIRouter(prefix=API, tags=["identity"])


@router.get("/me", response_model=MeOut, summary="Who am I")
async def me(request: Request, caller: Caller) -> MeOut:
    """The caller's user and the key they called with."""
    async with transaction(request) as session:
        key, user = await identity.get_key(session, caller.key_id)
    return MeOut(**UserOut.of(user).model_dump(), key=KeyOut.of(key, user))
