"""Virtual environments for deployments: one per distinct requirements, built once.

An environment is named by the digest of its requirements (`requirements_digest`: the
normalised lines of `requirements.txt` plus the interpreter's version), so a redeploy with
unchanged requirements, or another deployment with the same ones, reuses it at no cost.
An environment counts only once its marker file (`COMPLETE_MARKER`, written last) is
there: a build that died half-way is removed and done again. Builds of one digest never
race: each holds a lock file (`flock`, which also serialises tasks of one process).

A build is `python -m venv` then `pip install -r requirements.txt`, run with
`runtime.process` like a script: its own process group, a timeout, a clean environment
that passes on only pip's own settings (`PIP_*`: `PIP_INDEX_URL`, `PIP_NO_INDEX`,
`PIP_FIND_LINKS`, ...), proxies and CA bundles, never the platform's. Installing a
package can run its code, so when the platform runs as root the build runs as
`BUILD_UID`; the finished environment is then handed to the platform's user and made
read-only for everyone else, so neither a later build nor a script can change it. The
base interpreter is one that user may run (`find_interpreter`): a pyenv Python under
`/root` would not do. The SDK is not installed: the runner puts the staged SDK on
`PYTHONPATH`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from servicebay.runtime.layout import Layout
from servicebay.runtime.process import (
    BASE_PATH,
    RUN_UID_BASE,
    LogLine,
    ProcessError,
    ProcessSpec,
    run_process,
)

BUILD_UID = RUN_UID_BASE - 1
"""The user builds run as when the platform is root: below every deployment's run user."""
BUILD_TIMEOUT_SECONDS = 900.0
"""A whole build (venv and pip) still going after this long is stopped and fails."""
BUILD_MEMORY_MB = 4096
BUILD_LOG_LIMIT_BYTES = 1024 * 1024
"""Per step; the rest of a step's output is dropped with a note."""
COMPLETE_MARKER = ".bay-complete"
LOCK_POLL_SECONDS = 0.1
PASSED_VARIABLES = frozenset(
    {
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
    }
)
"""What a build inherits from the platform's environment, besides every `PIP_*` variable."""
FORCED_PIP_SETTINGS = {"PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
_PROBE = (
    "import ensurepip, json, platform, sys, venv; "
    "print(json.dumps([sys.implementation.name, platform.python_version(), platform.machine()]))"
)

OnLine = Callable[[str], Awaitable[None]]


class BuildFailed(Exception):
    """A build that did not give an environment; the message says why, for the build log."""


class NoInterpreter(Exception):
    """No Python here that the build user may run; the message says what to install."""


@dataclass(frozen=True)
class Interpreter:
    """The Python environments are made from."""

    path: str
    tag: str
    """`cpython-3.11.7-x86_64`: part of every requirements digest."""


def find_interpreter(
    uid: int | None, candidates: Sequence[str] | None = None, *, cwd: Path = Path("/")
) -> Interpreter:
    """The first of `candidates` that `uid` may run and that has `venv` and `ensurepip`.

    The default candidates are this process's own Python (resolved, so that the venvs do
    not hang off the platform's own venv), then the system's `/usr/bin/python3`.
    """
    tried = list(
        dict.fromkeys(candidates or [os.path.realpath(sys.executable), "/usr/bin/python3"])
    )
    reasons = []
    for candidate in tried:
        try:
            probe = subprocess.run(  # noqa: S603 - a fixed probe of a known interpreter
                [candidate, "-I", "-c", _PROBE],
                cwd=cwd,
                env={"PATH": BASE_PATH, "LANG": "C.UTF-8"},
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
                user=uid,
                group=uid,
                extra_groups=None if uid is None else [],
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            reasons.append(f"{candidate}: {getattr(error, 'strerror', None) or error}")
            continue
        if probe.returncode != 0:
            last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
            reasons.append(f"{candidate}: {last}")
            continue
        name, version, machine = json.loads(probe.stdout)
        return Interpreter(candidate, f"{name}-{version}-{machine or platform.machine()}")
    who = "the platform's user" if uid is None else f"the build user (uid {uid})"
    raise NoInterpreter(
        f"no Python with venv and ensurepip that {who} may run ({'; '.join(reasons)}): "
        "install one outside any private folder, e.g. `apt-get install python3-venv`"
    )


def normalise_requirements(text: str) -> list[str]:
    """The lines that matter to pip, each once, sorted: comments, blank lines, spacing
    and line continuations do not change what gets installed, so they do not change the
    digest either."""
    joined = text.replace("\r\n", "\n").replace("\\\n", "")
    lines = set()
    for line in joined.split("\n"):
        code = line.strip()
        if code.startswith("#"):
            continue
        for marker in (" #", "\t#"):
            code = code.split(marker, 1)[0].strip()
        if code:
            lines.add(" ".join(code.split()))
    return sorted(lines)


def requirements_digest(requirements: str, interpreter: Interpreter) -> str:
    """Names the environment that `requirements` installed into `interpreter` gives."""
    identity = {"python": interpreter.tag, "requirements": normalise_requirements(requirements)}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def default_build_uid() -> int | None:
    """`BUILD_UID` when the platform runs as root; else builds run as the platform's user."""
    return BUILD_UID if os.geteuid() == 0 else None


def environment_python(environment: Path) -> Path:
    """The interpreter a deployment's scripts run with."""
    return environment / "bin" / "python"


class Builder:
    """Builds (or reuses) the environment for a set of requirements under `layout`.

    `environ` is where pip's settings come from (this process's environment by default);
    `uid` is the user builds run as (`default_build_uid()`; None: the platform's own).
    """

    def __init__(
        self,
        layout: Layout,
        *,
        uid: int | None,
        environ: Mapping[str, str] | None = None,
        interpreter: Interpreter | None = None,
        timeout_seconds: float = BUILD_TIMEOUT_SECONDS,
    ) -> None:
        self.layout = layout
        self.environ = dict(os.environ if environ is None else environ)
        self.uid = uid
        self.timeout_seconds = timeout_seconds
        self._interpreter = interpreter
        self._probing = asyncio.Lock()

    @property
    def environments(self) -> Path:
        return self.layout.environment("x").parent

    async def interpreter(self) -> Interpreter:
        """Found once, on first use (NoInterpreter when there is none)."""
        async with self._probing:
            if self._interpreter is None:
                self._interpreter = await asyncio.to_thread(find_interpreter, self.uid)
            return self._interpreter

    async def digest(self, requirements: str) -> str:
        return requirements_digest(requirements, await self.interpreter())

    def is_complete(self, digest: str) -> bool:
        return _marker(self.layout.environment(digest)) is not None

    async def ensure(self, requirements: str, on_line: OnLine) -> Path:
        """The environment for `requirements`, reused when complete, else built now.

        Every line of the build's log goes to `on_line`; BuildFailed says why a build
        failed (its log has the details). Cancelling stops the build's processes and
        removes what it left.
        """
        interpreter = await self.interpreter()
        digest = requirements_digest(requirements, interpreter)
        environment = self.layout.environment(digest)
        self.environments.mkdir(parents=True, exist_ok=True)
        if self.uid is not None:
            _open_path((self.layout.home, self.layout.root, self.environments), self.uid)
        async with self._lock(digest, on_line):
            built = _marker(environment)
            if built is not None:
                await on_line(
                    f"reusing environment {digest[:12]} (same requirements, built "
                    f"{built.get('built_at', 'earlier')})"
                )
                return environment
            await self._build(requirements, interpreter, digest, on_line)
        return environment

    @contextlib.asynccontextmanager
    async def _lock(self, digest: str, on_line: OnLine) -> AsyncIterator[None]:
        path = self.environments / f".{digest}.lock"
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            waiting = False
            while True:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not waiting:
                        waiting = True
                        await on_line(
                            f"waiting for another build of environment {digest[:12]} "
                            "(the same requirements)"
                        )
                    await asyncio.sleep(LOCK_POLL_SECONDS)
            yield
        finally:
            os.close(descriptor)  # releases the lock

    async def _build(
        self, requirements: str, interpreter: Interpreter, digest: str, on_line: OnLine
    ) -> None:
        environment = self.layout.environment(digest)
        scratch = self.environments / f".{digest}.work"
        wanted = normalise_requirements(requirements)
        started = time.monotonic()
        deadline = started + self.timeout_seconds
        await on_line(
            f"creating environment {digest[:12]} with {interpreter.path} ({interpreter.tag}): "
            + (f"{len(wanted)} requirement line(s)" if wanted else "no requirements")
        )
        try:
            for leftover in (environment, scratch):
                await asyncio.to_thread(shutil.rmtree, leftover, ignore_errors=True)
            listed = scratch / "requirements.txt"
            for folder in (environment, scratch):
                folder.mkdir()
            listed.write_text(requirements, encoding="utf-8")
            for path in (environment, scratch, listed):  # the platform's umask is 077
                if self.uid is not None:
                    os.chown(path, self.uid, self.uid)
            venv = [interpreter.path, "-m", "venv", *([] if wanted else ["--without-pip"])]
            await self._step([*venv, str(environment)], scratch, environment, deadline, on_line)
            if wanted:
                pip = [str(environment_python(environment)), "-m", "pip", "install"]
                await self._step(
                    [*pip, "-r", "requirements.txt"], scratch, environment, deadline, on_line
                )
            await asyncio.to_thread(_seal, environment)
            _write_marker(environment, digest, interpreter, wanted)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, environment, ignore_errors=True)
            raise
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, ignore_errors=True)
        await on_line(f"environment {digest[:12]} ready in {time.monotonic() - started:.1f} s")

    async def _step(
        self,
        argv: list[str],
        scratch: Path,
        environment: Path,
        deadline: float,
        on_line: OnLine,
    ) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BuildFailed(f"the build took over its {self.timeout_seconds:g} s limit")
        shown = " ".join(Path(word).name if index == 0 else word for index, word in enumerate(argv))
        await on_line(f"$ {shown}")
        spec = ProcessSpec(
            argv=argv,
            cwd=scratch,
            env=self.variables(environment),
            uid=self.uid,
            timeout_seconds=remaining,
            memory_mb=BUILD_MEMORY_MB,
            log_limit_bytes=BUILD_LOG_LIMIT_BYTES,
        )

        async def forward(line: LogLine) -> None:
            await on_line(line.text)

        try:
            result = await run_process(spec, forward)
        except ProcessError as error:
            raise BuildFailed(str(error)) from None
        if result.timed_out:
            raise BuildFailed(f"the build took over its {self.timeout_seconds:g} s limit")
        if not result.ok:
            raise BuildFailed(f"`{shown}` {result.describe()}")

    def variables(self, environment: Path) -> dict[str, str]:
        """pip's settings and the network's, and nothing else of the platform's: what a
        build step sees (a server's build command too)."""
        passed = {
            name: value
            for name, value in self.environ.items()
            if name.startswith("PIP_") or name in PASSED_VARIABLES
        }
        return {
            **passed,
            **FORCED_PIP_SETTINGS,
            "PATH": f"{environment / 'bin'}:{BASE_PATH}",
            "VIRTUAL_ENV": str(environment),
        }


