"""Running a deployment's script as an isolated, supervised process, with its logs.

What a script gets (DESIGN.md, "What a script sees"):

- **Its environment and nothing else.** Exactly `ProcessSpec.env` on top of a minimal base
  (`BASE_PATH`, `LANG=C.UTF-8`, `HOME` and `TMPDIR` set to the working directory, and
  `PYTHONUNBUFFERED=1` so that Python scripts' lines reach the log as they are printed);
  the platform's own environment (master key, database URL, secrets) is never inherited.
- **Its own user.** When the platform runs as root, the script runs as the deployment's
  uid (`run_uid`) and gid, with no supplementary groups and umask 077, so it can read
  neither the instance's files nor another deployment's (`prepare_private_dir`).
- **Its own process group and session**, so that a timeout or a cancellation reaches the
  processes it started too; no descriptor of the platform's but stdin (`/dev/null`),
  stdout and stderr.
- **Limits:** address space (`memory_mb`, RLIMIT_AS), no core dumps, and when it runs as
  a dedicated user at most `PROCESS_LIMIT` processes and threads for that user.

Supervision: at `timeout_seconds` the group gets SIGTERM, and SIGKILL if the script is still
there `kill_grace_seconds` later. A `cancel` event set by the caller ends the run the same
way and reports it as cancelled; cancelling the awaiting task kills the group at once and
re-raises. When the script itself exits, whatever it left running in its group is killed:
a run ends when its script does.

Logs: stdout and stderr are read concurrently and cut into lines, each stamped with the
time its first byte arrived (`LogLine`). Lines longer than `MAX_LINE_BYTES` are cut into
pieces, bytes that are not UTF-8 become U+FFFD, a last line without a newline is kept.
Every stored line is passed to `on_line` as it arrives (so callers can stream them), up
to `log_limit_bytes` of output (None: no limit, for a long-lived server whose log is
pruned where it is stored); past that the pipes are still drained, so the script never
blocks, but nothing more is stored, and one note line says how much was kept and dropped.
The result keeps the last `KEPT_LINES` lines, for the error message of a process that
failed: memory stays bounded however long a process lives.

`supervise` is the part shared with the zygote (`zygote.py`), which forks scripts instead
of starting them: one implementation of log capture, timeouts and cancellation for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

from servicebay.runtime.zygote_main import UMASK, apply_limits

Stream = Literal["stdout", "stderr"]
STREAMS: tuple[Stream, Stream] = ("stdout", "stderr")
OnLine = Callable[["LogLine"], Awaitable[None]]

BASE_PATH = "/usr/local/bin:/usr/bin:/bin"
"""`PATH` unless the spec's environment sets its own (a venv's `bin` first, typically)."""

RUN_UID_BASE = 200_000
"""Deployment n runs as uid and gid RUN_UID_BASE + n: above the usual human and system
ids, below systemd's container range (524288), and needing no /etc/passwd entry."""

RUN_UID_LAST = 524_287

PROCESS_LIMIT = 1024
"""RLIMIT_NPROC for a deployment's user: all its runs' processes and threads together."""

MAX_LINE_BYTES = 64 * 1024
"""A longer line is stored as several, so that one runaway line cannot hold the reader."""

READ_BYTES = 64 * 1024

KEPT_LINES = 1000
"""Lines a process's result keeps in memory (its end), whatever its log limit."""
TRUNCATION_NOTE = "[servicebay] log truncated: {kept} bytes kept, {dropped} bytes dropped"


class ProcessError(Exception):
    """The script could not be started; the message says why and what to check."""


