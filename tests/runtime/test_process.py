"""How a deployment's script runs, as a specification (DESIGN.md, "What a script sees").

Every test runs real scripts (tests/runtime/isolation/) as real processes, as the
deployment's own user when the tests run as root. The tests that take the `launch` fixture
describe what any way of running a script must do; test_zygote.py runs them again through
the zygote.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from servicebay.runtime.process import (
    KEPT_LINES,
    PROCESS_LIMIT,
    RUN_UID_BASE,
    TRUNCATION_NOTE,
    LogLine,
    ProcessError,
    ProcessResult,
    ProcessSpec,
    prepare_private_dir,
    run_process,
    run_uid,
)
from tests.runtime.isolation.harness import (  # noqa: F401 - fixtures
    AS_ROOT,
    NEEDS_ROOT,
    Launch,
    Recorder,
    Sandbox,
    alive,
    canaries_fixture,
    pids_in,
    report_of,
    runner_fixture,
    sandbox_fixture,
    stdout_of,
)


@pytest.fixture(name="launch")
def launch_fixture() -> Launch:
    return run_process


# --- what a script can reach ---------------------------------------------------------------


@NEEDS_ROOT
def test_a_script_cannot_reach_the_instance_other_deployments_or_the_platform(
    sandbox: Sandbox, runner: asyncio.Runner, canaries: list[str], launch: Launch
) -> None:
    spec = sandbox.spec(
        "probe_isolation.py", str(sandbox.instance), str(sandbox.other_deployment), str(os.getpid())
    )

    result = runner.run(launch(spec))

    attempts = report_of(result)["attempts"]
    assert attempts == {
        "read the master key": "denied: PermissionError",
        "read the database": "denied: PermissionError",
        "write into the instance": "denied: PermissionError",
        "list another deployment": "denied: PermissionError",
        "read another deployment's file": "denied: PermissionError",
        "read the platform's environment": "denied: PermissionError",
        "become root": "denied: PermissionError",
    }
    assert not (sandbox.instance / "planted.txt").exists()
    output = "\n".join(map(str, result.lines))
    assert not any(canary in output for canary in canaries)


def test_a_script_sees_its_environment_and_nothing_of_the_platform(
    sandbox: Sandbox, runner: asyncio.Runner, canaries: list[str], launch: Launch
) -> None:
    spec = sandbox.spec("describe_self.py")

    result = runner.run(launch(spec))

    assert report_of(result)["environ"] == {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(sandbox.deployment),
        "TMPDIR": str(sandbox.deployment),
        "PYTHONUNBUFFERED": "1",
        "BAY_RUN_ID": "7",
    }
    output = "\n".join(map(str, result.lines))
    assert not any(canary in output for canary in canaries)


def test_the_spec_environment_is_laid_over_the_base() -> None:
    spec = ProcessSpec(["python"], Path("/srv/d"), {"PATH": "/venv/bin:/usr/bin", "X": "1"})

    assert spec.environment() == {
        "PATH": "/venv/bin:/usr/bin",
        "LANG": "C.UTF-8",
        "HOME": "/srv/d",
        "TMPDIR": "/srv/d",
        "PYTHONUNBUFFERED": "1",
        "X": "1",
    }


@NEEDS_ROOT
def test_a_script_runs_as_its_deployment_user_with_no_other_groups(
    sandbox: Sandbox, runner: asyncio.Runner, launch: Launch
) -> None:
    report = report_of(runner.run(launch(sandbox.spec("describe_self.py"))))

    assert (report["uid"], report["gid"], report["groups"]) == (
        RUN_UID_BASE + 1,
        RUN_UID_BASE + 1,
        [],
    )
    assert report["limits"]["nproc"] == [PROCESS_LIMIT, PROCESS_LIMIT]


def test_a_script_has_its_own_process_group_and_only_its_three_streams(
    sandbox: Sandbox, runner: asyncio.Runner, launch: Launch
) -> None:
    leak = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(leak, True)
    try:
        report = report_of(runner.run(launch(sandbox.spec("describe_self.py"))))
    finally:
        os.close(leak)

    assert report["process_group"] == report["pid"]
    assert report["cwd"] == str(sandbox.deployment)
    descriptors = report["descriptors"]
    assert sorted(descriptors) == ["0", "1", "2"]
    assert descriptors["0"] == "/dev/null"
    assert descriptors["1"].startswith("pipe:")
    assert descriptors["2"].startswith("pipe:")


def test_a_script_makes_private_files_and_runs_under_its_limits(
    sandbox: Sandbox, runner: asyncio.Runner, launch: Launch
) -> None:
    report = report_of(runner.run(launch(sandbox.spec("describe_self.py", memory_mb=300))))

    assert report["new_file_mode"] == "0o600"
    assert report["limits"]["as"] == [300 * 1024 * 1024] * 2
    assert report["limits"]["core"] == [0, 0]


def test_a_script_over_its_memory_limit_fails(
    sandbox: Sandbox, runner: asyncio.Runner, launch: Launch
) -> None:
    result = runner.run(launch(sandbox.spec("allocate.py", "2048", memory_mb=256)))

    assert result.exit_code == 1
    assert any("MemoryError" in line.text for line in result.lines if line.stream == "stderr")
    assert not any(line.text.startswith("allocated") for line in result.lines)


# --- how a run ends -----------------------------------------------------------------------


@pytest.mark.parametrize(("how", "exit_code", "signal_number"), [("0", 0, None), ("3", 3, None)])
def test_the_exit_code_is_reported(
    sandbox: Sandbox,
    runner: asyncio.Runner,
    launch: Launch,
    how: str,
    exit_code: int,
    signal_number: int | None,
) -> None:
    result = runner.run(launch(sandbox.spec("exit_with.py", how)))

    assert (result.exit_code, result.signal) == (exit_code, signal_number)
    assert result.ok == (exit_code == 0)
    assert result.describe() == f"exited with code {exit_code}"
    assert not result.timed_out
    assert not result.cancelled


def test_a_script_killed_by_a_signal_reports_the_signal(
    sandbox: Sandbox, runner: asyncio.Runner, launch: Launch
) -> None:
    result = runner.run(launch(sandbox.spec("exit_with.py", "abort")))

    assert (result.exit_code, result.signal) == (None, signal.SIGABRT)
    assert result.describe() == "killed by SIGABRT"


def test_an_uncaught_error_exits_1_with_its_traceback(
    sandbox: Sandbox, runner: asyncio.Runner, launch: Launch
) -> None:
    result = runner.run(launch(sandbox.spec("exit_with.py", "raise")))

    assert result.exit_code == 1
    errors = [line.text for line in result.lines if line.stream == "stderr"]
    assert errors[0] == "Traceback (most recent call last):"
    assert 'exit_with.py", line 11, in <module>' in errors[1]
    assert errors[-1] == "ZeroDivisionError: division by zero"


def test_a_script_ends_as_python_ends_it(
    sandbox: Sandbox, runner: asyncio.Runner, launch: Launch
) -> None:
    result = runner.run(launch(sandbox.spec("end_like_python.py")))

    assert result.exit_code == 1
    assert stdout_of(result) == ["main finished", "thread finished", "atexit handler ran"]
    assert [line.text for line in result.lines if line.stream == "stderr"] == [
        "leaving with a message"
    ]


def test_a_timeout_kills_a_script_that_ignores_sigterm_and_its_grandchild(
    sandbox: Sandbox, runner: asyncio.Runner, launch: Launch
) -> None:
    spec = sandbox.spec("outlive_term.py", timeout_seconds=2.0, kill_grace_seconds=0.5)

    result = runner.run(launch(spec))

    assert result.timed_out
    assert (result.exit_code, result.signal) == (None, signal.SIGKILL)
    assert result.describe().startswith("timed out after")
    [child] = pids_in(result.lines, "child")
    [grandchild] = pids_in(result.lines, "grandchild")
    assert not alive(child)
    assert not alive(grandchild)
    notes = [line.text for line in result.lines if line.text.startswith("[servicebay]")]
    assert notes == [
        "[servicebay] timed out after 2 s: sending SIGTERM to the script's processes",
        "[servicebay] still running 0.5 s after SIGTERM: sending SIGKILL",
    ]


def test_a_timeout_lets_a_script_that_handles_sigterm_clean_up(
    sandbox: Sandbox, runner: asyncio.Runner, launch: Launch
) -> None:
    spec = sandbox.spec("graceful_term.py", timeout_seconds=1.0, kill_grace_seconds=30.0)

    result = runner.run(launch(spec))

    assert result.timed_out
    assert (result.exit_code, result.signal) == (3, None)
    assert stdout_of(result) == ["ready", "cleaning up"]


def test_what_a_script_leaves_running_is_killed_when_it_exits(
    sandbox: Sandbox, runner: asyncio.Runner, launch: Launch
) -> None:
    result = runner.run(launch(sandbox.spec("leave_behind.py")))

    assert result.exit_code == 0
    [sleeper] = pids_in(result.lines, "left")
    assert not alive(sleeper)


def test_cancelling_the_awaiting_task_kills_the_script_and_cancels_the_caller(
    sandbox: Sandbox, runner: asyncio.Runner, launch: Launch
) -> None:
    async def scenario() -> list[int]:
        started = asyncio.Event()
        recorder = Recorder(lambda line: started.set())
        run = asyncio.create_task(launch(sandbox.spec("sleep_forever.py"), recorder))
        await started.wait()
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        return pids_in(recorder.lines, "sleeper")

    [sleeper] = runner.run(scenario())

    assert not alive(sleeper)


def test_a_cancel_event_ends_the_run_and_reports_it(
    sandbox: Sandbox, runner: asyncio.Runner, launch: Launch
) -> None:
    async def scenario() -> tuple[ProcessResult, list[int]]:
        cancel = asyncio.Event()
        recorder = Recorder(lambda line: cancel.set())
        spec = sandbox.spec("sleep_forever.py", kill_grace_seconds=10.0)
        result = await launch(spec, recorder, cancel=cancel)
        return result, pids_in(recorder.lines, "sleeper")

    result, [sleeper] = runner.run(scenario())

    assert result.cancelled
    assert not result.timed_out
    assert result.signal == signal.SIGTERM
    assert result.describe() == "cancelled (killed by SIGTERM)"
    assert not alive(sleeper)


def test_a_program_that_cannot_start_is_a_clear_error(
    sandbox: Sandbox, runner: asyncio.Runner
) -> None:
    spec = ProcessSpec([str(sandbox.deployment / "no-python")], sandbox.deployment, {})

    with pytest.raises(ProcessError, match=r"cannot start .*no-python .*No such file"):
        runner.run(run_process(spec))


@pytest.mark.skipif(AS_ROOT, reason="as root any uid may be asked for")
def test_another_user_is_refused_without_root(sandbox: Sandbox, runner: asyncio.Runner) -> None:
    spec = ProcessSpec([sandbox.python, "-c", "pass"], sandbox.deployment, {}, uid=4242)

    with pytest.raises(ProcessError, match="cannot run as uid 4242: that needs root"):
        runner.run(run_process(spec))


# --- logs ---------------------------------------------------------------------------------


def test_lines_are_timestamped_labelled_and_streamed_while_the_script_runs(
    sandbox: Sandbox, runner: asyncio.Runner, launch: Launch
) -> None:
    gate = sandbox.deployment / "gate"
    before = datetime.now(UTC)
    # The script waits for `gate`, which only the first line's arrival creates.
    recorder = Recorder(lambda line: gate.touch())

    result = runner.run(launch(sandbox.spec("wait_for_file.py", str(gate)), recorder))

    assert result.exit_code == 0
    assert recorder.lines == list(result.lines)
    assert [(line.stream, line.text) for line in result.lines] == [
        ("stdout", "waiting"),
        ("stdout", "released"),
    ]
    first, second = result.lines
    assert before <= first.at <= second.at <= datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z stdout waiting", str(first))


def test_any_output_becomes_lines(sandbox: Sandbox, runner: asyncio.Runner, launch: Launch) -> None:
    result = runner.run(launch(sandbox.spec("odd_output.py")))

    assert [line.text for line in result.lines if line.stream == "stderr"] == ["to stderr"]
    lines = stdout_of(result)
    assert lines[:3] == ["plain line", "windows line", "bad \ufffd\ufffd bytes"]
    # The 200,000-byte line comes in pieces of at most 64 KiB, no character cut in two.
    pieces = lines[3:-1]
    assert len(pieces) == 4
    assert all(len(piece.encode()) <= 64 * 1024 for piece in pieces)
    assert "".join(pieces) == "\u00e9" * 100_000
    assert lines[-1] == "no newline at the end"
    written = [b"plain line\n", b"to stderr\n", b"windows line\r\n", b"bad \xff\xfe bytes\n"]
    written += [b"\xc3\xa9" * 100_000 + b"\n", b"no newline at the end"]
    assert result.log_bytes == sum(map(len, written))


def test_logs_past_the_limit_are_drained_but_dropped_and_noted_once(
    sandbox: Sandbox, runner: asyncio.Runner, launch: Launch
) -> None:
    spec = sandbox.spec("chatter.py", "5000", "100", log_limit_bytes=10_050)

    result = runner.run(launch(spec))

    assert result.exit_code == 0  # it was never blocked writing
    assert result.truncated
    assert result.log_bytes == 10_000
    *kept, note = result.lines
    assert [line.text[:8] for line in kept] == [f"{n:08d}" for n in range(100)]
    assert note.text == TRUNCATION_NOTE.format(kept=10_000, dropped=490_000)
    assert note.text == "[servicebay] log truncated: 10000 bytes kept, 490000 bytes dropped"


def test_output_within_the_limit_is_all_kept(
    sandbox: Sandbox, runner: asyncio.Runner, launch: Launch
) -> None:
    result = runner.run(launch(sandbox.spec("chatter.py", "100", "100", log_limit_bytes=10_000)))

    assert not result.truncated
    assert result.log_bytes == 10_000
    assert len(result.lines) == 100


def test_without_a_limit_every_line_is_passed_on_and_the_result_keeps_the_last_ones(
    sandbox: Sandbox, runner: asyncio.Runner, launch: Launch
) -> None:
    recorder = Recorder()
    spec = sandbox.spec("chatter.py", str(KEPT_LINES + 500), "100", log_limit_bytes=None)

    result = runner.run(launch(spec, recorder))

    assert not result.truncated
    assert len(recorder.lines) == KEPT_LINES + 500  # a server's log: pruned where it is stored
    assert len(result.lines) == KEPT_LINES  # memory stays bounded, however long it runs
    assert result.lines[-1].text.startswith(f"{KEPT_LINES + 499:08d}")


def test_a_log_line_is_stored_as_utc_time_stream_and_text() -> None:
    at = datetime(2026, 11, 29, 10, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))

    assert str(LogLine(at, "stderr", "a b  c")) == "2026-11-29T09:00:00.123Z stderr a b  c"


# --- run users and their folders ----------------------------------------------------------


def test_each_deployment_has_its_own_run_user_when_the_platform_is_root() -> None:
    if AS_ROOT:
        assert (run_uid(1), run_uid(2)) == (RUN_UID_BASE + 1, RUN_UID_BASE + 2)
    else:
        assert run_uid(1) is None
    with pytest.raises(ValueError, match="deployment id 400000 is outside"):
        run_uid(400_000)


def test_a_private_dir_is_handed_to_its_user_without_following_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("not the deployment's")
    folder = tmp_path / "deployments" / "9"
    (folder / "pkg").mkdir(parents=True)
    (folder / "pkg" / "main.py").write_text("print('hi')")
    (folder / "link").symlink_to(outside)
    uid = run_uid(9)

    prepare_private_dir(folder, uid)

    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    owner = (os.geteuid(), os.getegid()) if uid is None else (uid, uid)
    for path in (folder, folder / "pkg", folder / "pkg" / "main.py"):
        assert (path.stat().st_uid, path.stat().st_gid) == owner
    assert (folder / "link").lstat().st_uid == owner[0]
    assert outside.stat().st_uid == os.geteuid()


def test_a_link_in_place_of_a_private_dir_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    (tmp_path / "9").symlink_to(elsewhere)

    with pytest.raises(ProcessError, match=r"cannot make .*/9 a private folder: .*symbolic link"):
        prepare_private_dir(tmp_path / "9", run_uid(9))

    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o755
    assert elsewhere.stat().st_uid == os.geteuid()
