"""A warm interpreter per deployment environment, forking a fresh process for each run.

Starting Python costs tens of milliseconds before a script's first line; a webhook should
answer in a few. So for a deployment the platform keeps a zygote: its environment's
interpreter, started once as the deployment's user in its private folder with its clean
environment, which imports the heavy standard library modules and the SDK and then waits.
A run asks the zygote to fork: the child becomes the script (`zygote_main.py` says how),
with everything `run_process` promises: its own process group, exactly its environment,
umask 077, its memory limit, stdout and stderr to pipes of the platform's (passed over the
socket with SCM_RIGHTS), and `/dev/null` as stdin. The zygote answers with the child's pid
and later its wait status; `process.supervise` does the rest, so logs, timeouts and
cancellation behave exactly as with `run_process`.

What differs from a fresh interpreter: `sys.path` is the zygote's (set by the environment it
was started with, e.g. `PYTHONPATH` for the staged SDK), and preloaded modules are already
imported (a deployment's own `json.py` does not shadow the standard one). Each run is a
new fork, so nothing a script changes survives into the next run.

If the zygote dies, runs in flight fail with `ZygoteError` (their processes are killed),
and the next run starts a new zygote.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from servicebay.runtime import zygote_main
from servicebay.runtime.process import (
    LogLine,
    OnLine,
    ProcessResult,
    ProcessSpec,
    signal_group,
    spawn,
    supervise,
    wait_for_exit,
)

log = logging.getLogger(__name__)

DEFAULT_PRELOAD: tuple[str, ...] = (
    "base64",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "email.message",
    "hashlib",
    "http.client",
    "json",
    "logging",
    "pathlib",
    "re",
    "ssl",
    "tempfile",
    "typing",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "zoneinfo",
    "servicebay",
    "servicebay.sdk",
    "servicebay.webhook",
    "internal_sdk",
)
"""What the zygote imports before its first fork: what scripts commonly import, and the SDK
(found on the staged `PYTHONPATH`; a module that is missing is reported, not fatal)."""

START_TIMEOUT_SECONDS = 60.0
ZYGOTE_LOG_BYTES = 1024 * 1024
"""The zygote's own output (a traceback, should it crash) goes to the platform's log."""

_SOURCE = Path(zygote_main.__file__).read_bytes()
_BOOTSTRAP = (
    "import os, sys; "
    "exec(compile(os.read(int(sys.argv[1]), 1 << 20), 'servicebay/runtime/zygote_main.py', 'exec'))"
)
"""The zygote's command line: it reads `zygote_main.py` as the first packet on its socket.

