"""Deployments: upload a folder's bundle, follow its build, list, roll back, delete.

A deploy answers 202 at once with the new version `building`; the build (a virtual
environment per distinct requirements, reused when it exists) goes on in the background,
and `GET .../versions/{version}?log_offset=N` shows its status and the log from offset N,
so a client can follow it by polling. Anyone may create a deployment and owns it; a new
version, a rollback or a deletion needs its owner, an admin, or a grant `manage` on
`deployment:{name}`. Deleting is refused while one of its runs is running. A server's
output is read, and followed, at `GET .../logs?after=N`.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, File, Form, Path, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from servicebay.core.access import Principal
from servicebay.core.errors import ConfigurationError, Conflict, Forbidden, InvalidInput
from servicebay.core.models import Deployment, utcnow
from servicebay.core.pagination import decode_cursor, encode_cursor
from servicebay.gateway.api.common import API, Cursor, Limit, audit_change, transaction
from servicebay.gateway.api.deployment_schemas import (
    DeployAccepted,
    DeploymentDetail,
    DeploymentOut,
    RollbackIn,
    VersionDetail,
)
from servicebay.gateway.api.run_schemas import LogChunkOut, LogOut
from servicebay.gateway.auth import Caller, get_instance
from servicebay.gateway.schemas import Page
from servicebay.runtime import code_services, deployments
from servicebay.runtime.builder import NoInterpreter
from servicebay.runtime.config import ServiceConfig
from servicebay.runtime.deployments import Deployer, Upload, resource_of
from servicebay.runtime.supervisor import SUPERVISED_KINDS, read_log
from servicebay.services.spec import RESERVED_NAMES

router = APIRouter(prefix=f"{API}/deployments", tags=["deployments"])
DeploymentName = Annotated[str, Path(max_length=63, description="The deployment's name.")]
NUMBERING_ATTEMPTS = 3
"""Deploys racing for one version number: each loser tries again with the next one."""


def get_deployer(request: Request) -> Deployer:
    """The node's deployer (a component the app starts and stops with the node)."""
    deployer = request.app.state.deployer
    assert isinstance(deployer, Deployer)
    return deployer


async def may_manage(request: Request, caller: Principal, deployment: Deployment) -> bool:
    if caller.admin or deployment.owner_id == caller.user_id:
        return True
    decision = await get_instance(request).authorizer.decide(
        caller.subject, resource_of(deployment.name), "manage"
    )
    return decision.allowed


async def require_manage(
    request: Request, session: AsyncSession, caller: Principal, deployment: Deployment, to: str
) -> None:
    """Forbidden (audited, naming the permission) unless `caller` may manage it."""
    if await may_manage(request, caller, deployment):
        return
    owners = await deployments.owner_emails(session, [deployment])
    raise Forbidden(
        f"you may not {to} deployment {deployment.name}: that needs manage on "
        f"{resource_of(deployment.name)}; its owner ({owners.get(deployment.owner_id)}) or an "
        f"admin can grant it: bay grant user:{caller.email} {resource_of(deployment.name)} manage"
    )


async def _require_publish(request: Request, caller: Principal, name: str) -> None:
    """A new code service publishes /{name}/... and is given the secrets an admin allowed
    for service:{name}: like registering a service, that takes an admin, or a grant
    `manage` on service:{name} (after which its deployment is its owner's to redeploy)."""
    resource = code_services.resource_of(name)
    if caller.admin:
        return
    decision = await get_instance(request).authorizer.decide(caller.subject, resource, "manage")
    if not decision.allowed:
        raise Forbidden(
            f"you may not create the code service {name}: it would answer at /{name}/... "
            f"and receive the secrets allowed for {resource}, which needs an admin or manage "
            f"on {resource}; an admin can grant it: bay grant user:{caller.email} {resource} "
            "manage"
        )


def _where(request: Request) -> tuple[str | None, str]:
    """The instance's domain and base URL: where webhooks and servers answer."""
    settings = get_instance(request).settings
    return settings.domain, settings.base_url


