"""The scheduler, driven by a manual clock against real metadata databases.

Each test moves the clock to hand-written instants and reads the runs table: the due
times there are the specification (daylight saving, month ends, catch-up after downtime,
concurrency, deploys and rollbacks, two schedulers on one PostgreSQL).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from servicebay.core import identity
from servicebay.core.db import session_factory
from servicebay.core.models import Deployment, DeploymentVersion, Run, User, new_id
from servicebay.runtime.clock import ManualClock
from servicebay.runtime.config import CronConfig
from servicebay.runtime.runs import may_start
from servicebay.runtime.scheduler import Scheduler
from tests.core.core_support import migrated_engine


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def cron(expression: str, **options: str) -> dict[str, Any]:
    """A cron.json as a deploy stores it."""
    config = {"cron_frequency": expression, "script_to_run": "main.py", **options}
    return CronConfig.model_validate(config).model_dump(mode="json")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'meta.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same scenario on both metadata backends."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'meta.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@dataclass
class World:
    """A metadata database with one deployment owner, a manual clock and schedulers."""

    engine: AsyncEngine
    clock: ManualClock
    owner: User
    schedulers: list[Scheduler] = field(default_factory=list)
    enqueued: int = 0

    async def deploy(self, name: str, config: dict[str, Any]) -> int:
        """Add a ready version of `name` and make it active, as a deploy does."""
        async with session_factory(self.engine)() as session, session.begin():
            deployment = await session.scalar(select(Deployment).where(Deployment.name == name))
            if deployment is None:
                deployment = Deployment(
                    id=new_id("dep"), name=name, kind="cron", owner_id=self.owner.id
                )
                session.add(deployment)
                await session.flush()
            version = (deployment.active_version or 0) + 1
            session.add(
                DeploymentVersion(
                    id=new_id("ver"), deployment_id=deployment.id, version=version,
                    config=config, bundle_digest="0" * 64, requirements_digest="0" * 64,
                    status="ready", created_by=self.owner.email,
                )
            )  # fmt: skip
            await session.flush()
            deployment.active_version = version
        return version

    async def activate(self, name: str, version: int) -> None:
        """A rollback: an earlier version becomes the active one."""
        async with self.engine.begin() as connection:
            await connection.execute(
                update(Deployment).where(Deployment.name == name).values(active_version=version)
            )

    async def delete(self, name: str) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(delete(Deployment).where(Deployment.name == name))

    async def runs(self, name: str | None = None) -> list[Run]:
        """Runs (of deployment `name`), in due-time order."""
        query = select(Run).join(Deployment).order_by(Run.due_at)
        if name is not None:
            query = query.where(Deployment.name == name)
        async with session_factory(self.engine)() as session:
            return list(await session.scalars(query))

    async def set_status(self, status: str, runs: list[Run]) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(
                update(Run).where(Run.id.in_([r.id for r in runs])).values(status=status)
            )

    async def may_start(self, run: Run, concurrency: Any) -> bool:
        async with session_factory(self.engine)() as session, session.begin():
            fresh = await session.get(Run, run.id)
            assert fresh is not None
            return await may_start(session, fresh, concurrency)

    async def start_scheduler(self, engine: AsyncEngine | None = None) -> Scheduler:
        scheduler = Scheduler(
            engine or self.engine,
            self.clock,
            registry=CollectorRegistry(),
            on_enqueued=self._count_enqueued,
        )
        await scheduler.start()
        self.schedulers.append(scheduler)
        await self.clock.wait_for_sleepers(len(self.schedulers))
        return scheduler

    async def stop_scheduler(self, scheduler: Scheduler) -> None:
        await scheduler.stop()
        self.schedulers.remove(scheduler)

    async def at(self, instant: datetime) -> None:
        """Move the clock to `instant` and wait until every scheduler is idle again."""
        self.clock.set(instant)
        await self.clock.wait_for_sleepers(len(self.schedulers))

    def _count_enqueued(self) -> None:
        self.enqueued += 1


@asynccontextmanager
async def world(url: str, start: datetime) -> AsyncIterator[World]:
    engine = await migrated_engine(url)
    async with session_factory(engine)() as session, session.begin():
        owner = await identity.create_user(
            session, email="owner@example.com", name="Owner", teams=[], admin=False
        )
    scene = World(engine, ManualClock(start), owner)
    try:
        yield scene
    finally:
        for scheduler in scene.schedulers:
            await scheduler.stop()
        await engine.dispose()


def sample(scheduler: Scheduler, name: str, **labels: str) -> float:
    return scheduler.metrics.registry.get_sample_value(name, labels) or 0.0


def dues(runs: list[Run]) -> list[datetime]:
    return [r.due_at for r in runs if r.due_at is not None]


def test_a_due_time_becomes_one_queued_run_of_the_active_version_by_its_owner(
    database_url: str,
) -> None:
    async def scenario() -> None:
        async with world(database_url, utc(2026, 5, 4, 8, 59, 30)) as scene:
            await scene.deploy("report", cron("0 9 * * *"))
            scheduler = await scene.start_scheduler()
            await scene.at(utc(2026, 5, 4, 8, 59, 59))
            assert await scene.runs() == []

            await scene.at(utc(2026, 5, 4, 9))
            await scene.at(utc(2026, 5, 4, 9, 0, 30))
            [run] = await scene.runs("report")
            assert (run.status, run.trigger, run.version) == ("queued", "schedule", 1)
            assert run.due_at == utc(2026, 5, 4, 9)
            assert run.actor == "owner@example.com"
            assert run.created_at == utc(2026, 5, 4, 9)
            assert scene.enqueued == 1
            assert sample(scheduler, "servicebay_scheduler_fired_total") == 1
            assert sample(scheduler, "servicebay_scheduler_lag_seconds_count") == 1
            assert sample(scheduler, "servicebay_scheduler_schedules") == 1

    asyncio.run(scenario())


def test_a_time_in_the_spring_forward_gap_fires_once_when_the_clocks_have_jumped(
    sqlite_url: str,
) -> None:
    async def scenario() -> list[datetime]:
        async with world(sqlite_url, utc(2026, 3, 7, 7)) as scene:
            # 02:30 New York time does not exist on 8 March 2026 (02:00 EST -> 03:00 EDT).
            await scene.deploy("nightly", cron("30 2 * * *", timezone="America/New_York",
                                               concurrency="allow"))  # fmt: skip
            await scene.start_scheduler()
            for instant in (
                utc(2026, 3, 7, 7, 30),  # 02:30 EST
                utc(2026, 3, 8, 6, 30),  # 01:30 EST: not yet
                utc(2026, 3, 8, 7),  # 03:00 EDT, the first instant after the gap
                utc(2026, 3, 8, 7, 30),  # 03:30 EDT: already fired today
                utc(2026, 3, 9, 6, 30),  # 02:30 EDT
            ):
                await scene.at(instant)
            runs = await scene.runs()
            assert {r.status for r in runs} == {"queued"}
            return dues(runs)

    assert asyncio.run(scenario()) == [
        utc(2026, 3, 7, 7, 30),
        utc(2026, 3, 8, 7),
        utc(2026, 3, 9, 6, 30),
    ]


def test_a_repeated_hour_fires_a_time_of_day_once_and_an_hourly_schedule_twice(
    sqlite_url: str,
) -> None:
    async def scenario() -> tuple[list[datetime], list[datetime]]:
        async with world(sqlite_url, utc(2026, 11, 1, 4, 30)) as scene:
            # 1 November 2026 in New York: 01:00-02:00 happens twice (EDT, then EST).
            zone = "America/New_York"
            await scene.deploy("daily", cron("30 1 * * *", timezone=zone, concurrency="allow"))
            await scene.deploy("hourly", cron("0 * * * *", timezone=zone, concurrency="allow"))
            await scene.start_scheduler()
            for instant in (
                utc(2026, 11, 1, 5),  # 01:00 EDT
                utc(2026, 11, 1, 5, 30),  # 01:30 EDT
                utc(2026, 11, 1, 6),  # 01:00 EST
                utc(2026, 11, 1, 6, 30),  # 01:30 EST: the same time of day again
                utc(2026, 11, 1, 7),  # 02:00 EST
            ):
                await scene.at(instant)
            hourly = dues(await scene.runs("hourly"))
            await scene.at(utc(2026, 11, 2, 6, 30))  # 01:30 EST the next day
            return dues(await scene.runs("daily")), hourly

    daily, hourly = asyncio.run(scenario())
    assert daily == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]
    assert hourly == [utc(2026, 11, 1, 5), utc(2026, 11, 1, 6), utc(2026, 11, 1, 7)]


def test_month_ends_the_last_day_and_the_31st(sqlite_url: str) -> None:
    async def scenario() -> tuple[list[datetime], list[datetime]]:
        async with world(sqlite_url, utc(2026, 1, 31, 17)) as scene:
            await scene.deploy("last-day", cron("0 18 L * *", concurrency="allow"))
            await scene.deploy("the-31st", cron("0 18 31 * *", concurrency="allow"))
            await scene.start_scheduler()
            for day in ((1, 31), (2, 28), (3, 30), (3, 31), (4, 30)):
                await scene.at(utc(2026, *day, 18))
            assert {r.status for r in await scene.runs()} == {"queued"}
            return dues(await scene.runs("last-day")), dues(await scene.runs("the-31st"))

    last_day, the_31st = asyncio.run(scenario())
    assert last_day == [utc(2026, 1, 31, 18), utc(2026, 2, 28, 18), utc(2026, 3, 31, 18),
                        utc(2026, 4, 30, 18)]  # fmt: skip
    assert the_31st == [utc(2026, 1, 31, 18), utc(2026, 3, 31, 18)]


@pytest.mark.parametrize(
    ("catch_up", "queued", "missed"),
    [("none", 0, 72), ("latest", 1, 71), ("all", 72, 0)],
)
def test_after_three_days_down_catch_up_decides_what_runs_and_the_rest_is_recorded(
    database_url: str, catch_up: str, queued: int, missed: int
) -> None:
    async def scenario() -> None:
        async with world(database_url, utc(2026, 6, 1, 0, 30)) as scene:
            await scene.deploy("hourly", cron("0 * * * *", catch_up=catch_up))
            first = await scene.start_scheduler()
            await scene.at(utc(2026, 6, 1, 1))
            await scene.set_status("succeeded", await scene.runs())
            await scene.stop_scheduler(first)

            scene.clock.set(utc(2026, 6, 4, 1, 30))
            restarted = await scene.start_scheduler()
            after = (await scene.runs())[1:]
            # 02:00 on 1 June to 01:00 on 4 June: 72 due times.
            assert dues(after) == [utc(2026, 6, 1, 2) + timedelta(hours=h) for h in range(72)]
            assert [r.status for r in after] == ["skipped"] * missed + ["queued"] * queued
            for run in after[:missed]:
                assert run.reason is not None
                assert run.reason.startswith(
                    f"missed: the scheduler was down at {run.due_at:%Y-%m-%d %H:%M} UTC"
                )
                assert f'catch_up is "{catch_up}"' in run.reason
            assert sample(restarted, "servicebay_scheduler_skipped_total", reason="missed") == (
                missed
            )

            await scene.set_status("succeeded", after)
            await scene.at(utc(2026, 6, 4, 2))
            [latest] = (await scene.runs())[73:]
            assert (latest.due_at, latest.status) == (utc(2026, 6, 4, 2), "queued")

    asyncio.run(scenario())


@pytest.mark.parametrize("concurrency", ["skip", "queue", "allow"])
def test_a_due_time_while_the_previous_run_still_runs(database_url: str, concurrency: str) -> None:
    async def scenario() -> None:
        async with world(database_url, utc(2026, 7, 1, 10, 1, 30)) as scene:
            await scene.deploy("sync", cron("*/5 * * * *", concurrency=concurrency))
            await scene.start_scheduler()
            await scene.at(utc(2026, 7, 1, 10, 5))
            [previous] = await scene.runs()
            await scene.set_status("running", [previous])

            await scene.at(utc(2026, 7, 1, 10, 10))
            [_, due] = await scene.runs()
            if concurrency == "skip":
                assert due.status == "skipped"
                assert due.reason == (
                    f"the previous run ({previous.id}) was still running (concurrency is skip)"
                )
                assert due.finished_at == utc(2026, 7, 1, 10, 10)
            else:
                assert due.status == "queued"
                assert await scene.may_start(due, concurrency) is (concurrency == "allow")

            await scene.set_status("succeeded", [previous])
            await scene.at(utc(2026, 7, 1, 10, 15))
            [*_, later] = await scene.runs()
            assert later.status == "queued"
            if concurrency == "queue":
                # One at a time in due-time order: 10:10 starts first, 10:15 waits.
                assert await scene.may_start(due, concurrency)
                assert not await scene.may_start(later, concurrency)
            assert scene.enqueued == (2 if concurrency == "skip" else 3)

    asyncio.run(scenario())


def test_a_deleted_deployment_stops_firing(sqlite_url: str) -> None:
    async def scenario() -> None:
        async with world(sqlite_url, utc(2026, 8, 1, 0, 30)) as scene:
            await scene.deploy("gone", cron("0 * * * *"))
            await scene.deploy("kept", cron("0 * * * *"))
            scheduler = await scene.start_scheduler()
            await scene.at(utc(2026, 8, 1, 1))
            await scene.delete("gone")
            await scheduler.refresh()
            assert sample(scheduler, "servicebay_scheduler_schedules") == 1

            await scene.set_status("succeeded", await scene.runs())
            await scene.at(utc(2026, 8, 1, 2))
            assert dues(await scene.runs("kept")) == [utc(2026, 8, 1, 1), utc(2026, 8, 1, 2)]
            assert await scene.runs("gone") == []

    asyncio.run(scenario())


def test_a_deployment_deleted_just_before_its_due_time_does_not_lose_the_others_runs(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with world(sqlite_url, utc(2026, 8, 1, 0, 30)) as scene:
            await scene.deploy("gone", cron("0 * * * *"))
            await scene.deploy("kept", cron("0 * * * *"))
            await scene.start_scheduler()
            await scene.at(utc(2026, 8, 1, 0, 59, 59))  # the scheduler re-reads here
            await scene.delete("gone")
            # Due a second later, before the next re-read: the batch with a run of the
            # deleted deployment is refused by its foreign key, and retried a second on.
            await scene.at(utc(2026, 8, 1, 1))
            assert await scene.runs() == []
            await scene.at(utc(2026, 8, 1, 1, 0, 1))
            [run] = await scene.runs()
            assert (run.due_at, run.status) == (utc(2026, 8, 1, 1), "queued")

    with caplog.at_level(logging.ERROR, logger="servicebay.runtime.scheduler"):
        asyncio.run(scenario())
    assert [r.message for r in caplog.records] == [
        "scheduler: could not read or record due times; retrying in 1.0 s"
    ]


def test_a_new_version_or_a_rollback_changes_the_schedule_from_then_on(sqlite_url: str) -> None:
    async def scenario() -> list[tuple[datetime | None, int, str]]:
        async with world(sqlite_url, utc(2026, 9, 1, 8)) as scene:
            await scene.deploy("report", cron("0 9 * * *", concurrency="allow"))
            scheduler = await scene.start_scheduler()
            await scene.at(utc(2026, 9, 1, 9))
            await scene.at(utc(2026, 9, 1, 15, 20))

            # Every ten minutes from now on; 09:10 to 15:20 were never due under it.
            await scene.deploy("report", cron("*/10 * * * *", concurrency="allow"))
            await scene.at(utc(2026, 9, 1, 15, 30))
            await scene.activate("report", 1)
            await scheduler.refresh()
            await scene.at(utc(2026, 9, 1, 15, 40))
            await scene.at(utc(2026, 9, 2, 9))
            return [(r.due_at, r.version, r.status) for r in await scene.runs()]

    assert asyncio.run(scenario()) == [
        (utc(2026, 9, 1, 9), 1, "queued"),
        (utc(2026, 9, 1, 15, 30), 2, "queued"),
        (utc(2026, 9, 2, 9), 1, "queued"),
    ]


def test_a_version_whose_config_cannot_be_scheduled_is_logged_and_others_fire(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> list[str]:
        async with world(sqlite_url, utc(2026, 10, 1, 0, 30)) as scene:
            await scene.deploy("broken", {"cron_frequency": "0 0 0 0 0", "script_to_run": "a.py"})
            await scene.deploy("fine", cron("0 * * * *"))
            await scene.start_scheduler()
            await scene.at(utc(2026, 10, 1, 1))
            return [r.deployment_id for r in await scene.runs("fine")]

    with caplog.at_level(logging.ERROR, logger="servicebay.runtime.scheduler"):
        assert len(asyncio.run(scenario())) == 1
    [record] = caplog.records
    assert "broken version 1 is not scheduled, its cron.json cannot be used" in record.message
    assert "day of month" in record.message


def test_two_schedulers_on_one_postgresql_fire_each_due_time_once(postgres_url: str) -> None:
    async def scenario() -> None:
        async with world(postgres_url, utc(2026, 12, 1)) as scene:
            names = [f"job-{n:02d}" for n in range(20)]
            for name in names:
                await scene.deploy(name, cron("* * * * *", concurrency="allow"))
            other_node = await migrated_engine(postgres_url)
            try:
                first = await scene.start_scheduler()
                second = await scene.start_scheduler(other_node)
                # Each started on a due time (00:00), which it fired at once.
                minutes = [utc(2026, 12, 1, 0, m) for m in range(11)]
                for minute in minutes:
                    await scene.at(minute)
                runs = await scene.runs()
                assert sorted((r.deployment_id, r.due_at) for r in runs) == sorted(
                    {(r.deployment_id, r.due_at) for r in runs}
                )
                assert sorted(dues(runs)) == sorted(minutes * len(names))

                def total(metric: str) -> float:
                    return sample(first, metric) + sample(second, metric)

                # Both found every due time after 00:00 (the second started after the first
                # had fired it); the database kept one run of each.
                assert total("servicebay_scheduler_fired_total") == len(runs)
                assert total("servicebay_scheduler_already_fired_total") == len(runs) - len(names)

                # Both restart after an hour down: the missed minutes are recorded once too.
                await scene.stop_scheduler(first)
                await scene.stop_scheduler(second)
                scene.clock.set(utc(2026, 12, 1, 1, 10, 30))
                await asyncio.gather(scene.start_scheduler(), scene.start_scheduler(other_node))
                for name in names:
                    mine = await scene.runs(name)
                    assert dues(mine) == [utc(2026, 12, 1) + timedelta(minutes=m)
                                          for m in range(71)]  # fmt: skip
                    # catch_up "latest": 01:09, and 01:10 which is on time, run.
                    assert [r.status for r in mine[11:]] == ["skipped"] * 58 + ["queued"] * 2
            finally:
                await other_node.dispose()

    asyncio.run(scenario())