The deployment's user may not be allowed to read the platform's installed files, and
the source on the command line would fill every `ps` listing."""


class ZygoteError(Exception):
    """The zygote could not start, or went away during a run."""


@dataclass
class _Run:
    pid: asyncio.Future[int]
    exited: asyncio.Future[int]


@dataclass
class _Process:
    """One started zygote process: its socket, its supervision, its reply reader."""

    pid: int
    control: socket.socket
    supervisor: asyncio.Task[ProcessResult]
    stop: asyncio.Event
    runs: dict[int, _Run] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None
    ready: dict[str, Any] = field(default_factory=dict)


class Zygote:
    """The warm interpreter of one deployment environment; see the module docstring.

    `python` is the environment's interpreter; `cwd`, `env`, `uid` and `gid` are the
    deployment's folder, clean environment and user, as for its runs. Every `run` must use
    that interpreter and user.
    """

    def __init__(
        self,
        python: str,
        cwd: Path,
        env: Mapping[str, str],
        uid: int | None = None,
        gid: int | None = None,
        preload: Sequence[str] = DEFAULT_PRELOAD,
    ) -> None:
        self.spec = ProcessSpec(
            [python, "-c", _BOOTSTRAP],
            cwd,
            env,
            uid=uid,
            gid=gid,
            timeout_seconds=None,
            memory_mb=None,  # each child sets its own run's limit; it could not raise it
            log_limit_bytes=ZYGOTE_LOG_BYTES,
        )
        self.preload = tuple(preload)
        self._process: _Process | None = None
        self._starting = asyncio.Lock()
        self._ids = itertools.count(1)

    @property
    def pid(self) -> int | None:
        """The running zygote's pid, None when none runs."""
        process = self._process
        return process.pid if process is not None and not process.supervisor.done() else None

    @property
    def preloaded(self) -> list[str]:
        """The modules the running zygote imported."""
        return list(self._process.ready["preloaded"]) if self._process else []

    @property
    def failed(self) -> dict[str, str]:
        """The modules it could not import, with why."""
        return dict(self._process.ready["failed"]) if self._process else {}

    async def __aenter__(self) -> Zygote:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the zygote unless one runs, and wait until it has preloaded."""
        async with self._starting:
            if self._alive():
                return
            if self._process is not None:
                ended = await self._process.supervisor
                self._process.control.close()
                log.warning("zygote %s %s; starting a new one", self._process.pid, ended.describe())
            self._process = await self._launch()

    async def stop(self) -> None:
        """End the zygote: it exits when its socket closes (TERM and KILL if it must)."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.reader is not None:
            process.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await process.reader
        _fail(process, "the zygote was stopped during the run")
        await self._end(process)

    async def _end(self, process: _Process) -> ProcessResult:
        """Close its socket, so that it exits; after the grace period, make it."""
        process.control.close()
        await asyncio.wait([process.supervisor], timeout=self.spec.kill_grace_seconds)
        process.stop.set()
        return await process.supervisor

    async def wait(self) -> ProcessResult:
        """Wait for the running zygote to end, and say how it ended."""
        if self._process is None:
            raise ZygoteError("no zygote has been started: call start() first")
        return await asyncio.shield(self._process.supervisor)

    async def run(
        self,
        spec: ProcessSpec,
        on_line: OnLine | None = None,
        *,
        cancel: asyncio.Event | None = None,
    ) -> ProcessResult:
        """Run `spec` (`[python, script, *args]`) in a fork; as `process.run_process` does."""
        self._check(spec)
        stdout, stderr = os.pipe2(os.O_CLOEXEC), os.pipe2(os.O_CLOEXEC)
        started = time.monotonic()
        run_id = next(self._ids)
        request = {
            "id": run_id,
            "argv": list(spec.argv[1:]),
            "cwd": str(spec.cwd),
            "env": spec.environment(),
            "memory_bytes": spec.memory_bytes,
        }
        try:
            try:
                process, run = await self._submit(request, [stdout[1], stderr[1]])
            finally:
                os.close(stdout[1])
                os.close(stderr[1])
        except BaseException:
            os.close(stdout[0])
            os.close(stderr[0])
            raise
        # From here on a pid that arrives for a run no longer listed is killed at once.
        try:
            try:
                pid = await run.pid
            except BaseException:
                os.close(stdout[0])
                os.close(stderr[0])
                raise
            return await supervise(
                pid, run.exited, stdout[0], stderr[0], spec, on_line, cancel, started=started
            )
        finally:
            process.runs.pop(run_id, None)

    def _check(self, spec: ProcessSpec) -> None:
        python = self.spec.argv[0]
        if spec.argv[0] != python or len(spec.argv) < 2 or spec.argv[1].startswith("-"):
            raise ValueError(
                f"a zygote runs scripts as [{python!r}, script, *args], not {list(spec.argv)!r}"
            )
        if (spec.uid, spec.run_gid) != (self.spec.uid, self.spec.run_gid):
            raise ValueError(
                f"this zygote runs as uid {self.spec.uid} gid {self.spec.run_gid}; "
                f"the spec asks for uid {spec.uid} gid {spec.run_gid}"
            )

    async def _submit(self, request: dict[str, Any], fds: list[int]) -> tuple[_Process, _Run]:
        """Hand a run to the zygote, starting one if none runs (or the last one has died)."""
        data = json.dumps(request).encode()
        if len(data) > zygote_main.PACKET_BYTES:
            raise ZygoteError(
                f"the run's arguments and environment take {len(data)} bytes, more than the "
                f"{zygote_main.PACKET_BYTES} a zygote accepts: pass large data in a file"
            )
        process = await self._running()
        try:
            return process, await _send(process, request["id"], data, fds)
        except (BrokenPipeError, ConnectionResetError):
            # It died before it could read the request, so nothing ran: once more, on a
            # new zygote once this one's end has been seen.
            await asyncio.wait([process.supervisor])
        process = await self._running()
        try:
            return process, await _send(process, request["id"], data, fds)
        except (BrokenPipeError, ConnectionResetError) as error:
            raise ZygoteError(f"the zygote does not take requests: {error}") from None

    async def _running(self) -> _Process:
        await self.start()
        assert self._process is not None
        return self._process

    def _alive(self) -> bool:
        return self._process is not None and not self._process.supervisor.done()

    async def _launch(self) -> _Process:
        platform_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        platform_end.sendall(_SOURCE)  # waits in the socket for the zygote to read it
        argv = [*self.spec.argv, str(zygote_end.fileno()), json.dumps(self.preload)]
        spec = replace(self.spec, argv=argv)
        stdout, stderr = os.pipe2(os.O_CLOEXEC), os.pipe2(os.O_CLOEXEC)
        started = time.monotonic()
        try:
            popen = spawn(spec, stdout=stdout[1], stderr=stderr[1], pass_fds=[zygote_end.fileno()])
        except BaseException:
            platform_end.close()
            os.close(stdout[0])
            os.close(stderr[0])
            raise
        finally:
            zygote_end.close()
            os.close(stdout[1])
            os.close(stderr[1])
        platform_end.setblocking(False)
        stop = asyncio.Event()
        exited = asyncio.ensure_future(wait_for_exit(popen))
        supervisor = asyncio.create_task(
            supervise(
                popen.pid, exited, stdout[0], stderr[0], spec, _log_line, stop, started=started
            )
        )
        process = _Process(popen.pid, platform_end, supervisor, stop)
        loop = asyncio.get_running_loop()
        hello = asyncio.ensure_future(loop.sock_recv(platform_end, zygote_main.PACKET_BYTES))
        try:
            done, _ = await asyncio.wait(
                [hello, supervisor],
                timeout=START_TIMEOUT_SECONDS,
                return_when=asyncio.FIRST_COMPLETED,
            )
        except BaseException:
            hello.cancel()
            platform_end.close()
            stop.set()  # its supervision ends it
            raise
        if hello in done and hello.exception() is None and hello.result():
            process.ready = json.loads(hello.result())["ready"]
            if process.ready["failed"]:
                log.info("zygote %s could not preload %s", popen.pid, process.ready["failed"])
            process.reader = asyncio.create_task(_read_replies(process))
            return process
        hello.cancel()
        ended = await self._end(process)
        output = "\n".join(line.text for line in ended.lines[-20:])
        why = ended.describe() if done else f"was not ready within {START_TIMEOUT_SECONDS:g} s"
        raise ZygoteError(f"the zygote ({spec.argv[0]} in {spec.cwd}) {why}:\n{output}")


