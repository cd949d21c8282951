"""Runs in the metadata database: created queued, claimed by one worker, finished once.

A run's life: `queued` (created by a trigger) -> `running` (claimed by a worker, which
stamps `started_at` and its own id) -> `succeeded`, `failed`, `timed_out` or `cancelled`
(with `finished_at`, the exit code and a reason in words). A queued run can be cancelled at
once; a running one is flagged `cancel_requested`, and the worker running it notices within
a second and stops its process group.

Claiming is safe with many workers on one database: on PostgreSQL the candidate row is
locked with `FOR UPDATE SKIP LOCKED` (two workers never wait for, or take, the same run);
on SQLite, which has one writer at a time, the claim is a conditional
`UPDATE ... WHERE status = 'queued' RETURNING ...`: the rows it returns are the runs won.

Logs are stored as chunks (`RunLogChunk`) appended while the run goes, so that any node can
stream them: a reader asks for the chunks after the last id it saw.

Artifacts are the files a script left in its `BAY_OUTPUT_DIR` (`Layout.artifacts`); they are
read here without ever following a link.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Literal, get_args

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Integer,
    String,
    and_,
    bindparam,
    cast,
    column,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
    values,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from servicebay.core.batching import Batcher
from servicebay.core.errors import Conflict, InvalidInput, NotFound, ServiceBayError
from servicebay.core.models import (
    Deployment,
    DeploymentVersion,
    Run,
    RunLogChunk,
    UTCDateTime,
    new_id,
    utcnow,
)
from servicebay.core.pagination import Page, decode_cursor, invalid_cursor, page_of
from servicebay.runtime.layout import Layout

Status = Literal["queued", "running", "succeeded", "failed", "timed_out", "cancelled", "skipped"]
Trigger = Literal["schedule", "webhook", "manual", "retry"]
STATUSES: tuple[str, ...] = get_args(Status)
TRIGGERS: tuple[str, ...] = get_args(Trigger)
FINISHED = frozenset({"succeeded", "failed", "timed_out", "cancelled", "skipped"})
RUNNABLE_KINDS = frozenset({"cron", "webhook"})
"""Kinds whose deployments have runs; servers and services run continuously instead."""

CLAIM_ATTEMPTS = 5
CLAIM_WINDOW = 20
"""Queued runs a claim looks at in one go, skipping those that must wait their turn."""
QUEUE_ORDER = func.coalesce(Run.due_at, Run.created_at)
Concurrency = Literal["skip", "queue", "allow"]
LOG_PAGE_BYTES = 1024 * 1024
"""At most about this much log text in one answer; a reader asks again for the rest."""
LOG_PAGE_CHUNKS = 1000


async def get_deployment(session: AsyncSession, name: str) -> Deployment:
    deployment = await session.scalar(select(Deployment).where(Deployment.name == name))
    if deployment is None:
        raise NotFound(f"no deployment named {name!r}: `bay deployments list` shows them")
    return deployment


async def create_run(
    session: AsyncSession,
    deployment: Deployment,
    *,
    trigger: Trigger,
    actor: str | None,
    input: dict[str, Any] | None = None,
    due_at: datetime | None = None,
    version: int | None = None,
    attempt: int = 1,
    not_before: datetime | None = None,
) -> Run:
    """A queued run of `version` (default: the active one), which must be built and ready;
    no worker claims it before `not_before`."""
    wanted = NewRun(
        deployment,
        trigger=trigger,
        actor=actor,
        input=input,
        due_at=due_at,
        version=version,
        attempt=attempt,
        not_before=not_before,
    )
    [created] = await create_runs(session, [wanted])
    if isinstance(created, ServiceBayError):
        raise created
    return created


@dataclass(frozen=True)
class NewRun:
    """A run to create (`create_runs`)."""

    deployment: Deployment
    trigger: Trigger
    actor: str | None
    input: dict[str, Any] | None = None
    due_at: datetime | None = None
    version: int | None = None
    """Default: the deployment's active version."""
    attempt: int = 1
    not_before: datetime | None = None


