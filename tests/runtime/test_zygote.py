"""The zygote: a warm interpreter per deployment that forks each run.

A run through the zygote must keep every promise a run started afresh keeps, so the
specification of test_process.py runs here again with `launch` being a zygote's `run`.
What follows it is the zygote's own: preloading, nothing shared between runs, concurrent
runs, and a zygote that dies being replaced.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from servicebay.runtime.process import ProcessResult, ProcessSpec
from servicebay.runtime.sdk_stage import stage_sdk
from servicebay.runtime.zygote import DEFAULT_PRELOAD, Zygote, ZygoteError
from tests.runtime.isolation.harness import (  # noqa: F401 - fixtures
    SCRIPTS,
    Launch,
    Recorder,
    Sandbox,
    alive,
    canaries_fixture,
    pids_in,
    report_of,
    runner_fixture,
    sandbox_fixture,
)
from tests.runtime.test_process import (  # noqa: F401 - the same specification, re-run here
    test_a_cancel_event_ends_the_run_and_reports_it,
    test_a_script_cannot_reach_the_instance_other_deployments_or_the_platform,
    test_a_script_ends_as_python_ends_it,
    test_a_script_has_its_own_process_group_and_only_its_three_streams,
    test_a_script_killed_by_a_signal_reports_the_signal,
    test_a_script_makes_private_files_and_runs_under_its_limits,
    test_a_script_over_its_memory_limit_fails,
    test_a_script_runs_as_its_deployment_user_with_no_other_groups,
    test_a_script_sees_its_environment_and_nothing_of_the_platform,
    test_a_timeout_kills_a_script_that_ignores_sigterm_and_its_grandchild,
    test_a_timeout_lets_a_script_that_handles_sigterm_clean_up,
    test_an_uncaught_error_exits_1_with_its_traceback,
    test_any_output_becomes_lines,
    test_cancelling_the_awaiting_task_kills_the_script_and_cancels_the_caller,
    test_lines_are_timestamped_labelled_and_streamed_while_the_script_runs,
    test_logs_past_the_limit_are_drained_but_dropped_and_noted_once,
    test_output_within_the_limit_is_all_kept,
    test_the_exit_code_is_reported,
    test_what_a_script_leaves_running_is_killed_when_it_exits,
)


@pytest.fixture(name="staged")
def staged_fixture(sandbox: Sandbox) -> Path:
    """A folder on the zygote's PYTHONPATH, as the staged SDK is, with a module in it."""
    staged = sandbox.root / "staged"
    staged.mkdir(mode=0o755)
    shutil.copy(SCRIPTS / "shared_state.py", staged / "shared_state.py")
    (staged / "shared_state.py").chmod(0o644)
    return staged


@pytest.fixture(name="zygote")
def zygote_fixture(
    sandbox: Sandbox, runner: asyncio.Runner, staged: Path, canaries: list[str]
) -> Iterator[Zygote]:
    zygote = Zygote(
        sandbox.python,
        sandbox.deployment,
        {"PYTHONPATH": str(staged)},
        uid=sandbox.uid,
        preload=("json", "shared_state", "no_such_module"),
    )
    runner.run(zygote.start())
    yield zygote
    runner.run(zygote.stop())


@pytest.fixture(name="launch")
def launch_fixture(zygote: Zygote) -> Launch:
    return zygote.run


def test_the_zygote_preloads_what_it_can_and_says_what_it_cannot(zygote: Zygote) -> None:
    assert zygote.preloaded == ["json", "shared_state"]
    assert zygote.failed == {
        "no_such_module": "ModuleNotFoundError: No module named 'no_such_module'"
    }


def test_nothing_a_run_does_reaches_the_next_run(
    sandbox: Sandbox, runner: asyncio.Runner, zygote: Zygote
) -> None:
    sandbox.install("helper_module.py")
    spec = sandbox.spec("remember.py")

    reports = [report_of(runner.run(zygote.run(spec))) for _ in range(3)]

    assert (
        reports
        == [
            {
                "shared_state_preloaded": True,
                "own_global_before": None,
                "helper_imported_before": False,
                "visits_before": [],
            }
        ]
        * 3
    )


def test_concurrent_runs_each_have_their_own_process_and_environment(
    sandbox: Sandbox, runner: asyncio.Runner, zygote: Zygote
) -> None:
    spec = sandbox.spec("who_am_i.py")
    specs = [replace(spec, env={"BAY_RUN_ID": str(number)}) for number in range(8)]

    async def all_at_once() -> list[dict[str, object]]:
        results = await asyncio.gather(*(zygote.run(each) for each in specs))
        return [report_of(result) for result in results]

    reports = runner.run(all_at_once())

    assert [report["run"] for report in reports] == [str(number) for number in range(8)]
    assert len({report["pid"] for report in reports}) == 8


