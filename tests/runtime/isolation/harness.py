"""A miniature instance on disk, and helpers to run the scripts of this folder in it.

The layout is the one the platform gives a real instance: the instance folder is passable
(0711) but its master key and database are the platform's alone (0600), and each
deployment has a private folder (0700) owned by its own run user. The scripts next to
this file are copied into deployment 1's folder and run from there, as the platform runs a
deployment's scripts.

Fixtures are exported under names that test modules import, so that the module that
imports them decides the launcher: `run_process` directly, or a zygote.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from servicebay.runtime.process import (
    LogLine,
    ProcessResult,
    ProcessSpec,
    prepare_private_dir,
    run_uid,
)

SCRIPTS = Path(__file__).parent
AS_ROOT = os.geteuid() == 0
NEEDS_ROOT = pytest.mark.skipif(
    not AS_ROOT,
    reason="the platform runs scripts as another user only when it is root; as one user, "
    "a script may read that user's files",
)

Launch = Callable[..., Awaitable[ProcessResult]]
"""`launch(spec, on_line=None, *, cancel=None)`: run_process, or a zygote's run."""


@dataclass(frozen=True)
class Sandbox:
    root: Path
    instance: Path
    deployment: Path
    """Deployment 1's private folder: where the scripts run."""
    other_deployment: Path
    """Deployment 2's private folder, with a private file in it."""
    uid: int | None
    python: str
    """An interpreter that `uid` may execute."""

    def install(self, *names: str) -> None:
        """Copy files of this folder into the deployment's, as a deploy would."""
        for name in names:
            shutil.copy(SCRIPTS / name, self.deployment / name)
        prepare_private_dir(self.deployment, self.uid)

    def spec(self, script: str, *args: str, **overrides: Any) -> ProcessSpec:
        """A spec running `script` (a file next to this module) from the deployment folder."""
        self.install(script)
        settings: dict[str, Any] = {
            "timeout_seconds": 60.0,
            "memory_mb": 512,
            "kill_grace_seconds": 2.0,
            **overrides,
        }
        spec = ProcessSpec(
            [self.python, script, *args], self.deployment, {"BAY_RUN_ID": "7"}, uid=self.uid
        )
        return replace(spec, **settings)


def make_sandbox(root: Path) -> Sandbox:
    root.chmod(0o711)
    instance = root / "instance"
    instance.mkdir(mode=0o711)
    for name in ("master.key", "servicebay.db"):
        (instance / name).write_bytes(secrets.token_bytes(32))
        (instance / name).chmod(0o600)
    deployments = instance / "deployments"
    deployments.mkdir(mode=0o711)
    uid = run_uid(1)
    own = prepare_private_dir(deployments / "1", uid)
    other = deployments / "2"
    other.mkdir()
    (other / "notes.txt").write_text("deployment 2's private notes")
    (other / "notes.txt").chmod(0o600)
    prepare_private_dir(other, run_uid(2))
    return Sandbox(root, instance, own, other, uid, interpreter_for(uid, own))


@cache
def interpreter_for(uid: int | None, folder: Path) -> str:
    """A Python that `uid` can run: ours unless it sits where that user cannot reach.

    (A pyenv interpreter under /root, say: the platform's venvs must be built from an
    interpreter its run users can execute.)
    """
    if uid is None:
        return sys.executable
    candidates = [sys.executable, os.path.realpath(sys.executable), "/usr/bin/python3"]
    for candidate in dict.fromkeys(candidates):
        try:
            probe = subprocess.run(
                [candidate, "-c", "import json"],
                user=uid,
                group=uid,
                extra_groups=[],
                cwd=folder,
                env={},
                capture_output=True,
                timeout=30,
            )
        except OSError:
            continue
        if probe.returncode == 0:
            return candidate
    pytest.skip(f"no Python interpreter here that uid {uid} may execute (tried {candidates})")


@pytest.fixture(name="sandbox")
def sandbox_fixture() -> Iterator[Sandbox]:
    # Not pytest's tmp_path: its parents are 0700, closed to the run users.
    root = Path(tempfile.mkdtemp(prefix="bay-runtime-"))
    yield make_sandbox(root)
    shutil.rmtree(root)


@pytest.fixture(name="runner")
def runner_fixture() -> Iterator[asyncio.Runner]:
    """One event loop for the whole test, so a launcher and the test share it."""
    with asyncio.Runner() as runner:
        yield runner


@pytest.fixture(name="canaries")
def canaries_fixture(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Platform secrets in this process's environment, which no script may ever see."""
    values = []
    for name in ("BAY_MASTER_KEY", "BAY_DATABASE_URL", "SALESFORCE_API_KEY"):
        value = f"canary-{secrets.token_hex(8)}"
        monkeypatch.setenv(name, value)
        values.append(value)
    return values


class Recorder:
    """An `on_line` that keeps what it is given, so a test can see lines as they come."""

    def __init__(self, then: Callable[[LogLine], None] | None = None) -> None:
        self.lines: list[LogLine] = []
        self.then = then

    async def __call__(self, line: LogLine) -> None:
        self.lines.append(line)
        if self.then is not None:
            self.then(line)


def stdout_of(result: ProcessResult) -> list[str]:
    return [line.text for line in result.lines if line.stream == "stdout"]


def report_of(result: ProcessResult) -> dict[str, Any]:
    """The JSON a probe script printed as its last stdout line."""
    assert result.exit_code == 0, "\n".join(map(str, result.lines))
    parsed: dict[str, Any] = json.loads(stdout_of(result)[-1])
    return parsed


PF_EXITING = 0x4
"""The kernel's flag on a process it is tearing down (it has had its fatal signal)."""


def alive(pid: int) -> bool:
    """True while `pid` runs; a process being torn down or not yet reaped counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    state, flags = fields[0], int(fields[6])
    return state not in ("Z", "X") and not flags & PF_EXITING


def pids_in(lines: list[LogLine] | tuple[LogLine, ...], label: str) -> list[int]:
    """Pids a script announced with lines `<label> <pid>`."""
    return [int(line.text.split()[1]) for line in lines if line.text.startswith(f"{label} ")]
