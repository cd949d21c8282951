"""A trivial webhook script run per call: a fresh interpreter against the zygote's fork.

Each call is what the webhook path does around a run: write the request file, run the
script (the article's style: `from internal_sdk import webhook_response`, as the
deployment's user when run as root, with the staged SDK on PYTHONPATH), read the answer
file. Prints p50/p95/p99 per call for `run_process` (the baseline: a new interpreter per
call) and for a warm zygote, one call at a time, then the zygote's calls per second with
several at once. The target is a p50 under 25 ms through the zygote. Nothing is asserted.

    .venv/bin/python bench/runner_latency.py --calls 300 --concurrency 4
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from servicebay.runtime.builder import find_interpreter
from servicebay.runtime.process import ProcessResult, ProcessSpec, prepare_private_dir, run_process
from servicebay.runtime.process import run_uid as deployment_uid
from servicebay.runtime.sdk_stage import stage_sdk
from servicebay.runtime.zygote import Zygote

TARGET_P50_MS = 25.0
SCRIPT = """\
from internal_sdk import webhook_response
from servicebay.webhook import request

webhook_response.send_response(data={"hello": request.args.get("name", "world")})
"""
REQUEST = {
    "method": "GET",
    "path": "/",
    "query": [["name", "bench"]],
    "headers": [],
    "body_base64": "",
}

Run = Callable[[ProcessSpec], Awaitable[ProcessResult]]


class Deployment:
    """A deployment folder with the script, its user, and the staged SDK."""

    def __init__(self, root: Path) -> None:
        root.chmod(0o711)
        self.uid = deployment_uid(1)
        self.sdk = stage_sdk(root / "sdk")
        self.sdk.chmod(0o755)
        self.folder = root / "deployment"
        self.folder.mkdir()
        (self.folder / "hook.py").write_text(SCRIPT)
        prepare_private_dir(self.folder, self.uid)
        self.python = find_interpreter(self.uid, cwd=self.folder).path
        self.calls = 0

    def spec(self) -> tuple[ProcessSpec, Path]:
        """A spec for the next call, and the file its answer will be in."""
        self.calls += 1
        request = self.folder / f"request-{self.calls}.json"
        request.write_text(json.dumps(REQUEST))
        answer = self.folder / f"answer-{self.calls}.json"
        env = {
            "PYTHONPATH": str(self.sdk),
            "BAY_WEBHOOK_REQUEST": str(request),
            "BAY_WEBHOOK_RESPONSE": str(answer),
        }
        spec = ProcessSpec([self.python, "hook.py"], self.folder, env, uid=self.uid)
        return spec, answer


async def call(deployment: Deployment, run: Run) -> float:
    """One webhook call's run, in milliseconds; fails loudly if the script did not answer."""
    spec, answer = deployment.spec()
    started = time.perf_counter()
    result = await run(spec)
    body = json.loads(answer.read_text())["body_base64"]
    elapsed = (time.perf_counter() - started) * 1000
    if result.exit_code != 0 or json.loads(base64.b64decode(body)) != {"hello": "bench"}:
        raise RuntimeError(f"the script failed: {result.describe()}\n{result.lines}")
    return elapsed


async def one_at_a_time(deployment: Deployment, run: Run, calls: int) -> list[float]:
    await call(deployment, run)  # warm the page cache
    return [await call(deployment, run) for _ in range(calls)]


async def all_together(
    deployment: Deployment, run: Run, calls: int, concurrency: int
) -> tuple[float, list[float]]:
    """Calls per second with `concurrency` calls in flight, and each call's time."""
    queue = iter(range(calls))
    timings: list[float] = []

    async def worker() -> None:
        for _ in queue:
            timings.append(await call(deployment, run))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return calls / (time.perf_counter() - started), timings


def percentiles(timings: list[float]) -> str:
    cuts = statistics.quantiles(timings, n=100)
    return f"p50 {cuts[49]:6.1f} ms   p95 {cuts[94]:6.1f} ms   p99 {cuts[98]:6.1f} ms"


async def main(calls: int, concurrency: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="bay-bench-runner-"))
    try:
        deployment = Deployment(root)
        print(f"interpreter {deployment.python}, run uid {deployment.uid}, {calls} calls")
        fresh = await one_at_a_time(deployment, run_process, max(calls // 5, 20))
        print(f"run_process (new interpreter) {percentiles(fresh)}")
        zygote = Zygote(
            deployment.python, deployment.folder, {"PYTHONPATH": str(deployment.sdk)},
            uid=deployment.uid,
        )  # fmt: skip
        async with zygote:
            warm = await one_at_a_time(deployment, zygote.run, calls)
            print(f"zygote, one at a time         {percentiles(warm)}")
            rate, loaded = await all_together(deployment, zygote.run, calls, concurrency)
            print(f"zygote, {concurrency} at once            {percentiles(loaded)}")
            print(f"zygote throughput             {rate:6.0f} calls/s")
        p50 = statistics.median(warm)
        verdict = "meets" if p50 < TARGET_P50_MS else "misses"
        print(
            f"zygote p50 {p50:.1f} ms {verdict} the {TARGET_P50_MS:g} ms target "
            f"({statistics.median(fresh) / p50:.1f}x faster than a new interpreter)"
        )
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=4)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.calls, arguments.concurrency))