def test_the_staged_sdk_is_preloaded_and_answers_a_webhook_call(
    sandbox: Sandbox, runner: asyncio.Runner
) -> None:
    sdk = stage_sdk(sandbox.root / "sdk")
    sdk.chmod(0o755)
    call = sandbox.deployment / "call.json"
    answer = sandbox.deployment / "answer.json"
    body = base64.b64encode(b'{"amount": 12}').decode()
    call.write_text(
        json.dumps(
            {
                "method": "POST",
                "path": "/",
                "query": [["name", "julius"]],
                "headers": [["content-type", "application/json"]],
                "body_base64": body,
            }
        )
    )
    spec = sandbox.spec("answer_webhook.py")
    spec = replace(
        spec,
        env={"BAY_WEBHOOK_REQUEST": str(call), "BAY_WEBHOOK_RESPONSE": str(answer)},
    )

    async def scenario() -> tuple[list[str], ProcessResult]:
        async with Zygote(
            sandbox.python, sandbox.deployment, {"PYTHONPATH": str(sdk)}, uid=sandbox.uid
        ) as zygote:
            return zygote.preloaded, await zygote.run(spec)

    preloaded, result = runner.run(scenario())

    assert preloaded == list(DEFAULT_PRELOAD)
    assert result.exit_code == 0, result.lines
    answered = json.loads(answer.read_text())
    assert answered["status_code"] == 201
    assert json.loads(base64.b64decode(answered["body_base64"])) == {
        "method": "POST",
        "name": "julius",
        "body": {"amount": 12},
    }


def test_a_zygote_that_died_is_replaced_for_the_next_run(
    sandbox: Sandbox, runner: asyncio.Runner, zygote: Zygote
) -> None:
    first = zygote.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)

    ended = runner.run(zygote.wait())
    result = runner.run(zygote.run(sandbox.spec("exit_with.py", "0")))

    assert ended.signal == signal.SIGKILL
    assert result.exit_code == 0
    assert zygote.pid not in (None, first)


def test_a_run_in_flight_when_the_zygote_dies_fails_and_its_processes_die(
    sandbox: Sandbox, runner: asyncio.Runner, zygote: Zygote
) -> None:
    async def scenario() -> list[int]:
        started = asyncio.Event()
        recorder = Recorder(lambda line: started.set())
        run = asyncio.create_task(zygote.run(sandbox.spec("sleep_forever.py"), recorder))
        await started.wait()
        assert zygote.pid is not None
        os.kill(zygote.pid, signal.SIGKILL)
        with pytest.raises(ZygoteError, match=r"the zygote \(pid \d+\) went away during the run"):
            await run
        return pids_in(recorder.lines, "sleeper")

    [sleeper] = runner.run(scenario())

    assert not alive(sleeper)


def test_a_zygote_that_cannot_start_says_why(sandbox: Sandbox, runner: asyncio.Runner) -> None:
    broken = Zygote("/bin/false", sandbox.deployment, {}, uid=sandbox.uid)

    with pytest.raises(ZygoteError, match=r"the zygote \(/bin/false in .*\) exited with code 1"):
        runner.run(broken.start())


def test_a_run_for_another_interpreter_or_user_is_refused(
    sandbox: Sandbox, runner: asyncio.Runner, zygote: Zygote
) -> None:
    spec = sandbox.spec("exit_with.py", "0")

    with pytest.raises(ValueError, match="a zygote runs scripts as"):
        runner.run(zygote.run(replace(spec, argv=["/usr/bin/other-python", "exit_with.py"])))
    with pytest.raises(ValueError, match="a zygote runs scripts as"):
        runner.run(zygote.run(replace(spec, argv=[sandbox.python, "-c", "print(1)"])))
    with pytest.raises(ValueError, match="this zygote runs as uid"):
        runner.run(zygote.run(ProcessSpec(list(spec.argv), spec.cwd, {}, uid=4242)))


def test_a_missing_script_fails_as_python_would(
    sandbox: Sandbox, runner: asyncio.Runner, zygote: Zygote
) -> None:
    spec = replace(sandbox.spec("exit_with.py", "0"), argv=[sandbox.python, "missing.py"])

    result = runner.run(zygote.run(spec))

    assert result.exit_code == 2
    [error] = [line.text for line in result.lines]
    assert error.startswith("python: can't open file ")
    assert json.dumps(str(sandbox.deployment / "missing.py"))[1:-1] in error
