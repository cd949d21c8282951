"""Run metrics: how runs end, how long they take, and how many wait, as /metrics shows."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from servicebay.core.db import create_engine, session_factory
from servicebay.core.identity import create_user
from servicebay.core.migrate import upgrade
from servicebay.core.models import Deployment, utcnow
from servicebay.runtime import runs
from servicebay.runtime.layout import Layout
from servicebay.runtime.metrics import QueueWatch, RunMetrics
from tests.runtime.runs_support import claim_one, deploy_script, passable_home

OWNER = "owner@example.com"


@pytest.fixture
def home() -> Iterator[Path]:
    folder = passable_home()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_finished_runs_are_counted_by_deployment_and_status_and_timed() -> None:
    registry = CollectorRegistry()
    metrics = RunMetrics(registry)
    deployment = Deployment(name="weekly_report")
    started = utcnow()

    for status, seconds in (("succeeded", 2.0), ("failed", 0.5), ("succeeded", 40.0)):
        run = runs.Run(status=status, started_at=started)
        run.finished_at = started + timedelta(seconds=seconds)
        metrics.observe(deployment, run)
    metrics.observe(deployment, runs.Run(status="cancelled", started_at=None, finished_at=None))

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"deployment": "weekly_report", **labels})

    assert sample("servicebay_runs_total", status="succeeded") == 2
    assert sample("servicebay_runs_total", status="failed") == 1
    assert sample("servicebay_runs_total", status="cancelled") == 1
    assert sample("servicebay_run_duration_seconds_count") == 3
    assert sample("servicebay_run_duration_seconds_sum") == pytest.approx(42.5)
    assert sample("servicebay_run_duration_seconds_bucket", le="1.0") == 1


def test_the_queue_gauges_follow_the_runs_table(home: Path) -> None:
    async def scenario() -> None:
        engine = create_engine(f"sqlite:///{home / 'meta.db'}")
        await upgrade(engine)
        sessions = session_factory(engine)
        registry = CollectorRegistry()
        watch = QueueWatch(sessions, RunMetrics(registry))
        try:
            async with sessions() as session, session.begin():
                await create_user(session, email=OWNER, name="Owner", teams=[], admin=False)
            deployed = await deploy_script(sessions, Layout(home), owner=OWNER, script="")
            async with sessions() as session, session.begin():
                deployment = await session.get(Deployment, deployed.id)
                assert deployment is not None
                for _ in range(3):
                    await runs.create_run(session, deployment, trigger="manual", actor=OWNER)
            async with sessions() as session, session.begin():
                await claim_one(session, "worker-1")

            await watch.refresh()

            assert registry.get_sample_value("servicebay_runs_queued") == 2
            assert registry.get_sample_value("servicebay_runs_running") == 1
        finally:
            await engine.dispose()

    asyncio.run(scenario())