async def create_runs(
    session: AsyncSession, wanted: Sequence[NewRun]
) -> list[Run | ServiceBayError]:
    """Queued runs, one for each of `wanted` (as `create_run` makes it), with the states
    of their versions read in one statement and the runs inserted in one: a run that
    cannot be created is the error that says why, in its place, and is not written."""
    numbers = [
        one.deployment.active_version if one.version is None else one.version for one in wanted
    ]
    keys = {
        (one.deployment.id, number)
        for one, number in zip(wanted, numbers, strict=True)
        if number is not None and one.deployment.kind in RUNNABLE_KINDS
    }
    states: dict[tuple[str, int], str] = {}
    if keys:
        rows = await session.execute(  # the status alone: not the build log nor the config
            select(
                DeploymentVersion.deployment_id, DeploymentVersion.version, DeploymentVersion.status
            ).where(tuple_(DeploymentVersion.deployment_id, DeploymentVersion.version).in_(keys))
        )
        states = {(deployment_id, number): status for deployment_id, number, status in rows}
    created: list[Run | ServiceBayError] = []
    for one, number in zip(wanted, numbers, strict=True):
        refusal = _refusal(one.deployment, number, states)
        if refusal is not None:
            created.append(refusal)
        else:
            assert number is not None  # refused otherwise
            created.append(_queued_run(one, number))
    session.add_all([run for run in created if isinstance(run, Run)])
    await session.flush()
    return created


def _refusal(
    deployment: Deployment, number: int | None, states: dict[tuple[str, int], str]
) -> Conflict | None:
    """Why a run of `number` of `deployment` cannot be created, if it cannot."""
    if deployment.kind not in RUNNABLE_KINDS:
        return Conflict(
            f"{deployment.name} is a {deployment.kind} deployment, which runs continuously "
            "and has no runs: only cron and webhook deployments are run"
        )
    if number is None:
        return Conflict(
            f"{deployment.name} has no active version: deploy it (`bay deploy`) or roll it "
            "back to a version that built (`bay deployments rollback`)"
        )
    built = states.get((deployment.id, number))
    if built != "ready":
        state = "does not exist" if built is None else f"is {built}"
        return Conflict(
            f"version {number} of {deployment.name} {state}: only a version that built can "
            "run; `bay deployments show` has its build log"
        )
    return None


def _queued_run(wanted: NewRun, number: int) -> Run:
    return Run(
        id=new_id("run"),
        deployment_id=wanted.deployment.id,
        version=number,
        trigger=wanted.trigger,
        due_at=wanted.due_at,
        not_before=wanted.not_before,
        attempt=wanted.attempt,
        status="queued",
        actor=wanted.actor,
        input=wanted.input,
        created_at=utcnow(),
        cancel_requested=False,
        log_bytes=0,
        log_truncated=False,
    )


class Intake:
    """Queues runs for callers that each wait for their run (the API's manual triggers).

    Runs asked for while a batch is being written share the next transaction (group
    commit, `core.batching`), created together (`create_runs`): under load, one commit
    and one turn at SQLite's writer for many runs instead of one each. One that cannot
    run fails its own caller only.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._batcher = Batcher(self._write, name="run-intake")

    async def queue(
        self,
        deployment: Deployment,
        *,
        trigger: Trigger,
        actor: str | None,
        input: dict[str, Any] | None = None,
    ) -> Run:
        """A queued run of the deployment's active version (`create_run`)."""
        created = await self._batcher.submit(NewRun(deployment, trigger, actor, input))
        if isinstance(created, ServiceBayError):
            raise created
        return created

    async def _write(self, batch: Sequence[NewRun]) -> list[Run | ServiceBayError]:
        async with self._sessions() as session, session.begin():
            return await create_runs(session, batch)


async def get_run(session: AsyncSession, run_id: str) -> tuple[Run, Deployment]:
    row = (
        await session.execute(
            select(Run, Deployment)
            .join(Deployment, Run.deployment_id == Deployment.id)
            .where(Run.id == run_id)
        )
    ).first()
    if row is None:
        raise NotFound(f"no run with id {run_id}: `bay runs list` shows recent runs")
    return row[0], row[1]


@dataclass(frozen=True)
class RunFilter:
    """Which runs a listing shows; `deployment_ids` None means every deployment."""

    deployment_ids: Collection[str] | None = None
    status: str | None = None
    trigger: str | None = None
    since: datetime | None = None

    def __post_init__(self) -> None:
        for field, value, allowed in (
            ("status", self.status, STATUSES),
            ("trigger", self.trigger, TRIGGERS),
        ):
            if value is not None and value not in allowed:
                raise InvalidInput(
                    f"unknown {field} {value!r}: use one of {', '.join(allowed)}",
                    errors=[{"loc": ["query", field], "msg": "unknown value", "type": "enum"}],
                )