async def _read_replies(process: _Process) -> None:
    """Route the zygote's answers to their runs until it goes away."""
    loop = asyncio.get_running_loop()
    try:
        while data := await loop.sock_recv(process.control, zygote_main.PACKET_BYTES):
            reply = json.loads(data)
            run = process.runs.get(reply["id"])
            if "pid" in reply:
                if run is None or run.pid.done():  # its caller has been cancelled meanwhile
                    signal_group(reply["pid"], signal.SIGKILL)
                else:
                    run.pid.set_result(reply["pid"])
            elif run is None:
                continue
            elif "error" in reply:
                run.pid.set_exception(ZygoteError(reply["error"]))
            else:
                run.exited.set_result(os.waitstatus_to_exitcode(reply["status"]))
    except OSError as error:
        log.warning("zygote %s: reading its answers failed: %s", process.pid, error)
    _fail(process, f"the zygote (pid {process.pid}) went away during the run")


def _fail(process: _Process, message: str) -> None:
    for run in process.runs.values():
        for future in (run.pid, run.exited):
            if not future.done():
                future.set_exception(ZygoteError(message))
    process.runs.clear()


async def _send(process: _Process, run_id: int, data: bytes, fds: list[int]) -> _Run:
    """Send a request, its run registered first so that no answer finds it missing."""
    loop = asyncio.get_running_loop()
    run = _Run(loop.create_future(), loop.create_future())
    process.runs[run_id] = run
    try:
        await _send_with_fds(process.control, data, fds)
    except BaseException:
        del process.runs[run_id]
        raise
    return run


async def _send_with_fds(control: socket.socket, data: bytes, fds: list[int]) -> None:
    """One packet with descriptors attached, waiting while the socket's buffer is full."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            socket.send_fds(control, [data], fds)
            return
        except BlockingIOError:
            writable: asyncio.Future[None] = loop.create_future()
            loop.add_writer(control, writable.set_result, None)
            try:
                await writable
            finally:
                loop.remove_writer(control)


async def _log_line(line: LogLine) -> None:
    log.warning("zygote: %s", line.text)
