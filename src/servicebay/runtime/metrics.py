"""Prometheus metrics of runs: how they end, how long they take, how many wait.

The scheduler's own (lag, schedules, fired and skipped firings) live with it in
`runtime/scheduler.py`, and the alerts' in `runtime/alerts.py`; all share the node's
registry, served at `/metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicebay.core.models import Deployment, Run

log = logging.getLogger(__name__)

DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class RunMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.finished = Counter(
            "servicebay_runs",
            "Runs that ended on this node, by deployment and status.",
            ["deployment", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "servicebay_run_duration_seconds",
            "Time from a run's start to its end, by deployment.",
            ["deployment"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.queued = Gauge(
            "servicebay_runs_queued",
            "Runs waiting for a worker (the queue depth), on every node.",
            registry=registry,
        )
        self.running = Gauge(
            "servicebay_runs_running", "Runs running now, on every node.", registry=registry
        )

    def observe(self, deployment: Deployment, run: Run) -> None:
        """A run ended: count it, and time it if it started."""
        self.finished.labels(deployment.name, run.status).inc()
        if run.started_at is not None and run.finished_at is not None:
            elapsed = (run.finished_at - run.started_at).total_seconds()
            self.duration.labels(deployment.name).observe(max(elapsed, 0.0))


class QueueWatch:
    """A node component that keeps the queued and running gauges current, reading the
    runs table every `interval` seconds (the queue is shared by every node)."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], metrics: RunMetrics, *,
        interval: float = 5.0,
    ) -> None:  # fmt: skip
        self.sessions = sessions
        self.metrics = metrics
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="run-queue-gauges")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def refresh(self) -> None:
        async with self.sessions() as session:
            rows = await session.execute(
                select(Run.status, func.count())
                .where(Run.status.in_(("queued", "running")))
                .group_by(Run.status)
            )
            counts = {status: count for status, count in rows}
        self.metrics.queued.set(counts.get("queued", 0))
        self.metrics.running.set(counts.get("running", 0))

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.refresh()
            except Exception:
                log.warning("could not read the run queue's depth", exc_info=True)
