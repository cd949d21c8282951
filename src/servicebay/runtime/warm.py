"""Warm interpreters for a node's runs: one zygote per deployment, started on demand.

A cron job's or a queued webhook's run forks from it like a sync webhook call does, so a
trivial run costs a fork rather than an interpreter's start (`bench/run_throughput.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from servicebay.runtime.process import (
    OnLine,
    ProcessError,
    ProcessResult,
    ProcessSpec,
    Runner,
    run_process,
)
from servicebay.runtime.zygote import Zygote, ZygoteError

log = logging.getLogger(__name__)

ZYGOTE_IDLE_SECONDS = 600.0
"""A warm interpreter no run used for this long is stopped (the next run starts one)."""
REAP_EVERY_SECONDS = 60.0


@dataclass
class _Warm:
    version: int
    zygote: Zygote
    users: int = 0
    retired: bool = False
    used_at: float = 0.0


class Zygotes:
    """A warm interpreter (`runtime.zygote`) per deployment, for the version it last ran.

    Started by the deployment's first run, which forks from it like every later one; a run
    of another version (a deploy, a rollback) starts that version's and retires the old
    one, which stops once its last run has ended. One unused for ZYGOTE_IDLE_SECONDS stops.
    """

    def __init__(self) -> None:
        self._warm: dict[str, _Warm] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap(), name="zygote-reaper")

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        warm, self._warm = list(self._warm.values()), {}
        await asyncio.gather(
            *(entry.zygote.stop() for entry in warm), *self._stopping, return_exceptions=True
        )

    def pid(self, deployment_id: str) -> int | None:
        """The pid of the deployment's running warm interpreter, if one runs."""
        warm = self._warm.get(deployment_id)
        return None if warm is None else warm.zygote.pid

    def runner(self, deployment_id: str, version: int) -> Runner:
        """What runs a script of this version: a fork of its warm interpreter."""

        async def run(
            spec: ProcessSpec, on_line: OnLine | None = None, *, cancel: asyncio.Event | None = None
        ) -> ProcessResult:
            warm = self._take(deployment_id, version, spec)
            try:
                try:
                    await warm.zygote.start()
                except ZygoteError as error:
                    log.warning("no warm interpreter; a new one runs the script: %s", error)
                    return await run_process(spec, on_line, cancel=cancel)
                try:
                    return await warm.zygote.run(spec, on_line, cancel=cancel)
                except ZygoteError as error:
                    raise ProcessError(str(error)) from None
            finally:
                self._give_back(warm)

        return run

    def _take(self, deployment_id: str, version: int, spec: ProcessSpec) -> _Warm:
        warm = self._warm.get(deployment_id)
        if warm is None or warm.version != version:
            if warm is not None:
                self._retire(warm)
            warm = _Warm(version, zygote_for(spec))
            self._warm[deployment_id] = warm
        warm.users += 1
        return warm

    def _give_back(self, warm: _Warm) -> None:
        warm.users -= 1
        warm.used_at = time.monotonic()
        if warm.retired and warm.users == 0:
            self._stop_later(warm)

    def _retire(self, warm: _Warm) -> None:
        warm.retired = True
        if warm.users == 0:
            self._stop_later(warm)

    def _stop_later(self, warm: _Warm) -> None:
        task = asyncio.create_task(warm.zygote.stop(), name="zygote-stop")
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(REAP_EVERY_SECONDS)
            idle_since = time.monotonic() - ZYGOTE_IDLE_SECONDS
            for deployment_id, warm in list(self._warm.items()):
                if warm.users == 0 and warm.used_at < idle_since:
                    del self._warm[deployment_id]
                    self._retire(warm)


def zygote_for(spec: ProcessSpec) -> Zygote:
    """The warm interpreter for runs like `spec`: same interpreter and user, and of the
    environment what shapes an interpreter as it starts (its `PYTHONPATH` is where the SDK
    it preloads comes from) and nothing of one run (no key, no files)."""
    shaping = {
        name: value
        for name, value in spec.env.items()
        if name in ("PATH", "LANG") or name.startswith(("PYTHON", "LC_"))
    }
    environment = Path(spec.argv[0]).parent.parent  # <env>/bin/python: the run user may pass
    return Zygote(spec.argv[0], environment, shaping, uid=spec.uid, gid=spec.gid)