def _open_path(folders: Sequence[Path], uid: int) -> None:
    """Let other users pass through `folders` (BAY_HOME down to the environments): the
    build's user must reach its folder, and scripts their interpreter. Passing is all
    (o+x, never r): the instance's files stay private by their own modes (the server's
    umask is 077). Folders above BAY_HOME are the administrator's: a closed one is
    reported with its fix."""
    for folder in folders:
        mode = folder.stat().st_mode
        if mode & 0o001 == 0:
            folder.chmod(stat.S_IMODE(mode) | 0o011)
    for above in folders[0].resolve().parents:
        if above.stat().st_mode & 0o001 == 0:
            raise BuildFailed(
                f"the build user (uid {uid}) cannot reach {folders[0]}: {above} is closed to "
                f"other users; let them pass with `chmod o+x {above}`, or move BAY_HOME"
            )


def _marker(environment: Path) -> dict[str, str] | None:
    """What the marker of a complete environment says, or None when it is incomplete."""
    try:
        found = json.loads((environment / COMPLETE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict) or found.get("digest") != environment.name:
        return None
    return found


def _write_marker(
    environment: Path, digest: str, interpreter: Interpreter, requirements: list[str]
) -> None:
    marker = {
        "digest": digest,
        "python": interpreter.tag,
        "interpreter": interpreter.path,
        "requirements": requirements,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    temporary = environment / f"{COMPLETE_MARKER}.tmp"
    temporary.write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    temporary.chmod(0o644)
    os.replace(temporary, environment / COMPLETE_MARKER)


def _seal(environment: Path) -> None:
    """The platform's user owns the environment; everyone may read and run it, nobody
    else may change it. Each folder is taken over before what is in it, so the build's
    user can no longer swap an entry for a link; links themselves are never followed."""
    owner, group = os.geteuid(), os.getegid()
    for _top, directories, files, top_fd in os.fwalk(environment, follow_symlinks=False):
        os.chown(top_fd, owner, group)
        os.chmod(top_fd, 0o755)  # noqa: S103 - scripts of every deployment run from it
        for name in (*directories, *files):  # a link to a folder is listed as a folder
            info = os.stat(name, dir_fd=top_fd, follow_symlinks=False)
            os.chown(name, owner, group, dir_fd=top_fd, follow_symlinks=False)
            if stat.S_ISREG(info.st_mode):
                os.chmod(name, 0o755 if info.st_mode & stat.S_IXUSR else 0o644, dir_fd=top_fd)