async def list_runs(
    session: AsyncSession, where: RunFilter, *, limit: int, cursor: str | None
) -> Page[tuple[Run, Deployment]]:
    """Runs newest first, a page at a time (the cursor is the last run's time and id)."""
    query = (
        select(Run, Deployment)
        .join(Deployment, Run.deployment_id == Deployment.id)
        .order_by(Run.created_at.desc(), Run.id.desc())
        .limit(limit + 1)
    )
    if where.deployment_ids is not None:
        query = query.where(Run.deployment_id.in_(list(where.deployment_ids)))
    if where.status is not None:
        query = query.where(Run.status == where.status)
    if where.trigger is not None:
        query = query.where(Run.trigger == where.trigger)
    if where.since is not None:
        query = query.where(Run.created_at >= where.since)
    if (position := decode_cursor(cursor)) is not None:
        created, run_id = _read_position(position)
        query = query.where(
            or_(Run.created_at < created, and_(Run.created_at == created, Run.id < run_id))
        )
    rows = [(row[0], row[1]) for row in await session.execute(query)]
    last = rows[limit - 1][0] if len(rows) > limit else None
    return page_of(rows, limit, f"{last.created_at.isoformat()}|{last.id}" if last else None)


def _read_position(position: str) -> tuple[datetime, str]:
    created, _, run_id = position.partition("|")
    try:
        return datetime.fromisoformat(created), run_id
    except ValueError:
        raise invalid_cursor() from None


async def claim(session: AsyncSession, worker: str, limit: int) -> list[Run]:
    """Take up to `limit` queued runs that may start (now `running`) for `worker`, in order
    of due time (creation for runs without one). A run whose `not_before` has not come yet
    is left queued.

    A run waits while its deployment's `concurrency` says so (`may_start`). Call it
    inside a transaction; the claims are the caller's when it commits.
    """
    claimed: list[Run] = []
    for _ in range(CLAIM_ATTEMPTS):
        candidates = (
            await session.execute(
                select(
                    Run.id, Run.deployment_id, Run.due_at, Run.created_at, DeploymentVersion.config
                )
                .join(
                    DeploymentVersion,
                    and_(
                        DeploymentVersion.deployment_id == Run.deployment_id,
                        DeploymentVersion.version == Run.version,
                    ),
                )
                .where(
                    Run.status == "queued",
                    or_(Run.not_before.is_(None), Run.not_before <= utcnow()),
                )
                .order_by(QUEUE_ORDER, Run.id)
                .limit(CLAIM_WINDOW)
                # PostgreSQL; SQLite has one writer anyway
                .with_for_update(of=Run, skip_locked=True)
            )
        ).all()
        if not candidates:
            return claimed
        free: list[str] = []  # `allow` runs: taken together, in one statement
        for run_id, deployment_id, due_at, created_at, config in candidates:
            if len(claimed) + len(free) == limit:
                break
            concurrency = config.get("concurrency", "allow")
            if concurrency == "allow":
                free.append(run_id)
                continue
            candidate = _Queued(run_id, deployment_id, due_at, created_at)
            if await may_start(session, candidate, concurrency):
                # taken at once: the deployment's next candidate must see it running
                claimed += await _take(session, worker, [run_id])
        if free:
            claimed += await _take(session, worker, free)
        if len(claimed) == limit or len(candidates) < CLAIM_WINDOW:
            return claimed  # or every other queued run waits for an earlier one of its own
    return claimed


async def _take(session: AsyncSession, worker: str, run_ids: list[str]) -> list[Run]:
    """Mark the runs `running` for `worker`, those still queued (another worker may have
    taken some); the runs taken."""
    return await _update_runs(
        session,
        Run.id.in_(run_ids),
        Run.status == "queued",
        status="running",
        started_at=utcnow(),
        worker=worker,
    )


@dataclass(frozen=True)
class _Queued:
    """What `may_start` needs of a queued run, read without loading the whole row."""

    id: str
    deployment_id: str
    due_at: datetime | None
    created_at: datetime