@dataclass(frozen=True)
class LogLine:
    """One line of a script's output, stamped (UTC) when its first byte arrived."""

    at: datetime
    stream: Stream
    text: str

    def __str__(self) -> str:
        """The stored form: `2026-11-29T09:00:00.123Z stdout text`."""
        stamp = self.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{stamp}.{self.at.microsecond // 1000:03d}Z {self.stream} {self.text}"


@dataclass(frozen=True)
class ProcessSpec:
    """How to run one script: command, place, environment, identity and limits."""

    argv: Sequence[str]
    cwd: Path
    env: Mapping[str, str]
    uid: int | None = None
    """Run as this user (needs root); None runs as the platform's own user."""
    gid: int | None = None
    """Defaults to `uid`."""
    timeout_seconds: float | None = 600.0
    memory_mb: int | None = 1024
    log_limit_bytes: int | None = 10 * 1024 * 1024
    """None: every line is passed on, however many (a server, whose log is pruned)."""
    kill_grace_seconds: float = 5.0

    def __post_init__(self) -> None:
        if not self.argv:
            raise ValueError("argv is empty: give the program to run, e.g. [python, script]")
        for name in ("timeout_seconds", "memory_mb"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None (no limit), not {value}")
        if (self.log_limit_bytes or 0) < 0 or self.kill_grace_seconds < 0:
            raise ValueError("log_limit_bytes and kill_grace_seconds cannot be negative")
        if self.gid is not None and self.uid is None:
            raise ValueError("a gid without a uid: give the deployment's uid too")

    @property
    def run_gid(self) -> int | None:
        return self.uid if self.gid is None else self.gid

    @property
    def memory_bytes(self) -> int | None:
        return None if self.memory_mb is None else self.memory_mb * 1024 * 1024

    def environment(self) -> dict[str, str]:
        """The script's whole environment: the documented base, then `env` over it."""
        home = str(self.cwd)
        base = {
            "PATH": BASE_PATH,
            "LANG": "C.UTF-8",
            "HOME": home,
            "TMPDIR": home,
            "PYTHONUNBUFFERED": "1",
        }
        return {**base, **self.env}


@dataclass(frozen=True)
class ProcessResult:
    """How a run ended. `exit_code` is None when a signal ended it (`signal` says which)."""

    exit_code: int | None
    signal: int | None
    timed_out: bool
    cancelled: bool
    duration_seconds: float
    log_bytes: int
    """Bytes of output stored (at most the spec's `log_limit_bytes`)."""
    truncated: bool
    lines: tuple[LogLine, ...] = field(repr=False)
    """The last `KEPT_LINES` lines (all of them reached `on_line`)."""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.cancelled

    def describe(self) -> str:
        """The ending in words, for run records and alerts."""
        if self.signal is not None:
            ending = f"killed by {signal.Signals(self.signal).name}"
        else:
            ending = f"exited with code {self.exit_code}"
        if self.timed_out:
            return f"timed out after {self.duration_seconds:.1f} s ({ending})"
        if self.cancelled:
            return f"cancelled ({ending})"
        return ending


def run_uid(deployment_id: int) -> int | None:
    """The uid (and gid) deployment `deployment_id` runs as, or None when not root."""
    if deployment_id < 0 or RUN_UID_BASE + deployment_id > RUN_UID_LAST:
        raise ValueError(
            f"deployment id {deployment_id} is outside 0..{RUN_UID_LAST - RUN_UID_BASE}, "
            f"the ids that map to run users {RUN_UID_BASE}..{RUN_UID_LAST}"
        )
    if os.geteuid() != 0:
        return None
    return RUN_UID_BASE + deployment_id


def prepare_private_dir(path: Path, uid: int | None) -> Path:
    """Make `path` (and what is in it) private to `uid`: mode 0700, owner uid:uid.

    Missing parents are created as usual (they must let `uid` pass: mode 0711 or 0755).
    Contents are handed over too, e.g. a bundle extracted by the platform. Nothing here
    follows a symbolic link, neither `path` itself nor anything in it, so a link planted by
    a script cannot redirect the change of mode or owner to a file elsewhere. With `uid`
    None (not root) only the mode is set.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        folder = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as error:
        raise ProcessError(
            f"cannot make {path} a private folder: {error.strerror} (it must be a folder, "
            "not a symbolic link; remove it and it is created afresh)"
        ) from None
    try:
        os.fchmod(folder, 0o700)
        if uid is not None:
            for _, dirs, files, top in os.fwalk(".", dir_fd=folder, follow_symlinks=False):
                os.chown(top, uid, uid)
                for name in (*dirs, *files):
                    os.chown(name, uid, uid, dir_fd=top, follow_symlinks=False)
    finally:
        os.close(folder)
    return path


class Runner(Protocol):
    """What starts a run's process and supervises it to its end: `run_process`, or a warm
    zygote's `run` (`runtime.warm`)."""

    async def __call__(
        self,
        spec: ProcessSpec,
        on_line: OnLine | None = None,
        *,
        cancel: asyncio.Event | None = None,
    ) -> ProcessResult: ...


async def run_process(
    spec: ProcessSpec, on_line: OnLine | None = None, *, cancel: asyncio.Event | None = None
) -> ProcessResult:
    """Run `spec` to its end and report how it ended; see the module's docstring."""
    stdout, stderr = os.pipe2(os.O_CLOEXEC), os.pipe2(os.O_CLOEXEC)
    started = time.monotonic()
    try:
        process = spawn(spec, stdout=stdout[1], stderr=stderr[1])
    except BaseException:
        _close(stdout[0], stderr[0])
        raise
    finally:
        _close(stdout[1], stderr[1])
    exited = asyncio.ensure_future(wait_for_exit(process))
    return await supervise(
        process.pid, exited, stdout[0], stderr[0], spec, on_line, cancel, started=started
    )


def spawn(
    spec: ProcessSpec, *, stdout: int, stderr: int, pass_fds: Sequence[int] = ()
) -> subprocess.Popen[bytes]:
    """Start `spec.argv` in a new session, as `spec`'s user, with its environment and limits."""
    user = group = process_limit = None
    extra_groups: list[int] | None = None
    if spec.uid is not None and spec.uid != os.geteuid():
        if os.geteuid() != 0:
            raise ProcessError(
                f"cannot run as uid {spec.uid}: that needs root, and the platform runs as "
                f"uid {os.geteuid()}; leave uid empty (run_uid gives None when not root)"
            )
        user, group, extra_groups = spec.uid, spec.run_gid, []
        process_limit = PROCESS_LIMIT
    try:
        return subprocess.Popen(  # noqa: S603 - argv comes from the platform, not a shell
            list(spec.argv),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            cwd=spec.cwd,
            env=spec.environment(),
            start_new_session=True,
            umask=UMASK,
            close_fds=True,
            pass_fds=tuple(pass_fds),
            user=user,
            group=group,
            extra_groups=extra_groups,
            preexec_fn=partial(apply_limits, spec.memory_bytes, process_limit),
        )
    except OSError as error:
        who = "" if spec.uid is None else f" as uid {spec.uid}"
        raise ProcessError(
            f"cannot start {spec.argv[0]}{who} in {spec.cwd}: {error.strerror or error}; "
            "check that the program and folder exist and that this user may use them"
        ) from None


async def wait_for_exit(process: subprocess.Popen[bytes]) -> int:
    """Wait for our child without a thread (a pidfd) and reap it; the Popen returncode."""
    loop = asyncio.get_running_loop()
    pidfd = os.pidfd_open(process.pid)
    try:
        gone: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not gone.done():
                gone.set_result(None)

        loop.add_reader(pidfd, readable)
        try:
            await gone
        finally:
            loop.remove_reader(pidfd)
    finally:
        os.close(pidfd)
    return process.wait()


async def supervise(
    group: int,
    exited: asyncio.Future[int],
    stdout: int,
    stderr: int,
    spec: ProcessSpec,
    on_line: OnLine | None,
    cancel: asyncio.Event | None,
    *,
    started: float,
) -> ProcessResult:
    """Capture the logs of the process group `group` and end it as `spec` says.

    `exited` resolves to the leader's returncode (negative: killed by that signal);
    `stdout` and `stderr` are read ends of its pipes, closed here.
    """
    capture = LogCapture(spec.log_limit_bytes, on_line)
    pipes = [os.fdopen(stdout, "rb", buffering=0), os.fdopen(stderr, "rb", buffering=0)]
    readers: list[_PipeReader] = []
    drains: list[asyncio.Task[None]] = []
    try:
        for name, pipe in zip(STREAMS, pipes, strict=True):
            readers.append(_PipeReader(pipe))
            drains.append(asyncio.create_task(capture.drain(name, readers[-1].reader)))
        ending = await _wait_for_ending(exited, drains, spec.timeout_seconds, cancel)
        if ending != "exited":
            reason = "cancelled"
            if ending == "timeout":
                reason = f"timed out after {spec.timeout_seconds:g} s"
            await _stop_group(group, exited, spec.kill_grace_seconds, capture, reason)
        returncode = await exited
        duration = time.monotonic() - started
        signal_group(group, signal.SIGKILL)  # whatever the script left running
        done, late = await asyncio.wait(drains, timeout=spec.kill_grace_seconds)
        if late:  # a process that left the group still holds a pipe: stop listening
            for drain in late:
                drain.cancel()
            await asyncio.wait(late)
        for drain in done:
            drain.result()
        await capture.finish()
    except BaseException:
        signal_group(group, signal.SIGKILL)
        # The pipes close when the last process of the group is gone: wait for that (and
        # the exit), within reason, so that the caller sees no survivor.
        ending_tasks: list[asyncio.Future[Any]] = [exited, *drains]
        await asyncio.wait(ending_tasks, timeout=max(spec.kill_grace_seconds, 1.0))
        for task in ending_tasks:
            task.cancel()
        raise
    finally:
        for reader in readers:
            reader.close()
        for pipe in pipes[len(readers) :]:
            pipe.close()
    return ProcessResult(
        exit_code=returncode if returncode >= 0 else None,
        signal=-returncode if returncode < 0 else None,
        timed_out=ending == "timeout",
        cancelled=ending == "cancelled",
        duration_seconds=duration,
        log_bytes=capture.kept,
        truncated=capture.dropped > 0,
        lines=tuple(capture.lines),
    )


async def _wait_for_ending(
    exited: asyncio.Future[int],
    drains: list[asyncio.Task[None]],
    limit_seconds: float | None,
    cancel: asyncio.Event | None,
) -> Literal["exited", "timeout", "cancelled"]:
    """Wait for the exit, the deadline or the cancel event; a failing log reader raises."""
    cancelled = asyncio.ensure_future(cancel.wait()) if cancel is not None else None
    loop = asyncio.get_running_loop()
    deadline = None if limit_seconds is None else loop.time() + limit_seconds
    try:
        while True:
            watched: set[asyncio.Future[Any]] = {exited, *(d for d in drains if not d.done())}
            if cancelled is not None:
                watched.add(cancelled)
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return "timeout"
            done, _ = await asyncio.wait(
                watched, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            for drain in drains:
                if drain in done:
                    drain.result()  # on_line failed: the caller must hear of it
            if exited in done:
                return "exited"
            if cancelled is not None and cancelled in done:
                return "cancelled"
    finally:
        if cancelled is not None:
            cancelled.cancel()


async def _stop_group(
    group: int, exited: asyncio.Future[int], grace: float, capture: LogCapture, reason: str
) -> None:
    """SIGTERM, then SIGKILL if the leader outlives the grace period; notes go to the log."""
    await capture.note(f"[servicebay] {reason}: sending SIGTERM to the script's processes")
    signal_group(group, signal.SIGTERM)
    await asyncio.wait([exited], timeout=grace)
    if not exited.done():
        await capture.note(f"[servicebay] still running {grace:g} s after SIGTERM: sending SIGKILL")
        signal_group(group, signal.SIGKILL)


def signal_group(group: int, sig: signal.Signals) -> None:
    """Signal every process of `group`; a group that is already gone is no error."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, sig)


class LogCapture:
    """Timestamped lines from a run's streams, stored up to a byte limit (None: none)."""

    def __init__(self, limit_bytes: int | None, on_line: OnLine | None) -> None:
        self.limit_bytes = limit_bytes
        self.on_line = on_line
        self.lines: deque[LogLine] = deque(maxlen=KEPT_LINES)
        self.kept = 0
        self.dropped = 0
        self._lock = asyncio.Lock()
        """One line at a time reaches `on_line`, in the order lines are stored."""

    async def drain(self, stream: Stream, reader: asyncio.StreamReader) -> None:
        """Read `reader` to its end, storing its lines."""
        splitter = LineSplitter()
        while chunk := await reader.read(READ_BYTES):
            for at, raw in splitter.feed(chunk, datetime.now(UTC)):
                await self._store(stream, at, raw)
        for at, raw in splitter.rest():
            await self._store(stream, at, raw)

    async def note(self, text: str) -> None:
        """A line of the platform's own, stored whatever the limit."""
        async with self._lock:
            await self._emit(LogLine(datetime.now(UTC), "stderr", text))

    async def finish(self) -> None:
        """Say how much was dropped, once, if anything was."""
        if self.dropped:
            await self.note(TRUNCATION_NOTE.format(kept=self.kept, dropped=self.dropped))

    async def _store(self, stream: Stream, at: datetime, raw: bytes) -> None:
        async with self._lock:
            limit = self.limit_bytes
            if self.dropped or (limit is not None and self.kept + len(raw) > limit):
                self.dropped += len(raw)
                return
            self.kept += len(raw)
            text = raw.removesuffix(b"\n").removesuffix(b"\r").decode("utf-8", "replace")
            await self._emit(LogLine(at, stream, text))

    async def _emit(self, line: LogLine) -> None:
        self.lines.append(line)
        if self.on_line is not None:
            await self.on_line(line)


class LineSplitter:
    """Cuts a byte stream into lines (newline kept), each with its first byte's time."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._since = datetime.now(UTC)

    def feed(self, chunk: bytes, now: datetime) -> list[tuple[datetime, bytes]]:
        if not self._buffer:
            self._since = now
        self._buffer += chunk
        lines = []
        while True:
            newline = self._buffer.find(b"\n", 0, MAX_LINE_BYTES + 1)
            if newline >= 0:
                cut = newline + 1
            elif len(self._buffer) > MAX_LINE_BYTES:
                cut = _character_boundary(self._buffer, MAX_LINE_BYTES)
            else:
                break
            lines.append((self._since, bytes(self._buffer[:cut])))
            del self._buffer[:cut]
            self._since = now
        return lines

    def rest(self) -> list[tuple[datetime, bytes]]:
        """The last line, if the stream did not end with a newline."""
        rest = [(self._since, bytes(self._buffer))] if self._buffer else []
        self._buffer.clear()
        return rest


def _character_boundary(data: bytearray, limit: int) -> int:
    """`limit`, moved back so as not to split a UTF-8 character (at most 3 bytes)."""
    cut = limit
    while cut > limit - 3 and data[cut] & 0xC0 == 0x80:
        cut -= 1
    return cut


class _PipeReader:
    """A pipe's bytes fed into a StreamReader by `add_reader` and `os.read`.

    Not `loop.connect_read_pipe`: under uvloop (which uvicorn uses when installed) its
    transport closes the descriptor twice (MagicStack/uvloop#763), and the second close
    can hit an unrelated file or socket opened in between with the same number.
    """

    def __init__(self, pipe: BinaryIO) -> None:
        self.pipe = pipe
        self.fd = pipe.fileno()
        self.reader = asyncio.StreamReader(limit=READ_BYTES)
        self.loop = asyncio.get_running_loop()
        os.set_blocking(self.fd, False)
        self.loop.add_reader(self.fd, self._readable)
        self._watching = True

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, READ_BYTES)
        except BlockingIOError:
            return
        except OSError as error:
            self._unwatch()
            self.reader.set_exception(error)
            return
        if data:
            self.reader.feed_data(data)
        else:
            self._unwatch()
            self.reader.feed_eof()

    def _unwatch(self) -> None:
        if self._watching:
            self._watching = False
            self.loop.remove_reader(self.fd)

    def close(self) -> None:
        self._unwatch()
        self.pipe.close()


def _close(*fds: int) -> None:
    for fd in fds:
        os.close(fd)
