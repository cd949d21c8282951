"""A sync webhook's round trip through ServiceBay against bare endpoints, in one run.

ServiceBay (`bay serve`, one process) serves a trivial webhook deployed through the API, the
way the article writes it (`from internal_sdk import webhook_response`, answering
`{"hello": "world"}`), once `public` and once behind an API key with a grant. Each call is a
recorded run: authenticated, audited, its own key issued and revoked, its log stored, the
script forked from the deployment's warm interpreter as the deployment's user.

Two bare Starlette endpoints in one uvicorn worker are the baselines, with none of that:
`direct` answers `{"hello": "world"}` itself (the floor of any HTTP answer on this
machine), and `spawn` starts the same script with the same interpreter per request and
sends its answer file back (a webhook without a warm interpreter).

Latency is measured one call at a time (p50, p99 over `--calls`); throughput with `wrk`
and `--connections` calls in flight. Prints each and the ratios; the target is a p50
under 25 ms for ServiceBay. Nothing is asserted.

    .venv/bin/python bench/webhook_latency.py --calls 300 --duration 10 --connections 4
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.support import (  # noqa: E402
    POSTGRES_URL_HELP,
    clean_up,
    create_database,
    deploy_folder,
    free_port,
    start_servicebay,
    wait_ready,
    wrk,
)

TARGET_P50_MS = 25.0
HELLO = {"hello": "world"}
SCRIPT = """\
from internal_sdk import webhook_response