async def may_start(
    session: AsyncSession | AsyncConnection, run: Run | _Queued, concurrency: Concurrency
) -> bool:
    """Whether the worker may start the queued `run` now.

    `allow` runs start at once. `queue` and `skip` runs start one at a time per
    deployment, in order of due time (of creation for runs without one): not while
    another run of the deployment is running or an earlier one is still queued (it may
    be claimed by another worker at this moment). Call it in the transaction that claims
    the run.
    """
    if concurrency == "allow":
        return True
    key = bindparam("key", run.due_at or run.created_at, type_=UTCDateTime())
    earlier_queued = and_(
        Run.status == "queued",
        or_(key > QUEUE_ORDER, and_(key == QUEUE_ORDER, Run.id < run.id)),
    )
    ahead = (
        select(Run.id)
        .where(
            Run.deployment_id == run.deployment_id,
            Run.id != run.id,
            or_(Run.status == "running", earlier_queued),
        )
        .limit(1)
    )
    return await session.scalar(ahead) is None


def _rowcount(result: Any) -> int:
    count: int = result.rowcount
    return count


@dataclass(frozen=True)
class Ending:
    """How a run ended, as the worker reports it."""

    status: Status
    reason: str
    exit_code: int | None = None
    log_bytes: int = 0
    log_truncated: bool = False


async def finish_runs(
    session: AsyncSession, endings: Sequence[tuple[str, Ending]]
) -> dict[str, Run]:
    """Record the ends of running runs, (run id, ending) each, in one statement (an UPDATE
    from a VALUES list, RETURNING the rows: under load, many endings take one turn at the
    database's writer): the runs ended, by id. A run that was not
    running any more (already finished) is left as it was, and out of the answer."""
    for _, ending in endings:
        if ending.status not in FINISHED:
            raise ValueError(
                f"{ending.status} is not a final status; use one of {sorted(FINISHED)}"
            )
    if not endings:
        return {}
    if len({run_id for run_id, _ in endings}) < len(endings):
        raise ValueError("a run can end only once: the same run id is given twice")
    given = (
        values(
            column("id", String),
            column("status", String),
            column("reason", String),
            column("exit_code", Integer),
            column("log_bytes", Integer),
            column("log_truncated", Boolean),
            name="ending",
        )
        .data(
            [
                (run_id, e.status, e.reason[:2000], e.exit_code, e.log_bytes, e.log_truncated)
                for run_id, e in endings
            ]
        )
        .cte("ending")
    )  # SQLite names a VALUES list's columns in a WITH clause only
    ended = await _update_runs(
        session,
        Run.id == given.c.id,
        Run.status == "running",
        status=given.c.status,
        reason=given.c.reason,
        exit_code=cast(given.c.exit_code, Integer),  # a list of NULLs is text to PostgreSQL
        log_bytes=given.c.log_bytes,
        log_truncated=given.c.log_truncated,
        finished_at=utcnow(),
    )
    return {run.id: run for run in ended}


async def _update_runs(
    session: AsyncSession, *where: ColumnElement[bool], **values: Any
) -> list[Run]:
    """Change the runs `where` selects and read them back in the same statement
    (RETURNING), as changed."""
    changed = await session.scalars(
        update(Run).where(*where).values(**values).returning(Run),
        execution_options={"populate_existing": True, "synchronize_session": False},
    )
    return list(changed)


async def request_cancel(session: AsyncSession, run: Run, actor: str) -> Run:
    """Cancel a queued run now; flag a running one for its worker, which stops it."""
    if run.status == "queued":
        cancelled = await session.execute(
            update(Run)
            .where(Run.id == run.id, Run.status == "queued")
            .values(
                status="cancelled",
                reason=f"cancelled by {actor} before it started",
                finished_at=utcnow(),
                cancel_requested=True,
            )
            .execution_options(synchronize_session=False)
        )
        if _rowcount(cancelled) == 1:
            return await _reload(session, run.id)
        run = await _reload(session, run.id)  # a worker took it meanwhile
    if run.status == "running":
        await session.execute(
            update(Run)
            .where(Run.id == run.id, Run.status == "running")
            .values(cancel_requested=True)
            .execution_options(synchronize_session=False)
        )
        return await _reload(session, run.id)
    raise Conflict(f"run {run.id} has already ended ({run.status}): there is nothing to cancel")


async def _reload(session: AsyncSession, run_id: str) -> Run:
    run = await session.get(Run, run_id, populate_existing=True)
    assert run is not None
    return run


async def cancels_requested(session: AsyncSession, run_ids: Collection[str]) -> set[str]:
    """Which of these running runs somebody asked to cancel."""
    if not run_ids:
        return set()
    found = await session.scalars(
        select(Run.id).where(Run.id.in_(list(run_ids)), Run.cancel_requested.is_(True))
    )
    return set(found)


