"""Time as the scheduler sees it, behind a protocol so tests can move it by hand.

`SystemClock` is the real one. `ManualClock` stands still until a test advances or
sets it; its `sleep` returns once the manual time has reached the sleeper's deadline,
so a scheduler loop can be driven through days of schedule without waiting.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Aware UTC time and a way to wait for it to pass."""

    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The machine's clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))


def _utc(instant: datetime) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"{instant!r} has no time zone: a clock holds aware datetimes")
    return instant.astimezone(UTC)


@dataclass(eq=False)
class _Sleeper:
    deadline: datetime
    woken: asyncio.Future[None]


def _deadline(sleeper: _Sleeper) -> datetime:
    return sleeper.deadline


class ManualClock:
    """A clock that moves only when told; sleepers wake when it passes their deadline."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = _utc(start or datetime(2026, 1, 1, tzinfo=UTC))
        self._sleepers: list[_Sleeper] = []
        self._watchers: list[asyncio.Future[None]] = []

    def now(self) -> datetime:
        return self._now

    @property
    def sleeping(self) -> int:
        """How many `sleep` calls are waiting for the clock to move."""
        return len(self._sleepers)

    async def sleep(self, seconds: float) -> None:
        """Return once the clock has been moved `seconds` on (at once if not positive)."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        sleeper = _Sleeper(
            self._now + timedelta(seconds=seconds), asyncio.get_running_loop().create_future()
        )
        self._sleepers.append(sleeper)
        self._notify_watchers()
        try:
            await sleeper.woken
        finally:
            if sleeper in self._sleepers:
                self._sleepers.remove(sleeper)

    def advance(self, by: timedelta | float) -> datetime:
        """Move the clock forward by `by` (seconds or a timedelta) and wake who is due."""
        step = by if isinstance(by, timedelta) else timedelta(seconds=by)
        if step < timedelta(0):
            raise ValueError(f"advance({by!r}) would move the clock back; use set() for that")
        return self.set(self._now + step)

    def set(self, instant: datetime) -> datetime:
        """Jump to `instant` (back too, as a wall clock can) and wake who is due."""
        self._now = _utc(instant)
        due = sorted((s for s in self._sleepers if s.deadline <= self._now), key=_deadline)
        for sleeper in due:
            self._sleepers.remove(sleeper)
            if not sleeper.woken.done():
                sleeper.woken.set_result(None)
        return self._now

    async def wait_for_sleepers(self, count: int = 1) -> None:
        """Wait until at least `count` tasks are sleeping: then advancing wakes them."""
        while len(self._sleepers) < count:
            watcher = asyncio.get_running_loop().create_future()
            self._watchers.append(watcher)
            try:
                await watcher
            finally:
                if watcher in self._watchers:
                    self._watchers.remove(watcher)

    def _notify_watchers(self) -> None:
        for watcher in self._watchers:
            if not watcher.done():
                watcher.set_result(None)
        self._watchers.clear()
