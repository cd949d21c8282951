"""Scheduler lag with 1,000 active cron schedules, against a bare asyncio loop, one run.

Lag is the time from a due time to the commit of its run: a run's `created_at` (stamped
just before its insert) names its batch, and the bench notes the clock when the scheduler
reports each batch committed (`on_enqueued`). The baseline is a bare asyncio loop that sleeps
until each due instant on the same clock and does nothing else: the floor set by timers
and the clock. Both run in this process, one after the other, for the same virtual minutes.

Schedules have minute resolution, so waiting for real minutes would take an hour for 60
samples per schedule. The clock here runs `--speed` times faster than real time (60: a
virtual minute every real second) and every lag is converted back to real time. The
scheduler does the same work per due instant as it would in real time, only with less
time between instants, which makes the measurement harsher, not kinder. Its re-read of
the deployments keeps its real cadence (every 2 real seconds).

Two scenarios, each on a fresh database with 1,000 cron deployments:

- `herd`: every schedule is `* * * * *`: 1,000 runs due at the same instant every minute
  (the top of the hour, at scale: the worst case).
- `spread`: `M * * * *` with M = i mod 60, in ten time zones: ~17 runs due each minute,
  from 600 distinct schedules.

A stand-in worker marks queued runs succeeded as soon as they are enqueued, so the
default `concurrency: "skip"` path (look for a run still running, then insert) is the
one measured. Prints p50/p99 of each and the ratio of the p99s; the target is a
scheduler p99 under 250 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import heapq
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from servicebay.core.db import create_engine
from servicebay.core.migrate import upgrade
from servicebay.core.models import Deployment, DeploymentVersion, Run, User, new_id
from servicebay.runtime.config import CronConfig
from servicebay.runtime.schedule import parse_cron
from servicebay.runtime.scheduler import Scheduler

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.support import throwaway_postgres  # noqa: E402

TARGET_P99_MS = 250.0
ZONES = (
    "UTC", "Europe/London", "Europe/Berlin", "America/New_York", "America/Chicago",
    "America/Los_Angeles", "Asia/Tokyo", "Asia/Kolkata", "Australia/Sydney",
    "America/Sao_Paulo",
)  # fmt: skip
SCENARIOS: dict[str, Callable[[int], tuple[str, str]]] = {
    "herd": lambda i: ("* * * * *", "UTC"),
    "spread": lambda i: (f"{i % 60} * * * *", ZONES[i % len(ZONES)]),
}


class FastClock:
    """Aware UTC time running `speed` times faster than real time, from `origin`."""

    def __init__(self, origin: datetime, speed: float) -> None:
        self.origin = origin
        self.speed = speed
        self.started = time.perf_counter()

    def now(self) -> datetime:
        elapsed = (time.perf_counter() - self.started) * self.speed
        return self.origin + timedelta(seconds=elapsed)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0) / self.speed)

    def real_ms(self, virtual: timedelta) -> float:
        return virtual.total_seconds() / self.speed * 1000


@dataclass
class Result:
    scenario: str
    target: str
    samples: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    late: int
    """Due times in the window without an on-time run (none expected)."""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def result(scenario: str, target: str, lags_ms: list[float], late: int) -> Result:
    return Result(
        scenario, target, len(lags_ms), percentile(lags_ms, 0.5), percentile(lags_ms, 0.99),
        max(lags_ms), late,
    )  # fmt: skip


def schedules(scenario: str, count: int) -> list[tuple[str, str]]:
    return [SCENARIOS[scenario](i) for i in range(count)]


def window(clock: FastClock, minutes: int) -> tuple[datetime, datetime]:
    """The virtual minutes measured: from the second minute boundary ahead (the first
    leaves time to settle) for `minutes` minutes."""
    start = clock.now().replace(second=0, microsecond=0) + timedelta(minutes=2)
    return start, start + timedelta(minutes=minutes)


def due_counts(scenario: str, count: int, start: datetime, end: datetime) -> dict[datetime, int]:
    """How many runs are due at each instant in [start, end)."""
    due: Counter[datetime] = Counter()
    for (expression, zone), sharing in Counter(schedules(scenario, count)).items():
        after = start - timedelta(microseconds=1)
        for instant in parse_cron(expression, zone).due_between(after, end):
            if instant < end:
                due[instant] += sharing
    return due


async def baseline(scenario: str, count: int, minutes: int, speed: float) -> Result:
    """Sleep until each due instant of the same schedules and note how late we woke."""
    clock = FastClock(datetime(2026, 1, 5, tzinfo=UTC), speed)
    start, end = window(clock, minutes)
    pending = list(due_counts(scenario, count, start, end).items())
    heapq.heapify(pending)
    lags: list[float] = []
    while pending:
        instant, sharing = heapq.heappop(pending)
        await clock.sleep((instant - clock.now()).total_seconds())
        lags += [clock.real_ms(clock.now() - instant)] * sharing
    return result(scenario, "baseline", lags, 0)


@asynccontextmanager
async def fresh_database(kind: str, postgres_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated, empty metadata database: a temporary SQLite file or PostgreSQL database."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as home:
            engine = create_engine(f"sqlite:///{Path(home) / 'meta.db'}")
            await upgrade(engine)
            try:
                yield engine
            finally:
                await engine.dispose()
        return
    async with throwaway_postgres(postgres_url) as url:
        engine = create_engine(url)
        try:
            await upgrade(engine)
            yield engine
        finally:
            await engine.dispose()


async def deploy(engine: AsyncEngine, scenario: str, count: int) -> None:
    """`count` active cron deployments of one owner, as deploys leave them."""
    owner = new_id("usr")
    deployments: list[dict[str, Any]] = []
    versions: list[dict[str, Any]] = []
    for number, (expression, zone) in enumerate(schedules(scenario, count)):
        deployment = new_id("dep")
        config = CronConfig.model_validate(
            {"cron_frequency": expression, "timezone": zone, "script_to_run": "main.py"}
        ).model_dump(mode="json")
        deployments.append({"id": deployment, "name": f"job-{number:04d}", "kind": "cron",
                            "owner_id": owner, "active_version": 1})  # fmt: skip
        versions.append({
            "id": new_id("ver"), "deployment_id": deployment, "version": 1, "config": config,
            "bundle_digest": "0" * 64, "requirements_digest": "0" * 64, "status": "ready",
            "created_by": "bench@example.com",
        })  # fmt: skip
    async with engine.begin() as connection:
        await connection.execute(
            insert(User).values(id=owner, email="bench@example.com", name="Bench", teams=[])
        )
        await connection.execute(insert(Deployment), deployments)
        await connection.execute(insert(DeploymentVersion), versions)


async def scheduler(
    scenario: str, count: int, minutes: int, speed: float, kind: str, postgres_url: str
) -> Result:
    async with fresh_database(kind, postgres_url) as engine:
        await deploy(engine, scenario, count)
        clock = FastClock(datetime(2026, 1, 5, tzinfo=UTC), speed)
        finished = asyncio.Event()
        commits: list[datetime] = []

        def enqueued() -> None:
            commits.append(clock.now())
            finished.set()

        async def worker() -> None:
            """Every enqueued run succeeds at once, so none is still running next time."""
            while True:
                await finished.wait()
                finished.clear()
                async with engine.begin() as connection:
                    await connection.execute(
                        update(Run).where(Run.status == "queued").values(status="succeeded")
                    )

        running = Scheduler(engine, clock, on_enqueued=enqueued, reload_seconds=2 * speed)
        working = asyncio.create_task(worker())
        await running.start()
        await running.refresh()
        start, end = window(clock, minutes)
        await clock.sleep((end - clock.now()).total_seconds() + 1)
        await running.stop()
        working.cancel()
        async with engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(Run.due_at, Run.created_at, Run.reason).where(
                        Run.due_at >= start, Run.due_at < end
                    )
                )
            ).all()
    expected = sum(due_counts(scenario, count, start, end).values())
    on_time = [r for r in rows if not (r.reason or "").startswith("missed")]
    lags = [clock.real_ms(commits[bisect.bisect(commits, r.created_at)] - r.due_at)
            for r in on_time]  # fmt: skip
    return result(scenario, f"scheduler/{kind}", lags, expected - len(on_time))


def report(results: list[Result], as_json: bool) -> None:
    verdicts = []
    for scenario in dict.fromkeys(r.scenario for r in results):
        base = next(r for r in results if r.scenario == scenario and r.target == "baseline")
        for measured in (r for r in results if r.scenario == scenario and r is not base):
            verdicts.append({
                "scenario": scenario, "target": measured.target,
                "p99_ratio": measured.p99_ms / base.p99_ms,
                "p99_under_target": measured.p99_ms < TARGET_P99_MS and measured.late == 0,
            })  # fmt: skip
    if as_json:
        print(json.dumps({"results": [asdict(r) for r in results], "verdicts": verdicts},
                         indent=2))  # fmt: skip
        return
    print(f"{'scenario':<10}{'target':<22}{'samples':>9}{'p50 ms':>10}{'p99 ms':>10}"
          f"{'max ms':>10}{'late':>6}")  # fmt: skip
    for r in results:
        print(f"{r.scenario:<10}{r.target:<22}{r.samples:>9}{r.p50_ms:>10.2f}{r.p99_ms:>10.2f}"
              f"{r.max_ms:>10.2f}{r.late:>6}")  # fmt: skip
    print()
    for v in verdicts:
        verdict = "meets" if v["p99_under_target"] else "MISSES"
        print(f"{v['scenario']:<10}{v['target']:<22} p99 {v['p99_ratio']:.1f}x the baseline's; "
              f"{verdict} the target p99 < {TARGET_P99_MS:.0f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--minutes", type=int, default=20, help="virtual minutes measured")
    parser.add_argument("--speed", type=float, default=60.0,
                        help="virtual seconds per real second")  # fmt: skip
    parser.add_argument("--scenario", choices=[*SCENARIOS, "both"], default="both")
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--postgres-url", default=os.environ.get(
        "BAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    def each(choice: str, choices: Iterator[str]) -> list[str]:
        return list(choices) if choice == "both" else [choice]

    results: list[Result] = []
    for scenario in each(args.scenario, iter(SCENARIOS)):
        run = (scenario, args.schedules, args.minutes, args.speed)
        results.append(asyncio.run(baseline(*run)))
        for kind in each(args.database, iter(("sqlite", "postgresql"))):
            results.append(asyncio.run(scheduler(*run, kind, args.postgres_url)))
    report(results, args.json)


if __name__ == "__main__":
    main()
