"""The scheduler: turns the due times of active cron deployments into runs.

Each scheduler keeps the next due time of every active cron deployment in a heap and
sleeps on its clock until the earliest. It re-reads the deployments every
`reload_seconds` (and at once when `refresh` is called), so a deploy, rollback or delete
is followed within seconds; a changed schedule gets its next due time recomputed.

**Exactly once.** A due time becomes a run with `due_at` set, inserted with
`ON CONFLICT (deployment_id, due_at) DO NOTHING` against the runs table's unique
constraint. Any number of schedulers may watch one database (PostgreSQL): each inserts
what it finds due, the database keeps the first run per due time, and the others count
theirs as already fired. No leader election, no lease: a scheduler that dies takes no
due time with it.

**Downtime.** After a restart the last due time handled for a deployment is the latest
`due_at` among its runs (a deployment without any starts from now). `plan_firings` then
sorts the due times since into fired and missed according to `catch_up`; the missed ones
are recorded as `skipped` runs saying so, so that a run list shows every due time. A
scheduler that falls behind while running (a stalled event loop, a suspended machine)
takes the same path.

**Concurrency.** `skip`: a due time that finds a run of the deployment queued or running
is recorded as a skipped run naming it. `queue` and `allow` insert a queued run either
way; the worker asks `runs.may_start` before starting one, which lets `allow` runs overlap and
starts `queue` and `skip` runs one at a time in due-time order (so the several due
times a `catch_up: "all"` fires after downtime run one after another, not at once).

Scheduler lag (from a due time to the commit of its run) is a Prometheus histogram;
the insert of everything due at one instant is one statement, so a thousand schedules
due at the top of the hour cost one insert, not a thousand.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Literal, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import ValidationError
from sqlalchemy import Insert, and_, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from servicebay.core.models import Deployment, DeploymentVersion, Run, User, new_id
from servicebay.runtime.clock import Clock, SystemClock
from servicebay.runtime.config import CronConfig
from servicebay.runtime.schedule import (
    DEFAULT_GRACE,
    MAX_CATCH_UP,
    CatchUp,
    CronSchedule,
    ScheduleError,
    parse_cron,
    plan_firings,
)

log = logging.getLogger(__name__)

ACTIVE_STATUSES = ("queued", "running")
"""A run in one of these is "still running" for the `skip` policy."""
_IN_CHUNK = 500
"""Most ids in one `IN (...)` list."""
_YIELD_EVERY = 50
"""Next due times computed between two yields to the event loop (each costs ~0.5 ms)."""
_CATCH_UP_SAYS: dict[CatchUp, str] = {
    "none": 'catch_up is "none": missed due times are not run',
    "latest": 'catch_up is "latest": only the most recent missed due time runs',
    "all": f'catch_up is "all", which runs at most the {MAX_CATCH_UP} most recent',
}


class SchedulerMetrics:
    """The scheduler's Prometheus metrics, on the node's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.lag = Histogram(
            "servicebay_scheduler_lag_seconds",
            "From a due time to the commit of its run, for due times fired on time "
            "(catch-up after downtime is counted by fired and skipped instead).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )
        self.schedules = Gauge(
            "servicebay_scheduler_schedules",
            "Active cron deployments this scheduler follows.",
            registry=registry,
        )
        self.fired = Counter(
            "servicebay_scheduler_fired",
            "Due times this scheduler recorded as queued runs.",
            registry=registry,
        )
        self.skipped = Counter(
            "servicebay_scheduler_skipped",
            "Due times this scheduler recorded as skipped runs, by reason: missed (the "
            "scheduler was down) or concurrency (the previous run was still running).",
            ["reason"],
            registry=registry,
        )
        self.already_fired = Counter(
            "servicebay_scheduler_already_fired",
            "Due times another scheduler had recorded first (each fires once).",
            registry=registry,
        )


@dataclass
class _Followed:
    """An active cron deployment as the scheduler follows it."""

    deployment_id: str
    name: str
    version: int
    owner: str
    config: CronConfig
    schedule: CronSchedule
    last_due: datetime
    """Due times up to here are handled (fired, missed or skipped, here or elsewhere)."""
    generation: int = 0
    """Bumped when the schedule changes, so that heap entries pushed before are ignored."""


class _Due(NamedTuple):
    """A heap entry (a tuple: ordered by time, then by push order)."""

    at: datetime
    sequence: int
    deployment_id: str
    generation: int


@dataclass(frozen=True)
class _Firing:
    """A row to insert for one due time of one deployment."""

    followed: _Followed
    due: datetime
    kind: Literal["fired", "missed", "concurrency"]
    """Queued, or skipped because the scheduler was down or the previous run still ran."""
    on_time: bool
    reason: str | None = None

    @property
    def status(self) -> Literal["queued", "skipped"]:
        return "queued" if self.kind == "fired" else "skipped"


class Scheduler:
    """A node component firing the due times of every active cron deployment.

    `on_enqueued` is called after queued runs are committed, to wake the local worker
    instead of letting it wait for its next poll.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock | None = None,
        *,
        registry: CollectorRegistry | None = None,
        on_enqueued: Callable[[], None] | None = None,
        reload_seconds: float = 2.0,
        retry_seconds: float = 1.0,
        grace: timedelta = DEFAULT_GRACE,
    ) -> None:
        self.engine = engine
        self.clock: Clock = clock or SystemClock()
        self.metrics = SchedulerMetrics(registry or CollectorRegistry())
        self.on_enqueued = on_enqueued
        self.reload_interval = timedelta(seconds=reload_seconds)
        self.retry_seconds = retry_seconds
        self.grace = grace
        self._followed: dict[str, _Followed] = {}
        self._unusable: dict[str, int] = {}
        """Deployments whose active version's config cannot be scheduled: id -> version
        (logged once, looked at again when the active version changes)."""
        self._heap: list[_Due] = []
        self._sequence = 0
        self._reload_at: datetime | None = None
        self._wake = asyncio.Event()
        self._reloaded: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="scheduler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for waiter in self._reloaded:
            waiter.cancel()
        self._reloaded.clear()

    async def refresh(self) -> None:
        """Re-read the deployments now (after a deploy, rollback or delete); returns once
        the scheduler follows what is active."""
        if self._task is None:
            raise RuntimeError("the scheduler is not running: start() it first")
        done = asyncio.get_running_loop().create_future()
        self._reloaded.append(done)
        self._wake.set()
        await done

    async def _loop(self) -> None:
        while True:
            try:
                if self._wake.is_set() or self._reload_at is None:
                    await self._reload_and_tell(self.clock.now())
                await self._fire_due()  # before a routine re-read, which can wait
                now = self.clock.now()
                if self._reload_at is not None and now >= self._reload_at:
                    await self._reload_and_tell(now)
                    await self._fire_due()
            except Exception:
                # The database may be away, or a deployment was deleted since the last
                # reload (its run breaks the foreign key): keep what is due, re-read the
                # deployments and try again.
                log.exception(
                    "scheduler: could not read or record due times; retrying in %s s",
                    self.retry_seconds,
                )
                self._reload_at = None
                await self._sleep(self.retry_seconds)
                continue
            wake_at = self._reload_at
            if self._heap and (wake_at is None or self._heap[0].at < wake_at):
                wake_at = self._heap[0].at
            if wake_at is not None:
                await self._sleep((wake_at - self.clock.now()).total_seconds())

    async def _sleep(self, seconds: float) -> None:
        """Sleep on the clock, returning early when `refresh` is called."""
        if seconds <= 0 or self._wake.is_set():
            return
        sleeping = asyncio.ensure_future(self.clock.sleep(seconds))
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait((sleeping, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeping.cancel()
            woken.cancel()

    async def _reload_and_tell(self, now: datetime) -> None:
        self._wake.clear()
        waiting, self._reloaded = self._reloaded, []
        try:
            await self._reload(now)
        except BaseException as error:  # refresh() raises it, or is cancelled with us
            for waiter in waiting:
                if waiter.done():
                    continue
                if isinstance(error, Exception):
                    waiter.set_exception(error)
                else:
                    waiter.cancel()
            raise
        self._reload_at = now + self.reload_interval
        for waiter in waiting:
            if not waiter.done():
                waiter.set_result(None)

    async def _reload(self, now: datetime) -> None:
        """Follow the active cron deployments: new ones, changed versions, deletions."""
        async with self.engine.connect() as connection:
            active = {
                row.id: row.active_version
                for row in await connection.execute(
                    select(Deployment.id, Deployment.active_version)
                    .join(DeploymentVersion, _active_version())
                    .where(Deployment.kind == "cron", DeploymentVersion.status == "ready")
                )
            }
            for gone in self._followed.keys() - active.keys():
                log.info("scheduler: %s is no longer scheduled", self._followed.pop(gone).name)
            for gone in self._unusable.keys() - active.keys():
                del self._unusable[gone]
            changed = [
                deployment_id
                for deployment_id, version in active.items()
                if self._unusable.get(deployment_id) != version
                and (
                    deployment_id not in self._followed
                    or self._followed[deployment_id].version != version
                )
            ]
            if changed:
                await self._follow(connection, changed, now)
        self.metrics.schedules.set(len(self._followed))

    async def _follow(
        self, connection: AsyncConnection, deployment_ids: list[str], now: datetime
    ) -> None:
        """Start following new deployments, and changed versions of known ones."""
        new = [i for i in deployment_ids if i not in self._followed]
        last_dues: dict[str, datetime | None] = {}
        for chunk in _chunks(new):
            rows = await connection.execute(
                select(Run.deployment_id, func.max(Run.due_at))
                .where(Run.deployment_id.in_(chunk), Run.due_at.is_not(None))
                .group_by(Run.deployment_id)
            )
            last_dues.update({deployment_id: due for deployment_id, due in rows})
        for count, row in enumerate(await _versions(connection, deployment_ids), 1):
            self._follow_version(row, last_dues.get(row.id), now)
            if count % _YIELD_EVERY == 0:
                await asyncio.sleep(0)

    def _follow_version(self, row: Any, last_due: datetime | None, now: datetime) -> None:
        try:
            config = CronConfig.model_validate(row.config)
            schedule = _schedule(config.cron_frequency, config.timezone)
        except (ValidationError, ScheduleError) as error:
            log.error(
                "scheduler: %s version %s is not scheduled, its cron.json cannot be used: %s",
                row.name, row.version, error,
            )  # fmt: skip
            self._followed.pop(row.id, None)
            self._unusable[row.id] = row.version
            return
        self._unusable.pop(row.id, None)
        known = self._followed.get(row.id)
        if known is None:
            followed = _Followed(
                row.id, row.name, row.version, row.email, config, schedule,
                last_due=last_due or now - self.grace,
            )  # fmt: skip
            self._followed[row.id] = followed
            log.info("scheduler: following %s, %s", row.name, schedule.describe())
        else:
            followed = known
            followed.name, followed.version, followed.owner = row.name, row.version, row.email
            followed.config = config
            if schedule == known.schedule:
                return
            # Due times of the new schedule that passed before it was active were never
            # due: only those from now on count (within the usual grace).
            followed.schedule = schedule
            followed.last_due = max(followed.last_due, now - self.grace)
            followed.generation += 1
            log.info("scheduler: %s now runs %s", row.name, schedule.describe())
        self._push(followed, _next_due(followed.schedule, followed.last_due))

    def _push(self, followed: _Followed, due: datetime) -> None:
        self._sequence += 1
        heapq.heappush(
            self._heap, _Due(due, self._sequence, followed.deployment_id, followed.generation)
        )

    async def _fire_due(self) -> None:
        """Record every due time that has come as a run, then look ahead."""
        now = self.clock.now()
        due: list[_Due] = []
        while self._heap and self._heap[0].at <= now:
            entry = heapq.heappop(self._heap)
            followed = self._followed.get(entry.deployment_id)
            if followed is not None and followed.generation == entry.generation:
                due.append(entry)
        if not due:
            return
        try:
            firings = [f for entry in due for f in self._plan(entry, now)]
            await self._record(firings)
        except BaseException:
            for entry in due:
                heapq.heappush(self._heap, entry)
            raise
        handled = {f.followed.deployment_id: f for f in firings}  # the latest of each
        for count, firing in enumerate(handled.values(), 1):
            followed = firing.followed
            followed.last_due = firing.due
            self._push(followed, _next_due(followed.schedule, followed.last_due))
            if count % _YIELD_EVERY == 0:
                await asyncio.sleep(0)

    def _plan(self, entry: _Due, now: datetime) -> Iterator[_Firing]:
        """The due times of one deployment to record now, fired or missed."""
        followed = self._followed[entry.deployment_id]
        on_time_after = now - self.grace
        if entry.at > on_time_after:
            # The usual case: the entry is the first due time after `last_due`, so
            # plan_firings would fire exactly it.
            yield _Firing(followed, entry.at, "fired", on_time=True)
            return
        catch_up = followed.config.catch_up
        plan = plan_firings(followed.schedule, followed.last_due, now, catch_up, self.grace)
        if plan.missed:
            log.warning(
                "scheduler: %s missed %s%s due times from %s to %s (%s)",
                followed.name, "more than " if plan.unlisted_missed else "",
                len(plan.missed), plan.missed[0].isoformat(), plan.missed[-1].isoformat(),
                _CATCH_UP_SAYS[catch_up],
            )  # fmt: skip
        for missed in plan.missed:
            local = missed.astimezone(followed.schedule.zone)
            reason = (
                f"missed: the scheduler was down at {local:%Y-%m-%d %H:%M} "
                f"{followed.schedule.timezone} ({_CATCH_UP_SAYS[catch_up]})"
            )
            yield _Firing(followed, missed, "missed", on_time=False, reason=reason)
        for fire in plan.fire:
            yield _Firing(followed, fire, "fired", on_time=fire > on_time_after)

    async def _record(self, firings: list[_Firing]) -> None:
        """Insert one run per firing in one transaction; the unique (deployment, due time)
        constraint drops those another scheduler inserted first."""
        async with self.engine.begin() as connection:
            skipping = {
                f.followed.deployment_id
                for f in firings
                if f.kind == "fired" and f.followed.config.concurrency == "skip"
            }
            still_running = await _active_runs(connection, skipping)
            firings = [_skip_if_running(f, still_running) for f in firings]
            inserted_at = self.clock.now()
            rows = [_run_row(f, inserted_at) for f in firings]
            inserted = set(
                await connection.scalars(_insert_new_runs(connection).returning(Run.id), rows)
            )
        committed = self.clock.now()
        recorded = [f for f, row in zip(firings, rows, strict=True) if row["id"] in inserted]
        kinds = collections.Counter(f.kind for f in recorded)
        if kinds["fired"] and self.on_enqueued is not None:
            self.on_enqueued()
        self.metrics.fired.inc(kinds["fired"])
        for reason in ("missed", "concurrency"):
            self.metrics.skipped.labels(reason).inc(kinds[reason])
        self.metrics.already_fired.inc(len(firings) - len(recorded))
        for firing in recorded:
            if firing.on_time:
                self.metrics.lag.observe((committed - firing.due).total_seconds())


def _active_version() -> Any:
    return and_(
        DeploymentVersion.deployment_id == Deployment.id,
        DeploymentVersion.version == Deployment.active_version,
    )


async def _versions(connection: AsyncConnection, deployment_ids: list[str]) -> list[Any]:
    """The active version's config and the owner's e-mail of each deployment."""
    rows: list[Any] = []
    for chunk in _chunks(deployment_ids):
        rows += await connection.execute(
            select(
                Deployment.id,
                Deployment.name,
                DeploymentVersion.version,
                DeploymentVersion.config,
                User.email,
            )
            .join(DeploymentVersion, _active_version())
            .join(User, User.id == Deployment.owner_id)
            .where(Deployment.id.in_(chunk))
        )
    return rows


async def _active_runs(connection: AsyncConnection, deployment_ids: set[str]) -> dict[str, str]:
    """A queued or running run of each of `deployment_ids` that has one: id -> run id."""
    found: dict[str, str] = {}
    for chunk in _chunks(sorted(deployment_ids)):
        rows = await connection.execute(
            select(Run.deployment_id, Run.id).where(
                Run.deployment_id.in_(chunk), Run.status.in_(ACTIVE_STATUSES)
            )
        )
        found.update({deployment_id: run_id for deployment_id, run_id in rows})
    return found


def _skip_if_running(firing: _Firing, still_running: dict[str, str]) -> _Firing:
    previous = still_running.get(firing.followed.deployment_id)
    if firing.kind != "fired" or previous is None:
        return firing
    reason = f"the previous run ({previous}) was still running (concurrency is skip)"
    return replace(firing, kind="concurrency", reason=reason)


def _run_row(firing: _Firing, inserted_at: datetime) -> dict[str, Any]:
    followed = firing.followed
    return {
        "id": new_id("run"),
        "deployment_id": followed.deployment_id,
        "version": followed.version,
        "trigger": "schedule",
        "due_at": firing.due,
        "attempt": 1,
        "status": firing.status,
        "actor": followed.owner,
        "created_at": inserted_at,
        "finished_at": inserted_at if firing.status == "skipped" else None,
        "reason": firing.reason,
    }


def _insert_new_runs(connection: AsyncConnection) -> Insert:
    """INSERT INTO runs that leaves out a due time a run already has."""
    dialect = connection.dialect.name
    conflict = ["deployment_id", "due_at"]
    if dialect == "postgresql":
        return postgresql.insert(Run).on_conflict_do_nothing(index_elements=conflict)
    if dialect == "sqlite":
        return sqlite.insert(Run).on_conflict_do_nothing(index_elements=conflict)
    raise RuntimeError(f"the scheduler does not support a {dialect} metadata database")


@lru_cache(maxsize=4096)
def _schedule(expression: str, timezone: str) -> CronSchedule:
    """Parsed once per expression and zone, however many deployments share them."""
    return parse_cron(expression, timezone)


@lru_cache(maxsize=16_384)
def _next_due(schedule: CronSchedule, after: datetime) -> datetime:
    """Deployments sharing a schedule and a last due time (the top of the hour...) share
    the computation."""
    return schedule.next_after(after)


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    return (items[start : start + _IN_CHUNK] for start in range(0, len(items), _IN_CHUNK))
