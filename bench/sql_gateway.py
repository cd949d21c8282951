"""ServiceBay's `sql` service against a bare FastAPI + SQLAlchemy endpoint, one run.

Both serve the same PostgreSQL table with one worker process each; `wrk` drives each in
turn with the same connections and duration. ServiceBay authenticates the key, checks
the grant, audits the call (its metadata database on the same PostgreSQL) and only then
queries. Prints requests per second and p50/p99 latency of each, and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.support import free_port, start_servicebay, wait_ready, wrk  # noqa: E402

TARGET_RPS_RATIO = 0.7
TARGET_P99_RATIO = 2.0


@dataclass
class Result:
    target: str
    endpoint: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms_per_request: float
    """The server process's own CPU time per answered request: steadier than req/s when
    other work shares the machine, and what decides req/s when the server is CPU-bound."""


LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


async def execute(url: str, *statements: str) -> None:
    parsed = make_url(url)
    connection = await asyncpg.connect(
        host=parsed.host, port=parsed.port or 5432, user=parsed.username,
        password=parsed.password, database=parsed.database or "postgres",
    )  # fmt: skip
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


def database(admin_url: str, name: str) -> str:
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(target: str, endpoint: str, url: str, args: argparse.Namespace,
            headers: dict[str, str], pid: int) -> Result:  # fmt: skip
    answer = httpx.get(url, headers=headers, timeout=10)
    if answer.status_code != 200:
        raise SystemExit(f"{target} {url} answered {answer.status_code}: {answer.text}")
    wrk(url, duration=2, connections=args.connections, headers=headers)  # warm up
    cpu_before = cpu_seconds(pid)
    output = wrk(url, duration=args.duration, connections=args.connections, headers=headers)
    cpu = cpu_seconds(pid) - cpu_before
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    answered = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    latency = {p: float(v) * UNITS[u] for p, v, u in LATENCY.findall(output)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return Result(target, endpoint, rps, latency["50"], latency["99"],
                  int(errors.group(1)) if errors else 0,
                  1000 * cpu / max(answered, 1))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres-url", default=os.environ.get(
        "BAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))  # fmt: skip
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--hold", type=int, default=0, metavar="SECONDS",
                        help="before measuring, keep both servers up this long (to attach "
                        "a profiler; their PIDs are printed)")  # fmt: skip
    args = parser.parse_args()
    # A terminated benchmark still stops its servers and drops its databases.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if not shutil.which("wrk"):
        raise SystemExit("this benchmark needs wrk: apt-get install wrk")

    suffix = secrets.token_hex(4)
    data_db, meta_db = f"bench_data_{suffix}", f"bench_meta_{suffix}"
    data_url, meta_url = database(args.postgres_url, data_db), database(args.postgres_url, meta_db)
    asyncio.run(
        execute(args.postgres_url, f"CREATE DATABASE {data_db}", f"CREATE DATABASE {meta_db}")
    )
    processes: list[subprocess.Popen[bytes]] = []
    try:
        asyncio.run(execute(data_url, """
            CREATE TABLE customer (
                id serial PRIMARY KEY, email varchar(200) NOT NULL UNIQUE,
                name varchar(100) NOT NULL, plan varchar(20) NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now())""",
            f"""INSERT INTO customer (email, name, plan)
                SELECT 'user' || i || '@example.com', 'User ' || i,
                       (ARRAY['free', 'pro', 'team'])[1 + i % 3]
                FROM generate_series(1, {args.rows}) AS i"""))  # fmt: skip
        home = Path(tempfile.mkdtemp(prefix="bay-bench-"))
        logs = home / "logs"
        logs.mkdir()

        baseline_port = free_port()
        baseline_env = {**os.environ, "BASELINE_DATABASE_URL": make_url(data_url).set(
            drivername="postgresql+asyncpg").render_as_string(hide_password=False)}  # fmt: skip
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bench.baseline_app:app", "--port",
             str(baseline_port), "--log-level", "warning", "--no-access-log"],
            cwd=ROOT, env=baseline_env, stdout=(logs / "baseline.log").open("wb"),
            stderr=subprocess.STDOUT))  # fmt: skip
        baseline = f"http://127.0.0.1:{baseline_port}"

        bay, servicebay, admin_key = start_servicebay(
            home, logs / "servicebay.log", database_url=meta_url, log_level="INFO"
        )
        processes.append(bay)
        wait_ready(f"{baseline}/docs", processes[0])

        with httpx.Client(base_url=servicebay, headers={"Authorization": f"Bearer {admin_key}"},
                          timeout=30) as admin:  # fmt: skip
            admin.put(
                "/api/v1/secrets/BENCH_DB", json={"value": data_url, "allow": ["service:sales"]}
            ).raise_for_status()
            admin.post("/api/v1/services", json={
                "name": "sales", "kind": "sql", "description": "Benchmark data",
                "secret": "BENCH_DB", "tables": {"customer": {"key": "email"}},
            }).raise_for_status()  # fmt: skip
            admin.post(
                "/api/v1/users",
                json={"email": "analyst@example.com", "name": "Analyst", "teams": ["marketing"]},
            ).raise_for_status()
            admin.post("/api/v1/grants", json={"principal": "team:marketing",
                       "resource": "service:sales/customer", "actions": ["read"]}
                       ).raise_for_status()  # fmt: skip
            analyst_key = admin.post("/api/v1/keys", json={"user": "analyst@example.com"}
                                     ).json()["key"]  # fmt: skip

        auth = {"Authorization": f"Bearer {analyst_key}"}
        if args.hold:
            print(f"baseline pid {processes[0].pid} at {baseline}, servicebay pid "
                  f"{processes[1].pid} at {servicebay}, key {analyst_key}", flush=True)  # fmt: skip
            time.sleep(args.hold)
        email = f"user{args.rows // 2}@example.com"
        base_pid, bay_pid = processes[0].pid, processes[1].pid
        results = [
            measure("baseline", "get by key", f"{baseline}/customer/{email}", args, {}, base_pid),
            measure("servicebay", "get by key", f"{servicebay}/sales/customer/{email}", args,
                    auth, bay_pid),
            measure("baseline", "filtered list", f"{baseline}/customer?plan=pro&limit=20", args,
                    {}, base_pid),
            measure("servicebay", "filtered list",
                    f"{servicebay}/sales/customer?plan=pro&limit=20&order=id", args, auth,
                    bay_pid),
        ]  # fmt: skip
        report(results, args)
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=15)
        asyncio.run(execute(args.postgres_url,
                            f"DROP DATABASE IF EXISTS {data_db} WITH (FORCE)",
                            f"DROP DATABASE IF EXISTS {meta_db} WITH (FORCE)"))  # fmt: skip


def report(results: list[Result], args: argparse.Namespace) -> None:
    by = {(result.target, result.endpoint): result for result in results}
    verdicts = []
    for endpoint in ("get by key", "filtered list"):
        base, ours = by[("baseline", endpoint)], by[("servicebay", endpoint)]
        rps_ratio, p99_ratio = ours.rps / base.rps, ours.p99_ms / base.p99_ms
        verdicts.append({
            "endpoint": endpoint, "rps_ratio": round(rps_ratio, 3),
            "p99_ratio": round(p99_ratio, 3),
            "cpu_ratio": round(ours.cpu_ms_per_request / base.cpu_ms_per_request, 3),
            "meets_target": rps_ratio >= TARGET_RPS_RATIO and p99_ratio <= TARGET_P99_RATIO,
        })  # fmt: skip
    if args.json:
        print(json.dumps({"results": [asdict(r) for r in results], "verdicts": verdicts}, indent=2))
        return
    print(f"{args.connections} connections, {args.duration} s each, one worker per server\n")
    print(f"{'target':<12}{'endpoint':<16}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}"
          f"{'cpu ms/req':>12}")  # fmt: skip
    for r in results:
        print(f"{r.target:<12}{r.endpoint:<16}{r.rps:>10.0f}{r.p50_ms:>10.2f}{r.p99_ms:>10.2f}"
              f"{r.errors:>8}{r.cpu_ms_per_request:>12.3f}")  # fmt: skip
    print()
    for verdict in verdicts:
        status = "meets" if verdict["meets_target"] else "MISSES"
        print(f"{verdict['endpoint']:<16} throughput {verdict['rps_ratio']:.2f}x "
              f"(target >= {TARGET_RPS_RATIO}x), p99 {verdict['p99_ratio']:.2f}x "
              f"(target <= {TARGET_P99_RATIO}x): {status} the target; server CPU per request "
              f"{verdict['cpu_ratio']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
