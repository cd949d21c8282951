"""Trivial runs per second through ServiceBay's queue, against a bare spawn loop, one run.

ServiceBay (`bay serve`, one process, `--workers` runs at once) runs a trivial cron job
deployed through the API (`concurrency: allow`), triggered `--runs` times through the API
as fast as the API takes them. Every run is what any run is: claimed from the queue, given
its own key (revoked at its end), a private copy of its folder, its logs stored, its ending
recorded, forked from the deployment's warm interpreter as the deployment's user.

The baseline is a bare asyncio loop that starts the same script with the same interpreter,
`--workers` at a time, with none of that: what a run costs as a fresh interpreter.

Prints runs per second for both (ServiceBay's from the first trigger to the last run's
end, as recorded on the runs) and the ratio; the target is 100 runs per second or more.
Also ServiceBay's own CPU time per run (its process's user + system time), which other
load on the machine changes little: what a run costs the platform. Nothing is asserted.

    .venv/bin/python bench/run_throughput.py --runs 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.support import (  # noqa: E402
    POSTGRES_URL_HELP,
    clean_up,
    create_database,
    deploy_folder,
    start_servicebay,
)

TARGET_RUNS_PER_SECOND = 100.0
NAME = "trivial"
SCRIPT = 'print("ok")\n'
ENDED = {"succeeded", "failed", "timed_out", "cancelled", "skipped"}


def deploy(admin: httpx.Client, parent: Path) -> str:
    """Deploy the trivial cron job and wait for its build; its environment's digest."""
    folder = parent / NAME
    folder.mkdir()
    (folder / "README.md").write_text(f"# {NAME}\n\nPrints ok.\n")
    (folder / "requirements.txt").write_text("")
    (folder / "job.py").write_text(SCRIPT)
    config = {"cron_frequency": "0 0 1 1 *", "script_to_run": "job.py", "concurrency": "allow"}
    (folder / "cron.json").write_text(json.dumps(config))
    return deploy_folder(admin, folder, name=NAME)


async def trigger(base_url: str, key: str, count: int, in_flight: int) -> list[str]:
    """Queue `count` runs through the API, `in_flight` requests at a time; their ids."""
    ids: list[str] = []
    numbers = iter(range(count))
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as client:

        async def sender() -> None:
            for _ in numbers:
                answer = await client.post(f"/api/v1/deployments/{NAME}/runs")
                answer.raise_for_status()
                ids.append(answer.json()["id"])

        await asyncio.gather(*(sender() for _ in range(in_flight)))
    return ids


def ended_runs(admin: httpx.Client, since: datetime) -> list[dict[str, Any]]:
    """Every run created since `since`, once none is queued or running any more (asked
    for with one small page per status, so that waiting costs the server little)."""
    base: dict[str, str | int] = {"deployment": NAME, "since": since.isoformat(), "limit": 1}
    while any(
        admin.get("/api/v1/runs", params={**base, "status": status}).json()["data"]
        for status in ("queued", "running")
    ):
        time.sleep(0.2)
    runs: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {**base, "limit": 500, **({"cursor": cursor} if cursor else {})}
        listed = admin.get("/api/v1/runs", params=params).json()
        runs += listed["data"]
        cursor = listed.get("next")
        if not cursor:
            return runs


async def spawn_loop(python: str, script: Path, count: int, workers: int) -> float:
    """Runs per second of the bare baseline: a fresh interpreter per run."""
    slots = asyncio.Semaphore(workers)

    async def one() -> None:
        async with slots:
            process = await asyncio.create_subprocess_exec(
                python, str(script), stdout=asyncio.subprocess.PIPE, cwd=script.parent
            )
            await process.communicate()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500, help="runs triggered")
    parser.add_argument("--workers", type=int, default=4, help="runs at once (BAY_WORKERS)")
    parser.add_argument("--in-flight", type=int, default=8, help="trigger requests at once")
    parser.add_argument("--postgres-url", help=POSTGRES_URL_HELP)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    # A terminated benchmark still stops its server and removes its folder.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))

    root = Path(tempfile.mkdtemp(prefix="bay-bench-runs-"))
    root.chmod(0o755)  # the run users must pass on their way to their environments
    server: subprocess.Popen[bytes] | None = None
    database_url = asyncio.run(create_database(args.postgres_url)) if args.postgres_url else None
    try:
        server, base_url, admin_key = start_servicebay(
            root / "home", root / "servicebay.log", database_url=database_url,
            workers=str(args.workers),
        )  # fmt: skip

        with httpx.Client(base_url=base_url, timeout=60,
                          headers={"Authorization": f"Bearer {admin_key}"}) as admin:  # fmt: skip
            digest = deploy(admin, root)
            asyncio.run(trigger(base_url, admin_key, 1, 1))  # the warm interpreter starts
            ended_runs(admin, datetime.fromisoformat("2000-01-01T00:00:00+00:00"))
            since = datetime.now().astimezone()
            cpu_before = cpu_seconds(server.pid)
            first = time.perf_counter()
            asyncio.run(trigger(base_url, admin_key, args.runs, args.in_flight))
            queued = time.perf_counter() - first
            all_in = datetime.now().astimezone()
            cpu_all_in = cpu_seconds(server.pid)
            runs = ended_runs(admin, since)
            cpu = Cpu(cpu_all_in - cpu_before, cpu_seconds(server.pid) - cpu_all_in)

        python = root / "home" / "runtime" / "environments" / digest / "bin" / "python"
        script = root / NAME / "job.py"
        baseline = asyncio.run(spawn_loop(str(python), script, args.runs, args.workers))
        report(runs, queued, all_in, baseline, cpu, args)
    finally:
        clean_up([server] if server is not None else [], database_url, root)