webhook_response.send_response(
    data={"hello": "world"}, headers={"content-type": "application/json"}, status_code=200
)
"""
CALL = {"method": "GET", "path": "/", "query": [], "headers": [], "body_base64": ""}


# --- the baseline (run by uvicorn as `bench.webhook_latency:baseline`) ----------------------


async def direct(_: Request) -> Response:
    return JSONResponse(HELLO)


async def spawn(_: Request) -> Response:
    """The script in a new interpreter per call, exchanging the same files as a run."""
    folder = Path(tempfile.mkdtemp(prefix="call-", dir=os.environ.get("BASELINE_TMP")))
    try:
        (folder / "request.json").write_text(json.dumps(CALL))
        env = {
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": os.environ["BASELINE_SDK"],
            "BAY_WEBHOOK_REQUEST": str(folder / "request.json"),
            "BAY_WEBHOOK_RESPONSE": str(folder / "response.json"),
        }
        process = await asyncio.create_subprocess_exec(
            os.environ["BASELINE_PYTHON"], "-c", SCRIPT, cwd=folder, env=env
        )
        await process.wait()
        answer = json.loads((folder / "response.json").read_text())
        return Response(
            base64.b64decode(answer["body_base64"]),
            status_code=answer["status_code"],
            headers=dict(answer["headers"]),
        )
    finally:
        shutil.rmtree(folder)


baseline = Starlette(routes=[Route("/direct", direct), Route("/spawn", spawn)])


# --- measuring ------------------------------------------------------------------------------


@dataclass
class Result:
    target: str
    p50_ms: float
    p99_ms: float
    rps: float
    errors: int


def one_at_a_time(url: str, headers: dict[str, str], calls: int) -> tuple[list[float], int]:
    """Milliseconds per call, each call after the last, and how many answers were wrong
    (the first one is printed)."""
    timings, wrong = [], 0
    with httpx.Client(headers=headers, timeout=30) as client:
        for _ in range(calls // 10):  # warm up: caches, the warm interpreter, the page cache
            client.get(url)
        for _ in range(calls):
            started = time.perf_counter()
            answer = client.get(url)
            timings.append((time.perf_counter() - started) * 1000)
            if answer.status_code != 200 or _parsed(answer) != HELLO:
                if not wrong:
                    print(f"  {url} answered {answer.status_code}: {answer.text}")
                wrong += 1
    return timings, wrong


def _parsed(answer: httpx.Response) -> object:
    try:
        return answer.json()
    except ValueError:
        return answer.text


def measure(target: str, url: str, headers: dict[str, str], args: argparse.Namespace) -> Result:
    timings, wrong = one_at_a_time(url, headers, args.calls)
    cuts = statistics.quantiles(timings, n=100)
    output = wrk(url, duration=args.duration, connections=args.connections, headers=headers)
    rps = float(output.split("Requests/sec:")[1].split()[0])
    failed = output.split("Non-2xx or 3xx responses:")
    errors = wrong + (int(failed[1].split()[0]) if len(failed) > 1 else 0)
    result = Result(target, cuts[49], cuts[98], rps, errors)
    print(f"  {target:<32} p50 {result.p50_ms:7.1f} ms  p99 {result.p99_ms:7.1f} ms  "
          f"{result.rps:7.0f} req/s", flush=True)  # fmt: skip
    return result


# --- the servers ----------------------------------------------------------------------------


def deploy(admin: httpx.Client, parent: Path, name: str, auth: str) -> str:
    """Deploy the trivial webhook `name` and wait for its build; its environment's digest."""
    folder = parent / name
    folder.mkdir()
    (folder / "README.md").write_text(f"# {name}\n\nAnswers hello world.\n")
    (folder / "requirements.txt").write_text("")
    (folder / "hook.py").write_text(SCRIPT)
    (folder / "webhook.json").write_text(
        json.dumps({"sub_domain": name, "script_to_run": "hook.py", "auth": auth})
    )
    return deploy_folder(admin, folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="calls timed one at a time")
    parser.add_argument("--duration", type=int, default=10, help="seconds of wrk per target")
    parser.add_argument("--connections", type=int, default=4, help="wrk's calls in flight")
    parser.add_argument("--postgres-url", help=POSTGRES_URL_HELP)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("this benchmark needs wrk: apt-get install wrk")

    root = Path(tempfile.mkdtemp(prefix="bay-bench-hooks-"))
    root.chmod(0o755)  # the run users must pass on their way to their environments
    logs = root / "logs"
    logs.mkdir()
    processes: list[subprocess.Popen[bytes]] = []
    database_url = asyncio.run(create_database(args.postgres_url)) if args.postgres_url else None
    try:
        server, servicebay, admin_key = start_servicebay(
            root / "home", logs / "servicebay.log", database_url=database_url
        )
        processes.append(server)

        with httpx.Client(base_url=servicebay, timeout=30,
                          headers={"Authorization": f"Bearer {admin_key}"}) as admin:  # fmt: skip
            digest = deploy(admin, root, "hello_public", "public")
            deploy(admin, root, "hello_keyed", "api_key")
            admin.post("/api/v1/users", json={"email": "caller@example.com", "name": "Caller"}
                       ).raise_for_status()  # fmt: skip
            admin.post("/api/v1/grants", json={"principal": "user:caller@example.com",
                       "resource": "webhook:hello_keyed", "actions": ["invoke"]}
                       ).raise_for_status()  # fmt: skip
            caller_key = admin.post("/api/v1/keys", json={"user": "caller@example.com"}
                                    ).json()["key"]  # fmt: skip

        python = root / "home" / "runtime" / "environments" / digest / "bin" / "python"
        baseline_port = free_port()
        baseline_env = {
            **os.environ,
            "BASELINE_PYTHON": str(python),
            "BASELINE_SDK": str(root / "home" / "runtime" / "sdk"),
            "BASELINE_TMP": str(root),
        }
        processes.append(subprocess.Popen(  # noqa: S603 - our own interpreter
            [sys.executable, "-m", "uvicorn", "bench.webhook_latency:baseline", "--port",
             str(baseline_port), "--log-level", "warning", "--no-access-log"],
            cwd=ROOT, env=baseline_env, stdout=(logs / "baseline.log").open("wb"),
            stderr=subprocess.STDOUT))  # fmt: skip
        bare = f"http://127.0.0.1:{baseline_port}"
        wait_ready(f"{bare}/direct", processes[1])

        print(f"{args.calls} calls one at a time, then wrk -c{args.connections} for "
              f"{args.duration} s; interpreter {python.resolve()}")  # fmt: skip
        keyed = {"Authorization": f"Bearer {caller_key}"}
        results = [
            measure("bare endpoint, direct answer", f"{bare}/direct", {}, args),
            measure("bare endpoint, python per call", f"{bare}/spawn", {}, args),
            measure("servicebay webhook, public", f"{servicebay}/hooks/hello_public", {}, args),
            measure("servicebay webhook, api_key", f"{servicebay}/hooks/hello_keyed", keyed,
                    args),
        ]  # fmt: skip
        report(results)
    finally:
        clean_up(processes, database_url, root)


def report(results: list[Result]) -> None:
    direct, spawned, *ours = results
    print()
    for result in ours:
        verdict = "meets" if result.p50_ms < TARGET_P50_MS else "MISSES"
        print(f"{result.target}: p50 {result.p50_ms:.1f} ms {verdict} the {TARGET_P50_MS:g} ms "
              f"target; {spawned.p50_ms / result.p50_ms:.1f}x faster than a python per call "
              f"(p50), {result.p50_ms - direct.p50_ms:.1f} ms over a direct answer; "
              f"throughput {result.rps / spawned.rps:.1f}x the python-per-call endpoint's, "
              f"{result.rps / direct.rps:.2f}x the direct answer's; "
              f"{result.errors} errors")  # fmt: skip


if __name__ == "__main__":
    main()
