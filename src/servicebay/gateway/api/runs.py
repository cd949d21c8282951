"""Runs: trigger one by hand, list and show them, follow their logs, fetch their artifacts,
cancel them.

Everything here needs the right to manage the run's deployment: its owner, an admin, or a
grant `manage` on `deployment:{name}`. A listing shows only the runs of deployments the
caller may manage. Triggering and cancelling are audited.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, BinaryIO
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from servicebay.core.access import Principal
from servicebay.core.errors import Conflict
from servicebay.core.models import Deployment, Run
from servicebay.gateway.api.common import API, Cursor, Limit, audit_change, page, transaction
from servicebay.gateway.api.deployments import may_manage, require_manage
from servicebay.gateway.api.run_schemas import ArtifactOut, LogChunkOut, LogOut, RunIn, RunOut
from servicebay.gateway.auth import Caller, get_instance
from servicebay.gateway.schemas import Page
from servicebay.runtime import runs
from servicebay.runtime.deployments import resource_of
from servicebay.runtime.layout import Layout
from servicebay.runtime.runs import Artifact, RunFilter
from servicebay.runtime.worker import Worker

router = APIRouter(prefix=API, tags=["runs"])
DeploymentName = Annotated[str, Path(max_length=63, description="The deployment's name.")]
RunId = Annotated[str, Path(max_length=32, description="The run's id (`run_...`).")]
READ_BYTES = 64 * 1024


def _wake_worker(request: Request) -> None:
    """Let this node's worker look at the queue now, rather than at its next poll."""
    worker = getattr(request.app.state, "worker", None)
    if isinstance(worker, Worker):
        worker.wake()


async def _run_to_manage(
    request: Request, session: AsyncSession, caller: Principal, run_id: str, to: str
) -> tuple[Run, Deployment]:
    run, deployment = await runs.get_run(session, run_id)
    await require_manage(request, session, caller, deployment, to)
    return run, deployment


@router.post(
    "/deployments/{name}/runs",
    status_code=202,
    response_model=RunOut,
    summary="Run a deployment now",
    responses={409: {"description": "No active version that built, or not a cron/webhook."}},
)
async def trigger_run(
    request: Request, name: DeploymentName, caller: Caller, body: RunIn | None = None
) -> JSONResponse:
    """Queues a run of the active version (trigger `manual`); 202 with the run, which a
    worker starts at once. `input` reaches the script as the JSON file named by env
    `BAY_RUN_INPUT`."""
    audit = audit_change(request)
    async with transaction(request) as session:
        deployment = await runs.get_deployment(session, name)
        audit.record("run.create", resource_of(name))
        await require_manage(request, session, caller, deployment, "run")
    intake: runs.Intake = request.app.state.intake
    run = await intake.queue(
        deployment, trigger="manual", actor=caller.email, input=body.input if body else None
    )
    audit.record("run.create", resource_of(name), run_id=run.id, version=run.version)
    _wake_worker(request)
    return JSONResponse(RunOut.of(run, deployment).model_dump(mode="json"), status_code=202)


