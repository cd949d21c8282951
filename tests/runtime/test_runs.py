"""Runs in the database, as a specification: creation, the claim, endings, logs, listing.

The claim is tested where it matters, on both backends: many claimers on separate
connections at once, each run taken exactly once.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicebay.core.db import create_engine, session_factory
from servicebay.core.errors import Conflict, InvalidInput, NotFound
from servicebay.core.identity import create_user
from servicebay.core.migrate import upgrade
from servicebay.core.models import Deployment, DeploymentVersion, Run, utcnow
from servicebay.runtime import runs
from servicebay.runtime.layout import Layout
from servicebay.runtime.runs import Ending, RunFilter
from tests.runtime.runs_support import (
    Deployed,
    claim_one,
    deploy_script,
    end_run,
    passable_home,
)

OWNER = "owner@example.com"

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
def home() -> Iterator[Path]:
    folder = passable_home()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, home: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{home / 'meta.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@asynccontextmanager
async def database(url: str) -> AsyncIterator[Sessions]:
    engine = create_engine(url)
    await upgrade(engine)
    sessions: Sessions = session_factory(engine)
    async with sessions() as session, session.begin():
        await create_user(session, email=OWNER, name="Owner", teams=[], admin=False)
    try:
        yield sessions
    finally:
        await engine.dispose()


async def deploy_free(sessions: Sessions, home: Path) -> Deployed:
    """A deployment whose runs all start at once (`concurrency: allow`)."""
    return await deploy_script(sessions, Layout(home), owner=OWNER, script="", concurrency="allow")


async def queue(sessions: Sessions, deployed: Deployed, **options: Any) -> Run:
    async with sessions() as session, session.begin():
        deployment = await session.get(Deployment, deployed.id)
        assert deployment is not None
        options.setdefault("trigger", "manual")
        return await runs.create_run(session, deployment, actor=OWNER, **options)


def test_only_a_ready_active_version_of_a_cron_or_webhook_deployment_runs(home: Path) -> None:
    async def scenario() -> None:
        async with database(f"sqlite:///{home / 'meta.db'}") as sessions:
            layout = Layout(home)
            ready = await deploy_script(sessions, layout, owner=OWNER, script="")
            building = await deploy_script(
                sessions, layout, owner=OWNER, script="", status="building"
            )
            server = await deploy_script(sessions, layout, owner=OWNER, script="", kind="server")

            run = await queue(sessions, ready, input={"a": 1})
            assert (run.status, run.version, run.attempt, run.input) == ("queued", 1, 1, {"a": 1})
            with pytest.raises(Conflict, match=r"version 1 of .* is building"):
                await queue(sessions, building)
            with pytest.raises(Conflict, match="server deployment, which runs continuously"):
                await queue(sessions, server)
            async with sessions() as session, session.begin():
                await session.execute(
                    update(Deployment).where(Deployment.id == ready.id).values(active_version=None)
                )
            with pytest.raises(Conflict, match="no active version: deploy it"):
                await queue(sessions, ready)
            async with sessions() as session:
                with pytest.raises(NotFound, match="no deployment named 'nope'"):
                    await runs.get_deployment(session, "nope")
                with pytest.raises(NotFound, match="no run with id run_x"):
                    await runs.get_run(session, "run_x")

    asyncio.run(scenario())


def test_the_intake_queues_runs_asked_for_together_and_refuses_each_on_its_own(
    database_url: str, home: Path
) -> None:
    async def scenario() -> None:
        async with database(database_url) as sessions:
            layout = Layout(home)
            ready = await deploy_script(sessions, layout, owner=OWNER, script="")
            building = await deploy_script(
                sessions, layout, owner=OWNER, script="", status="building"
            )
            async with sessions() as session:
                deployments = {
                    one.name: await session.get(Deployment, one.id) for one in (ready, building)
                }
            intake = runs.Intake(sessions)
            asked = [
                intake.queue(deployments[name], trigger="manual", actor=OWNER, input={"n": n})
                for n, name in enumerate([ready.name] * 5 + [building.name] + [ready.name] * 4)
            ]
            answers = await asyncio.gather(*asked, return_exceptions=True)
            refused = answers.pop(5)
            assert isinstance(refused, Conflict)
            assert "is building" in refused.message
            assert [(run.status, run.input) for run in answers] == [  # type: ignore[union-attr]
                ("queued", {"n": n}) for n in (0, 1, 2, 3, 4, 6, 7, 8, 9)
            ]
            async with sessions() as session:
                stored = await runs.list_runs(
                    session,
                    RunFilter([ready.id, building.id], None, None, None),
                    limit=50,
                    cursor=None,
                )
            assert len(stored.items) == 9

    asyncio.run(scenario())


def test_claimers_on_separate_connections_take_each_run_exactly_once(
    database_url: str, home: Path
) -> None:
    async def scenario() -> None:
        async with database(database_url) as sessions:
            deployed = await deploy_free(sessions, home)
            queued = {(await queue(sessions, deployed)).id for _ in range(40)}
            engines = [create_engine(database_url) for _ in range(4)]
            claimed: dict[str, list[str]] = {}

            async def claimer(name: str, claimer_sessions: Sessions) -> None:
                while True:
                    async with claimer_sessions() as session, session.begin():
                        run = await claim_one(session, name)
                    if run is None:
                        return
                    assert (run.status, run.worker) == ("running", name)
                    claimed.setdefault(run.id, []).append(name)

            try:
                await asyncio.gather(
                    *(
                        claimer(f"worker-{n}-{m}", session_factory(engine))
                        for n, engine in enumerate(engines)
                        for m in range(2)
                    )
                )
            finally:
                for engine in engines:
                    await engine.dispose()
            assert set(claimed) == queued
            assert all(len(takers) == 1 for takers in claimed.values()), claimed

    asyncio.run(scenario())


def test_the_oldest_queued_run_is_claimed_first(home: Path) -> None:
    async def scenario() -> None:
        async with database(f"sqlite:///{home / 'meta.db'}") as sessions:
            deployed = await deploy_free(sessions, home)
            first, second = await queue(sessions, deployed), await queue(sessions, deployed)
            async with sessions() as session, session.begin():
                run = await claim_one(session, "w")
                assert run is not None
                assert run.id == first.id
                assert run.started_at is not None
            async with sessions() as session, session.begin():
                run = await claim_one(session, "w")
                assert run is not None
                assert run.id == second.id
            async with sessions() as session, session.begin():
                assert await claim_one(session, "w") is None

    asyncio.run(scenario())


@pytest.mark.parametrize(("concurrency", "taken"), [("allow", 3), ("queue", 1)])
def test_one_claim_takes_as_many_runs_as_may_start_up_to_its_limit(
    home: Path, concurrency: str, taken: int
) -> None:
    """A worker with free slots claims for all of them at once, oldest first; a deployment
    that runs one at a time still gives it one."""

    async def scenario() -> None:
        async with database(f"sqlite:///{home / 'meta.db'}") as sessions:
            deployed = await deploy_script(
                sessions, Layout(home), owner=OWNER, script="", concurrency=concurrency
            )
            queued = [await queue(sessions, deployed) for _ in range(4)]
            async with sessions() as session, session.begin():
                claimed = await runs.claim(session, "w", 3)
            assert [run.id for run in claimed] == [run.id for run in queued[:taken]]
            assert {run.status for run in claimed} == {"running"}

    asyncio.run(scenario())


@pytest.mark.parametrize("concurrency", ["queue", "skip"])
def test_a_deployment_that_runs_one_at_a_time_waits_while_its_run_runs_and_others_go_on(
    home: Path, concurrency: str
) -> None:
    async def scenario() -> None:
        async with database(f"sqlite:///{home / 'meta.db'}") as sessions:
            layout = Layout(home)
            serial = await deploy_script(
                sessions, layout, owner=OWNER, script="", concurrency=concurrency
            )
            other = await deploy_free(sessions, home)
            first, second = await queue(sessions, serial), await queue(sessions, serial)
            unrelated = await queue(sessions, other)

            async def claim() -> str | None:
                async with sessions() as session, session.begin():
                    run = await claim_one(session, "w")
                    return None if run is None else run.id

            assert await claim() == first.id
            assert await claim() == unrelated.id  # `second` waits for `first`
            assert await claim() is None
            async with sessions() as session, session.begin():
                await end_run(session, first.id, Ending("succeeded", "exit code 0", 0))
            assert await claim() == second.id

    asyncio.run(scenario())


def test_endings_recorded_together_keep_each_its_own_and_skip_runs_already_ended(
    database_url: str, home: Path
) -> None:
    async def scenario() -> None:
        async with database(database_url) as sessions:
            deployed = await deploy_free(sessions, home)
            first, second, third = [await queue(sessions, deployed) for _ in range(3)]
            async with sessions() as session, session.begin():
                assert len(await runs.claim(session, "w", 3)) == 3
            async with sessions() as session, session.begin():
                await end_run(session, third.id, Ending("cancelled", "cancelled by owner"))
            async with sessions() as session, session.begin():
                ended = await runs.finish_runs(
                    session,
                    [
                        (first.id, Ending("succeeded", "exited with code 0", 0, 12)),
                        (second.id, Ending("failed", "x" * 3000, None, 7, log_truncated=True)),
                        (third.id, Ending("succeeded", "exited with code 0", 0)),
                    ],
                )
            assert set(ended) == {first.id, second.id}
            got = {
                run_id: (run.status, run.exit_code, run.log_bytes, run.log_truncated)
                for run_id, run in ended.items()
            }
            assert got == {
                first.id: ("succeeded", 0, 12, False),
                second.id: ("failed", None, 7, True),
            }
            assert len(ended[second.id].reason or "") == 2000
            async with sessions() as session, session.begin():
                twice = Ending("succeeded", "exit code 0", 0)
                with pytest.raises(ValueError, match="same run id is given twice"):
                    await runs.finish_runs(session, [(third.id, twice), (third.id, twice)])
            async with sessions() as session:
                kept = await session.get(Run, third.id)
                assert kept is not None
                assert (kept.status, kept.reason) == ("cancelled", "cancelled by owner")

    asyncio.run(scenario())


def test_a_run_ends_once_and_a_cancel_is_recorded_as_its_state_allows(home: Path) -> None:
    async def scenario() -> None:
        async with database(f"sqlite:///{home / 'meta.db'}") as sessions:
            deployed = await deploy_script(sessions, Layout(home), owner=OWNER, script="")
            run = await queue(sessions, deployed)
            async with sessions() as session, session.begin():
                await claim_one(session, "w")
            async with sessions() as session, session.begin():
                flagged = await runs.request_cancel(session, await session.get(Run, run.id), OWNER)
                assert (flagged.status, flagged.cancel_requested) == ("running", True)
                assert await runs.cancels_requested(session, [run.id, "run_other"]) == {run.id}
            async with sessions() as session, session.begin():
                ended = await end_run(
                    session, run.id, Ending("cancelled", "cancelled (killed by SIGTERM)", None)
                )
                assert ended is not None
                assert ended.finished_at is not None
                again = await end_run(session, run.id, Ending("succeeded", "exit 0", 0))
                assert again is None
            async with sessions() as session, session.begin():
                with pytest.raises(Conflict, match="already ended \\(cancelled\\)"):
                    await runs.request_cancel(session, await session.get(Run, run.id), OWNER)
                with pytest.raises(ValueError, match="not a final status"):
                    await end_run(session, run.id, Ending("running", "?"))

    asyncio.run(scenario())


def test_runs_are_listed_newest_first_by_page_and_filter(home: Path) -> None:
    async def scenario() -> None:
        async with database(f"sqlite:///{home / 'meta.db'}") as sessions:
            layout = Layout(home)
            one = await deploy_script(sessions, layout, owner=OWNER, script="")
            two = await deploy_script(sessions, layout, owner=OWNER, script="")
            made = [await queue(sessions, one) for _ in range(5)]
            made.append(await queue(sessions, two, trigger="schedule", due_at=utcnow()))
            async with sessions() as session, session.begin():
                await session.execute(
                    update(Run).where(Run.id == made[0].id).values(status="failed")
                )

            async def listed(where: RunFilter, limit: int = 100) -> list[str]:
                ids: list[str] = []
                cursor = None
                while True:
                    async with sessions() as session:
                        page = await runs.list_runs(session, where, limit=limit, cursor=cursor)
                    ids += [run.id for run, _ in page.items]
                    if page.next is None:
                        return ids
                    cursor = page.next

            newest_first = [run.id for run in reversed(made)]
            assert await listed(RunFilter(), limit=2) == newest_first
            assert await listed(RunFilter(deployment_ids=[one.id])) == newest_first[1:]
            assert await listed(RunFilter(status="failed")) == [made[0].id]
            assert await listed(RunFilter(trigger="schedule")) == [made[5].id]
            assert await listed(RunFilter(since=utcnow() + timedelta(seconds=5))) == []
            assert await listed(RunFilter(deployment_ids=[])) == []
            with pytest.raises(InvalidInput, match="unknown status 'done': use one of queued"):
                RunFilter(status="done")
            with pytest.raises(InvalidInput, match="cursor"):
                async with sessions() as session:
                    await runs.list_runs(session, RunFilter(), limit=2, cursor="%%%")

    asyncio.run(scenario())


def test_a_log_is_read_after_the_last_chunk_seen_and_done_only_at_its_end(home: Path) -> None:
    async def scenario() -> None:
        async with database(f"sqlite:///{home / 'meta.db'}") as sessions:
            deployed = await deploy_script(sessions, Layout(home), owner=OWNER, script="")
            run = await queue(sessions, deployed)
            async with sessions() as session, session.begin():
                await claim_one(session, "w")
                for n in range(3):
                    await runs.append_log(session, run.id, f"chunk {n}\n")
            async with sessions() as session:
                running = await session.get(Run, run.id)
                whole = await runs.read_log(session, running, after=None)
                tail = await runs.read_log(session, running, after=whole.chunks[0].id)
            assert [c.text for c in whole.chunks] == ["chunk 0\n", "chunk 1\n", "chunk 2\n"]
            assert [c.text for c in tail.chunks] == ["chunk 1\n", "chunk 2\n"]
            assert not whole.done
            async with sessions() as session, session.begin():
                await end_run(session, run.id, Ending("succeeded", "exited with code 0", 0))
            async with sessions() as session:
                ended = await session.get(Run, run.id)
                last = await runs.read_log(session, ended, after=whole.chunks[-1].id)
                assert await runs.log_text(session, run.id) == "chunk 0\nchunk 1\nchunk 2\n"
            assert (last.chunks, last.done) == ([], True)

    asyncio.run(scenario())


def test_a_long_log_comes_in_pages_and_is_done_only_on_the_last(home: Path) -> None:
    async def scenario() -> None:
        async with database(f"sqlite:///{home / 'meta.db'}") as sessions:
            deployed = await deploy_script(sessions, Layout(home), owner=OWNER, script="")
            run = await queue(sessions, deployed)
            big = "x" * (runs.LOG_PAGE_BYTES // 2 + 1)
            async with sessions() as session, session.begin():
                await claim_one(session, "w")
                for _ in range(3):
                    await runs.append_log(session, run.id, big)
                await end_run(session, run.id, Ending("succeeded", "exited with code 0"))
            pages = []
            after = None
            async with sessions() as session:
                ended = await session.get(Run, run.id)
                while not pages or not pages[-1].done:
                    pages.append(await runs.read_log(session, ended, after=after))
                    after = pages[-1].chunks[-1].id
            assert [len(page.chunks) for page in pages] == [1, 1, 1]
            assert [page.done for page in pages] == [False, False, True]

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "path", ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/", "a\\b", "a\x00b"]
)
def test_artifact_paths_that_could_leave_the_output_folder_are_refused(path: str) -> None:
    with pytest.raises(InvalidInput, match="is not an artifact path"):
        runs.artifact_parts(path)


def test_artifacts_are_opened_without_following_links(home: Path) -> None:
    layout = Layout(home)
    output = layout.artifacts("run_1")
    (output / "charts").mkdir(parents=True)
    (output / "charts" / "week.txt").write_text("chart")
    (home / "secret.txt").write_text("secret")
    (output / "leak.txt").symlink_to(home / "secret.txt")
    (output / "linked").symlink_to(output / "charts")

    handle, size = runs.open_artifact(layout, "run_1", "charts/week.txt")
    with handle:
        assert (handle.read(), size) == (b"chart", 5)
    for refused in ("leak.txt", "linked/week.txt", "charts", "missing.txt"):
        with pytest.raises(NotFound, match="has no artifact"):
            runs.open_artifact(layout, "run_1", refused)
    with pytest.raises(NotFound):
        runs.open_artifact(layout, "run_2", "charts/week.txt")
    assert runs.list_artifacts(layout, "run_1") == [runs.Artifact("charts/week.txt", 5)]
    assert runs.list_artifacts(layout, "run_2") == []


def test_versions_of_a_deployment_are_its_own(home: Path) -> None:
    """A run names a version of its own deployment: another's version 1 does not count."""

    async def scenario() -> None:
        async with database(f"sqlite:///{home / 'meta.db'}") as sessions:
            layout = Layout(home)
            ready = await deploy_script(sessions, layout, owner=OWNER, script="")
            empty = await deploy_script(sessions, layout, owner=OWNER, script="")
            async with sessions() as session, session.begin():
                await session.execute(
                    update(DeploymentVersion)
                    .where(DeploymentVersion.deployment_id == empty.id)
                    .values(deployment_id=ready.id, version=2)
                )
            with pytest.raises(Conflict, match=r"version 1 of .* does not exist"):
                await queue(sessions, empty)

    asyncio.run(scenario())