async def running_runs(session: AsyncSession) -> list[tuple[Run, Deployment]]:
    rows = await session.execute(
        select(Run, Deployment)
        .join(Deployment, Run.deployment_id == Deployment.id)
        .where(Run.status == "running")
    )
    return [(row[0], row[1]) for row in rows]


async def append_log(session: AsyncSession, run_id: str, text: str) -> None:
    await append_logs(session, [(run_id, text)])


async def append_logs(session: AsyncSession, chunks: Collection[tuple[str, str]]) -> None:
    """Store log chunks, (run id, text) each, in one statement."""
    if chunks:
        rows = [{"run_id": run_id, "text": text} for run_id, text in chunks]
        await session.execute(insert(RunLogChunk), rows)


@dataclass(frozen=True)
class LogPage:
    chunks: list[RunLogChunk]
    done: bool
    """True when the run has ended and `chunks` reach the end of its log."""


async def read_log(session: AsyncSession, run: Run, *, after: int | None) -> LogPage:
    """The chunks of `run`'s log after chunk id `after`, up to about LOG_PAGE_BYTES.

    The run's status is read before its chunks, and a worker writes the last chunk before
    it records the end: a `done` page really holds the end of the log.
    """
    finished = run.status in FINISHED
    query = (
        select(RunLogChunk)
        .where(RunLogChunk.run_id == run.id)
        .order_by(RunLogChunk.id)
        .limit(LOG_PAGE_CHUNKS + 1)
    )
    if after is not None:
        query = query.where(RunLogChunk.id > after)
    chunks: list[RunLogChunk] = []
    size = 0
    more = False
    for chunk in await session.scalars(query):
        if len(chunks) == LOG_PAGE_CHUNKS or (chunks and size + len(chunk.text) > LOG_PAGE_BYTES):
            more = True
            break
        chunks.append(chunk)
        size += len(chunk.text)
    return LogPage(chunks, finished and not more)


async def log_text(session: AsyncSession, run_id: str) -> str:
    """The whole log of a run (at most `run_log_max_bytes` and the platform's notes)."""
    chunks = await session.scalars(
        select(RunLogChunk.text).where(RunLogChunk.run_id == run_id).order_by(RunLogChunk.id)
    )
    return "".join(chunks)


# --- artifacts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Artifact:
    path: str
    """Relative to the run's output folder, with `/` between folders."""
    size: int


def list_artifacts(layout: Layout, run_id: str) -> list[Artifact]:
    """The regular files a run left in its output folder, by path; links are never followed."""
    root = layout.artifacts(run_id)
    if not root.is_dir():
        return []
    found = []
    for top, dirs, files, top_fd in os.fwalk(root, follow_symlinks=False):
        dirs.sort()
        for name in sorted(files):
            info = os.stat(name, dir_fd=top_fd, follow_symlinks=False)
            if stat.S_ISREG(info.st_mode):
                relative = Path(top, name).relative_to(root).as_posix()
                found.append(Artifact(relative, info.st_size))
    return sorted(found, key=lambda artifact: artifact.path)


def artifact_parts(path: str) -> tuple[str, ...]:
    """The folders and name of an artifact path, refusing anything that could leave the
    output folder (`..`, absolute paths, empty or odd segments)."""
    parts = PurePosixPath(path).parts
    if (
        not path
        or path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or any(part in ("", ".", "..") for part in parts)
        or len(parts) != len(path.split("/"))
    ):
        raise InvalidInput(
            f"{path!r} is not an artifact path: give one as listed by "
            "`bay runs artifacts ID`, e.g. report.csv or charts/week.png"
        )
    return parts


def open_artifact(layout: Layout, run_id: str, path: str) -> tuple[BinaryIO, int]:
    """An artifact opened for reading, and its size.

    Every folder on the way and the file itself are opened without following links, so a
    link left in the output folder can never expose another file.
    """
    parts = artifact_parts(path)
    missing = NotFound(f"run {run_id} has no artifact {path!r}: `bay runs artifacts` lists them")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        folder = os.open(layout.artifacts(run_id), flags | os.O_DIRECTORY)
    except OSError:
        raise missing from None
    try:
        for part in parts[:-1]:
            inner = os.open(part, flags | os.O_DIRECTORY, dir_fd=folder)
            os.close(folder)
            folder = inner
        fd = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=folder)  # a FIFO must not block
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.EISDIR):
            raise missing from None
        raise
    finally:
        os.close(folder)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise missing
    return os.fdopen(fd, "rb"), info.st_size