@router.get("/runs", response_model=Page[RunOut], summary="List runs")
async def list_runs(
    request: Request,
    caller: Caller,
    deployment: Annotated[str | None, Query(max_length=63)] = None,
    status: Annotated[str | None, Query(max_length=16)] = None,
    trigger: Annotated[str | None, Query(max_length=16)] = None,
    since: Annotated[datetime | None, Query(description="Created at or after (ISO 8601).")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[RunOut]:
    """Newest first: the runs of one deployment, or of every deployment the caller may
    manage; filtered by status and trigger."""
    async with transaction(request) as session:
        if deployment is not None:
            found = await runs.get_deployment(session, deployment)
            await require_manage(request, session, caller, found, "see the runs of")
            visible: list[str] | None = [found.id]
        elif caller.admin:
            visible = None
        else:
            visible = [
                candidate.id
                for candidate in await session.scalars(select(Deployment))
                if await may_manage(request, caller, candidate)
            ]
        where = RunFilter(visible, status, trigger, since)
        listed = await runs.list_runs(session, where, limit=limit, cursor=cursor)
    return page(listed, lambda row: RunOut.of(*row))


@router.get("/runs/{run_id}", response_model=RunOut, summary="Show a run")
async def get_run(request: Request, run_id: RunId, caller: Caller) -> RunOut:
    async with transaction(request) as session:
        return RunOut.of(*await _run_to_manage(request, session, caller, run_id, "see"))


@router.get(
    "/runs/{run_id}/logs",
    response_model=LogOut,
    summary="Read a run's log",
    responses={200: {"content": {"text/plain": {}}}},
)
async def get_logs(
    request: Request,
    run_id: RunId,
    caller: Caller,
    after: Annotated[
        int | None, Query(ge=0, description="The last chunk id seen: only later chunks.")
    ] = None,
) -> Response:
    """The log's chunks after `after`, while the run goes and once it ended: poll with the
    last chunk's id until `done`. With `Accept: text/plain`, the whole log as text."""
    async with transaction(request) as session:
        run, _ = await _run_to_manage(request, session, caller, run_id, "read the log of")
        if "text/plain" in request.headers.get("accept", ""):
            return PlainTextResponse(await runs.log_text(session, run.id))
        found = await runs.read_log(session, run, after=after)
    chunks = [LogChunkOut(id=chunk.id, text=chunk.text) for chunk in found.chunks]
    return JSONResponse(LogOut(chunks=chunks, done=found.done).model_dump(mode="json"))


@router.get(
    "/runs/{run_id}/artifacts", response_model=Page[ArtifactOut], summary="List a run's files"
)
async def list_artifacts(request: Request, run_id: RunId, caller: Caller) -> Page[ArtifactOut]:
    """The files the script left in `BAY_OUTPUT_DIR`, by path, once the run has ended."""
    layout = await _ended_run_files(request, caller, run_id)
    found: list[Artifact] = runs.list_artifacts(layout, run_id)
    return Page[ArtifactOut](data=[ArtifactOut.of(artifact) for artifact in found], next=None)


@router.get(
    "/runs/{run_id}/artifacts/{path:path}",
    summary="Download a run's file",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def get_artifact(request: Request, run_id: RunId, path: str, caller: Caller) -> Response:
    """One file of the run's output, as listed; paths that could leave the output folder
    are refused, and links are never followed."""
    layout = await _ended_run_files(request, caller, run_id)
    handle, size = runs.open_artifact(layout, run_id, path)
    media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    name = path.rsplit("/", 1)[-1]
    return StreamingResponse(
        _read(handle),
        media_type=media_type,
        headers={
            "Content-Length": str(size),
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name, safe='')}",
            "X-Content-Type-Options": "nosniff",
        },
    )


async def _ended_run_files(request: Request, caller: Principal, run_id: str) -> Layout:
    async with transaction(request) as session:
        run, _ = await _run_to_manage(request, session, caller, run_id, "read the files of")
    if run.status == "running":
        raise Conflict(f"run {run_id} is still running: its files are kept when it ends")
    return Layout(get_instance(request).settings.home)


def _read(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while block := handle.read(READ_BYTES):
            yield block


@router.post(
    "/runs/{run_id}/cancel",
    status_code=202,
    response_model=RunOut,
    summary="Cancel a run",
    responses={409: {"description": "The run has already ended."}},
)
async def cancel_run(request: Request, run_id: RunId, caller: Caller) -> JSONResponse:
    """A queued run is cancelled at once; a running one is stopped by its worker within a
    second (TERM, then KILL) and ends `cancelled`."""
    audit = audit_change(request)
    async with transaction(request) as session:
        run, deployment = await runs.get_run(session, run_id)
        audit.record("run.cancel", resource_of(deployment.name), run_id=run_id)
        await require_manage(request, session, caller, deployment, "cancel runs of")
        run = await runs.request_cancel(session, run, caller.email)
    return JSONResponse(RunOut.of(run, deployment).model_dump(mode="json"), status_code=202)