@router.post(
    "",
    status_code=202,
    response_model=DeployAccepted,
    summary="Deploy a folder",
    responses={
        400: {"description": "The bundle or its folder is invalid; `errors` lists each "
              "problem with its file, line, column, field and fix."},
        403: {"description": "The deployment exists and the caller may not manage it."},
        409: {"description": "The deployment exists with another kind."},
        413: {"description": "The upload is over the instance's body limit."},
    },
)  # fmt: skip
async def deploy(
    request: Request,
    caller: Caller,
    bundle: Annotated[
        UploadFile, File(description="The folder as a tar.gz, as `bay deploy` builds it.")
    ],
    name: Annotated[
        str | None,
        Form(
            max_length=63,
            description="A cron deployment's name (its folder's); the other kinds are "
            "named by their config, and must match it if sent.",
        ),
    ] = None,
) -> JSONResponse:
    """Checks the folder as `bay deploy` does, records a new version (creating the
    deployment, owned by the caller, if it is new) and starts its build; 202 with the
    version `building`."""
    deployer = get_deployer(request)
    data = await bundle.read()
    upload = await asyncio.to_thread(deployments.receive_bundle, deployer.layout, data, name)
    try:
        digest = await _requirements_digest(deployer, upload)
        deployment, version_number, version_id, created = await _record(
            request, caller, deployer, upload, digest
        )
        try:
            await asyncio.to_thread(deployments.install, deployer.layout, upload, version_number)
        except OSError as error:
            await deployments.finish_build(
                deployer.sessions,
                version_id,
                ok=False,
                build_log=f"could not store the bundle: {error.strerror or error}\n",
            )
            raise
    finally:
        await asyncio.to_thread(upload.discard)
    deployer.build(version_id, upload.requirements)
    audit_change(request).record(
        "deployment.create",
        resource_of(deployment.name),
        version=version_number,
        kind=deployment.kind,
        bundle_digest=upload.digest,
    )
    accepted = DeployAccepted(
        name=deployment.name,
        version=version_number,
        kind=deployment.kind,
        status=deployments.BUILDING,
        created=created,
    )
    return JSONResponse(accepted.model_dump(mode="json"), status_code=202)


async def _requirements_digest(deployer: Deployer, upload: Upload) -> str:
    try:
        return await deployer.builder.digest(upload.requirements)
    except NoInterpreter as error:
        raise ConfigurationError(f"this instance cannot build environments: {error}") from None


async def _record(
    request: Request, caller: Principal, deployer: Deployer, upload: Upload, digest: str
) -> tuple[Deployment, int, str, bool]:
    """The new version, recorded: (deployment, version, version id, created)."""
    for _ in range(NUMBERING_ATTEMPTS):
        try:
            async with transaction(request) as session:
                existing = await deployments.find(session, upload.name)
                if existing is not None:
                    audit_change(request).record(
                        "deployment.create", resource_of(upload.name), kind=upload.kind
                    )
                    await require_manage(request, session, caller, existing, "deploy to")
                    await deployments.fail_stale_builds(
                        session, existing, deployer.stale_before(utcnow())
                    )
                if isinstance(upload.config, ServiceConfig):
                    if upload.name in RESERVED_NAMES:
                        raise InvalidInput(
                            f"{upload.name!r} is reserved for the platform's own routes "
                            "(/{name}/... would never reach the service): choose another name"
                        )
                    if existing is None:
                        await _require_publish(request, caller, upload.name)
                    # Before any version exists: a secret it may not have is the deployer's 400.
                    await code_services.check_name_is_free(session, upload.name)
                    await code_services.check_secrets(session, upload.config)
                deployment, version = await deployments.add_version(
                    session,
                    existing,
                    upload,
                    requirements_digest=digest,
                    owner_id=caller.user_id,
                    actor=caller.email,
                )
                return deployment, version.version, version.id, existing is None
        except IntegrityError:
            continue
    raise Conflict(
        f"other deploys of {upload.name} were being recorded at the same moment; try again"
    )


@router.get("", response_model=Page[DeploymentOut], summary="List deployments")
async def list_deployments(
    request: Request, caller: Caller, limit: Limit = 100, cursor: Cursor = None
) -> Page[DeploymentOut]:
    """The deployments the caller may manage: their own, all for an admin, and those a
    `manage` grant covers; by name."""
    async with transaction(request) as session:
        candidates = await deployments.all_deployments(session, after=decode_cursor(cursor))
        shown: list[Deployment] = []
        for deployment in candidates:
            if await may_manage(request, caller, deployment):
                shown.append(deployment)
                if len(shown) > limit:
                    break
        owners = await deployments.owner_emails(session, shown)
    more = len(shown) > limit
    shown = shown[:limit]
    where = _where(request)
    return Page[DeploymentOut](
        data=[DeploymentOut.of(d, owners[d.owner_id], *where) for d in shown],
        next=encode_cursor(shown[-1].name) if more else None,
    )


