"""Secrets are write-only: every answer here is metadata, never a value."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from servicebay.core import secret_store
from servicebay.gateway.api.common import API, audit_change, listing, transaction
from servicebay.gateway.auth import Caller, get_instance, require_admin
from servicebay.gateway.schemas import Page, SecretIn, SecretOut, SecretPatch

router = APIRouter(prefix=f"{API}/secrets", tags=["secrets"])
SecretName = Annotated[str, Path(max_length=128, description="UPPER_CASE, like an env var.")]


@router.put("/{name}", response_model=SecretOut, summary="Create or replace a secret")
async def put_secret(
    request: Request, name: SecretName, body: SecretIn, caller: Caller
) -> SecretOut:
    require_admin(caller, "set secrets")
    async with transaction(request) as session:
        secret, created = await secret_store.put_secret(
            session,
            get_instance(request).master_key,
            name=name,
            value=body.value.get_secret_value(),
            allow=body.allow,
        )
    audit_change(request).record(
        "secret.create" if created else "secret.update", f"secret:{name}", allow=secret.allow
    )
    return SecretOut.of(secret)


@router.patch("/{name}", response_model=SecretOut, summary="Change who may receive a secret")
async def set_allow(
    request: Request, name: SecretName, body: SecretPatch, caller: Caller
) -> SecretOut:
    require_admin(caller, "change secrets")
    async with transaction(request) as session:
        secret = await secret_store.set_allow(
            session, await secret_store.get_secret(session, name), body.allow
        )
    audit_change(request).record("secret.allow", f"secret:{name}", allow=secret.allow)
    return SecretOut.of(secret)


@router.get("", response_model=Page[SecretOut], summary="List secrets (names, never values)")
async def list_secrets(request: Request, caller: Caller) -> Page[SecretOut]:
    require_admin(caller, "list secrets")
    async with transaction(request) as session:
        return listing(await secret_store.list_secrets(session), SecretOut.of)


@router.get("/{name}", response_model=SecretOut, summary="Show a secret's metadata")
async def get_secret(request: Request, name: SecretName, caller: Caller) -> SecretOut:
    require_admin(caller, "see secrets")
    async with transaction(request) as session:
        return SecretOut.of(await secret_store.get_secret(session, name))


@router.delete("/{name}", status_code=204, summary="Delete a secret")
async def delete_secret(request: Request, name: SecretName, caller: Caller) -> Response:
    require_admin(caller, "delete secrets")
    async with transaction(request) as session:
        await secret_store.delete_secret(session, await secret_store.get_secret(session, name))
    audit_change(request).record("secret.delete", f"secret:{name}")
    return Response(status_code=204)
