"""Deployments made directly in an instance, for tests of runs: rows, source, environment.

A deployment here is what a deploy leaves behind: a `deployments` row owned by a user, a
ready version whose config is a parsed `cron.json`, the source extracted under
`Layout.source`, and a virtual environment under `Layout.environment`. The environment
is made from an interpreter the run users may execute (not a pyenv Python under /root).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicebay.core.models import Deployment, DeploymentVersion, Run, User, new_id, utcnow
from servicebay.runtime.config import CronConfig, WebhookConfig
from servicebay.runtime.layout import Layout
from servicebay.runtime.runs import FINISHED, Ending, claim, finish_runs

PYTHON = "/usr/bin/python3" if os.geteuid() == 0 else sys.executable
"""An interpreter every run user may execute."""
ENVIRONMENT = "test-environment"


def passable_home() -> Path:
    """A folder for an instance whose parents let run users pass (pytest's are 0700)."""
    home = Path(tempfile.mkdtemp(prefix="bay-runs-"))
    home.chmod(0o711)
    return home


def ensure_environment(layout: Layout) -> Path:
    """The shared test environment: a venv without requirements, made once per home."""
    environment = layout.environment(ENVIRONMENT)
    if not (environment / "bin" / "python").exists():
        environment.parent.mkdir(parents=True, exist_ok=True)
        for folder in (layout.home, layout.root):
            folder.chmod(0o711)
        environment.parent.chmod(0o755)
        subprocess.run(
            [PYTHON, "-m", "venv", "--without-pip", str(environment)], check=True, timeout=60
        )
        environment.chmod(0o755)
    return environment


@dataclass(frozen=True)
class Deployed:
    id: str
    name: str
    owner: str


async def deploy_script(
    sessions: async_sessionmaker[AsyncSession],
    layout: Layout,
    *,
    owner: str,
    script: str,
    name: str | None = None,
    kind: str = "cron",
    status: str = "ready",
    **config: Any,
) -> Deployed:
    """Deploy `script` (as job.py) as version 1 of a new deployment owned by `owner`; its
    config is a cron.json (a webhook.json in async mode for kind webhook) with `config`."""
    name = name or f"job-{secrets.token_hex(3)}"
    if kind == "webhook":
        settings = {"sub_domain": name, "script_to_run": "job.py", "mode": "async", **config}
        parsed = WebhookConfig.model_validate(settings).model_dump(mode="json")
    else:
        settings = {"cron_frequency": "@daily", "script_to_run": "job.py", **config}
        parsed = CronConfig.model_validate(settings).model_dump(mode="json")
    source = layout.source(name, 1)
    source.mkdir(parents=True)
    (source / "job.py").write_text(script)
    (source / "README.md").write_text(f"# {name}\n\nA test job.\n")
    ensure_environment(layout)
    async with sessions() as session, session.begin():
        user = await session.scalar(select(User).where(User.email == owner))
        assert user is not None, f"no user {owner}"
        deployment = Deployment(
            id=new_id("dep"), name=name, kind=kind, owner_id=user.id, active_version=1
        )
        session.add(deployment)
        await session.flush()
        session.add(
            DeploymentVersion(
                id=new_id("ver"),
                deployment_id=deployment.id,
                version=1,
                config=parsed,
                bundle_digest="0" * 64,
                requirements_digest=ENVIRONMENT,
                status=status,
                build_log="",
                created_by=owner,
                finished_at=utcnow(),
            )
        )
    return Deployed(deployment.id, name, owner)


async def until(condition: Callable[[], bool], what: str, *, within: float = 60.0) -> None:
    """Wait for `condition` (checked every few milliseconds) or fail saying `what`."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        await asyncio.sleep(0.02)


async def end_run(session: AsyncSession, run_id: str, ending: Ending) -> Run | None:
    """`finish_runs` of one run: the run as ended, None if it was not running."""
    return (await finish_runs(session, [(run_id, ending)])).get(run_id)


async def claim_one(session: AsyncSession, worker: str) -> Run | None:
    """What a worker with one free slot claims: the next run that may start, or None."""
    claimed = await claim(session, worker, 1)
    return claimed[0] if claimed else None


async def wait_for_run(
    sessions: async_sessionmaker[AsyncSession],
    run_id: str,
    statuses: frozenset[str] = FINISHED,
    *,
    within: float = 60.0,
) -> Run:
    """The run once its status is one of `statuses`."""
    deadline = time.monotonic() + within
    while True:
        async with sessions() as session:
            run = await session.get(Run, run_id)
        assert run is not None, f"no run {run_id}"
        if run.status in statuses:
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run.status}"
        await asyncio.sleep(0.05)
