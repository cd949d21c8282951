"""Clocks: the system one tells aware UTC time; the manual one moves only when told."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest

from servicebay.runtime.clock import Clock, ManualClock, SystemClock


def test_the_system_clock_tells_aware_utc_time_and_sleeps() -> None:
    clock: Clock = SystemClock()
    before = clock.now()
    asyncio.run(clock.sleep(0))
    assert before.tzinfo is UTC
    assert clock.now() >= before


def test_a_manual_clock_stands_still_until_moved() -> None:
    clock = ManualClock(datetime(2026, 3, 1, 12, tzinfo=timezone(timedelta(hours=2))))
    assert clock.now() == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert clock.now().tzinfo is UTC
    assert clock.advance(90) == datetime(2026, 3, 1, 10, 1, 30, tzinfo=UTC)
    assert clock.advance(timedelta(days=1)) == datetime(2026, 3, 2, 10, 1, 30, tzinfo=UTC)
    assert clock.set(datetime(2026, 1, 1, tzinfo=UTC)) == clock.now()


def test_a_manual_clock_refuses_naive_times_and_moving_back_by_advance() -> None:
    clock = ManualClock()
    with pytest.raises(ValueError, match="has no time zone"):
        clock.set(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="use set"):
        clock.advance(-1)


def test_sleep_returns_once_the_clock_reaches_the_deadline() -> None:
    async def scenario() -> list[str]:
        clock = ManualClock()
        woke: list[str] = []

        async def sleeper() -> None:
            await clock.sleep(60)
            woke.append(clock.now().time().isoformat())

        task = asyncio.create_task(sleeper())
        await clock.wait_for_sleepers(1)
        clock.advance(59)
        await asyncio.sleep(0)
        assert woke == []
        assert clock.sleeping == 1
        clock.advance(1)
        await task
        assert clock.sleeping == 0
        return woke

    assert asyncio.run(scenario()) == ["00:01:00"]


def test_sleepers_wake_in_deadline_order_when_the_clock_jumps_past_them_all() -> None:
    async def scenario() -> list[int]:
        clock = ManualClock()
        order: list[int] = []

        async def sleeper(seconds: int) -> None:
            await clock.sleep(seconds)
            order.append(seconds)

        tasks = [asyncio.create_task(sleeper(s)) for s in (300, 10, 3600, 60)]
        await clock.wait_for_sleepers(4)
        clock.advance(timedelta(minutes=10))
        await asyncio.gather(*tasks[:2], tasks[3])
        assert clock.sleeping == 1
        clock.set(clock.now() + timedelta(hours=1))
        await tasks[2]
        return order

    assert asyncio.run(scenario()) == [10, 60, 300, 3600]


def test_sleeping_for_nothing_returns_without_the_clock_moving() -> None:
    async def scenario() -> datetime:
        clock = ManualClock()
        await clock.sleep(0)
        await clock.sleep(-5)
        return clock.now()

    assert asyncio.run(scenario()) == datetime(2026, 1, 1, tzinfo=UTC)


def test_a_cancelled_sleep_stops_waiting() -> None:
    async def scenario() -> int:
        clock = ManualClock()
        task = asyncio.create_task(clock.sleep(30))
        await clock.wait_for_sleepers(1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return clock.sleeping

    assert asyncio.run(scenario()) == 0