@router.get("/{name}", response_model=DeploymentDetail, summary="Show a deployment")
async def show_deployment(
    request: Request, name: DeploymentName, caller: Caller
) -> DeploymentDetail:
    """The deployment with its versions, newest first (build logs: see the version)."""
    deployer = get_deployer(request)
    async with transaction(request) as session:
        deployment = await deployments.get(session, name)
        await require_manage(request, session, caller, deployment, "see")
        await deployments.fail_stale_builds(session, deployment, deployer.stale_before(utcnow()))
        history = await deployments.versions(session, deployment)
        owners = await deployments.owner_emails(session, [deployment])
    return DeploymentDetail.with_versions(
        deployment, owners[deployment.owner_id], *_where(request), history
    )


@router.get("/{name}/versions/{version}", response_model=VersionDetail, summary="Show a version")
async def show_version(
    request: Request,
    name: DeploymentName,
    version: Annotated[int, Path(ge=1)],
    caller: Caller,
    log_offset: Annotated[
        int, Query(ge=0, description="Return the build log from this character on.")
    ] = 0,
) -> VersionDetail:
    """A version's status, config and build log (from `log_offset`; `log_end` is where
    the next poll starts)."""
    deployer = get_deployer(request)
    async with transaction(request) as session:
        deployment = await deployments.get(session, name)
        await require_manage(request, session, caller, deployment, "see")
        await deployments.fail_stale_builds(session, deployment, deployer.stale_before(utcnow()))
        found = await deployments.get_version(session, deployment, version)
        return VersionDetail.of_log(found, deployment, log_offset)


@router.get(
    "/{name}/logs",
    response_model=LogOut,
    summary="Read a server's log",
    responses={200: {"content": {"text/plain": {}}}},
)
async def server_logs(
    request: Request,
    name: DeploymentName,
    caller: Caller,
    after: Annotated[
        int | None, Query(ge=0, description="The last chunk id seen: only later chunks.")
    ] = None,
) -> Response:
    """A server deployment's output, every process it started, oldest first: poll with the
    last chunk's id to follow it (`done` is always false: a server keeps writing). With
    `Accept: text/plain`, the log kept so far as text."""
    async with transaction(request) as session:
        deployment = await deployments.get(session, name)
        await require_manage(request, session, caller, deployment, "read the log of")
        if deployment.kind not in SUPERVISED_KINDS:
            raise Conflict(
                f"{name} is a {deployment.kind} deployment: its output is in its runs' logs "
                f"(`bay runs list --deployment {name}`, `bay runs logs RUN`)"
            )
        plain = "text/plain" in request.headers.get("accept", "")
        chunks = await read_log(session, deployment, after=after, limit=None if plain else 200)
    if plain:
        return PlainTextResponse("".join(chunk.text for chunk in chunks))
    page = LogOut(chunks=[LogChunkOut(id=c.id, text=c.text) for c in chunks], done=False)
    return JSONResponse(page.model_dump(mode="json"))


@router.post("/{name}/rollback", response_model=DeploymentDetail, summary="Roll back")
async def rollback(
    request: Request, name: DeploymentName, caller: Caller, body: RollbackIn | None = None
) -> DeploymentDetail:
    """Make an earlier ready version active again (default: the newest one before the
    active version). The versions are kept: rolling forward is a rollback too."""
    async with transaction(request) as session:
        deployment = await deployments.get(session, name)
        audit_change(request).record("deployment.rollback", resource_of(name))
        await require_manage(request, session, caller, deployment, "roll back")
        previous = deployment.active_version
        target = await deployments.rollback(
            session, deployment, body.version if body is not None else None
        )
        history = await deployments.versions(session, deployment)
        owners = await deployments.owner_emails(session, [deployment])
    audit_change(request).record(
        "deployment.rollback", resource_of(name), version=target.version, previous=previous
    )
    return DeploymentDetail.with_versions(
        deployment, owners[deployment.owner_id], *_where(request), history
    )


@router.delete("/{name}", status_code=204, summary="Delete a deployment")
async def delete_deployment(request: Request, name: DeploymentName, caller: Caller) -> Response:
    """Deletes the deployment with its versions, runs, logs and files; 409 while one of
    its runs is running (cancel it first). Shared environments stay."""
    deployer = get_deployer(request)
    async with transaction(request) as session:
        deployment = await deployments.get(session, name)
        audit_change(request).record("deployment.delete", resource_of(name))
        await require_manage(request, session, caller, deployment, "delete")
        removal = await deployments.delete_deployment(session, deployment)
    await asyncio.to_thread(deployments.remove_files, deployer.layout, removal)
    audit_change(request).record("deployment.delete", resource_of(name), runs=len(removal.run_ids))
    return Response(status_code=204)