@dataclass(frozen=True)
class Cpu:
    """ServiceBay's CPU seconds while the triggers came in, and after (the worker alone)."""

    triggering: float
    draining: float


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process has used: ServiceBay's cost, whatever else
    the machine is doing (the scripts run in other processes)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(
    runs: list[dict[str, Any]],
    queued: float,
    all_in: datetime,
    baseline: float,
    cpu: Cpu,
    args: Any,
) -> None:
    created = [datetime.fromisoformat(run["created_at"]) for run in runs]
    finished = [datetime.fromisoformat(run["finished_at"]) for run in runs]
    span = (max(finished) - min(created)).total_seconds()
    # Once every trigger is in, the worker drains the queue alone: its own rate.
    drained = [end for end in finished if end > all_in]
    drain = len(drained) / (max(finished) - all_in).total_seconds() if len(drained) > 20 else 0.0
    cpu_per_run = (cpu.triggering + cpu.draining) / len(runs)
    drain_cpu_per_run = cpu.draining / len(drained) if len(drained) > 20 else 0.0
    durations = [
        (datetime.fromisoformat(run["finished_at"]) - datetime.fromisoformat(run["started_at"]))
        .total_seconds() * 1000
        for run in runs
        if run["started_at"]
    ]  # fmt: skip
    statuses: dict[str, int] = {}
    for run in runs:
        statuses[run["status"]] = statuses.get(run["status"], 0) + 1
    ours = len(runs) / span
    result = {
        "runs": len(runs),
        "statuses": statuses,
        "workers": args.workers,
        "servicebay_runs_per_second": round(ours, 1),
        "triggers_per_second": round(len(runs) / queued, 1),
        "drain_runs_per_second": round(drain, 1),
        "run_p50_ms": round(statistics.median(durations), 1),
        "servicebay_cpu_ms_per_run": round(cpu_per_run * 1000, 2),
        "drain_cpu_ms_per_run": round(drain_cpu_per_run * 1000, 2),
        "baseline_runs_per_second": round(baseline, 1),
        "ratio": round(ours / baseline, 2),
        "meets_target": ours >= TARGET_RUNS_PER_SECOND and statuses == {"succeeded": len(runs)},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{len(runs)} trivial runs, {args.workers} at once; runs ended: {statuses}")
    print(f"  servicebay (API trigger -> queue -> run)   {ours:7.1f} runs/s   "
          f"(triggers taken at {result['triggers_per_second']}/s, "
          f"each run p50 {result['run_p50_ms']} ms start to end)")  # fmt: skip
    print(f"    ServiceBay's CPU time per run (trigger, claim, run, ending): "
          f"{cpu_per_run * 1000:.1f} ms")  # fmt: skip
    if drain:
        print(f"  once every trigger was in (the worker alone) {drain:7.1f} runs/s   "
              f"(CPU time per run {drain_cpu_per_run * 1000:.1f} ms)")  # fmt: skip
    print(f"  bare loop, python per run                 {baseline:7.1f} runs/s")
    verdict = "meets" if result["meets_target"] else "MISSES"
    print(f"\nservicebay: {ours:.1f} runs/s {verdict} the target of {TARGET_RUNS_PER_SECOND:.0f}; "
          f"{ours / baseline:.2f}x the bare loop")  # fmt: skip


if __name__ == "__main__":
    main()
