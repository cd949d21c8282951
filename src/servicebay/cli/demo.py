"""`bay demo`: a seeded instance, served at once, printing everything a newcomer can try.

The server runs as a child `bay serve` process and the seeding goes through the same
HTTP API every client uses, so the demo shows the product as it is. Seeding only adds
what is missing, so a second `bay demo` reuses the instance and its keys (kept, mode
0600, in `demo.json` under the demo's home).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from secrets import token_urlsafe
from types import FrameType
from typing import Annotated, Any

import httpx
import typer
from rich.panel import Panel
from rich.text import Text

from servicebay.cli.client import Api, api_path
from servicebay.cli.config import read_private, write_private
from servicebay.cli.deploy import DeployApi
from servicebay.cli.instance import create_instance, instance_settings
from servicebay.cli.output import console, fail
from servicebay.fakes.instagram import FakeInstagram
from servicebay.fakes.slack import FakeSlack
from servicebay.runtime.bundle import build_bundle

HOME = Path(".bay-demo")
STATE = "demo.json"
LOG = "server.log"
SALES_DB = "sales.db"
READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class Person:
    email: str
    name: str
    team: str

    @property
    def variable(self) -> str:
        """The shell variable the panel suggests for this person's key, e.g. ANN_KEY."""
        return self.email.split("@")[0].upper() + "_KEY"


ADMIN = ("admin@example.com", "Demo Admin")
PEOPLE = (
    Person("ann@example.com", "Ann Analyst", "marketing"),
    Person("bo@example.com", "Bo Scientist", "data_science"),
)
GRANTS = (
    ("team:marketing", "service:instagram", ["invoke"]),
    ("team:marketing", "service:slack", ["invoke"]),
    ("team:marketing", "service:sales/customer", ["read"]),
    ("team:data_science", "service:sales", ["invoke"]),
    ("team:data_science", "app:sales_dashboard", ["invoke"]),
)
SECRET = ("INSTAGRAM_TOKEN", ["service:instagram"])
SLACK_SECRET = ("SLACK_BOT_TOKEN", ["service:slack"])
IG_USER = "17841400000000000"


def instagram_service(user_id: str) -> dict[str, Any]:
    """The article's `instagram` service: an `http` service in front of the Graph API for
    the business account `user_id` (the demo's fake, or Meta's own)."""
    return {
        "name": "instagram",
        "kind": "http",
        "description": "The team's Instagram business account, through the Graph API "
        "(in the demo: a local fake of it).",
        "secret": SECRET[0],
        "routes": {
            "get_follower_count": {
                "path": f"/{user_id}?fields=followers_count",
                "description": "How many accounts follow the account now: `followers_count`.",
            },
            "get_follower_count_by_date": {
                "path": f"/{user_id}/insights?metric=follower_count&period=day&since={{date}}",
                "description": "The Graph API's `follower_count` insight for a day: the "
                "accounts that started following that day, `data[0].values[0].value`.",
                "params": {"date": {"type": "date", "required": True, "description": "The day."}},
            },
        },
    }


SLACK_SERVICE: dict[str, Any] = {
    "name": "slack",
    "kind": "http",
    "description": "The team's Slack workspace, as the analytics bot (in the demo: a local "
    "fake of Slack's Web API).",
    "secret": SLACK_SECRET[0],
    "routes": {
        "post_message_to_channel": {
            "method": "POST",
            "path": "/api/chat.postMessage",
            "description": "Post a message to a channel as the bot (Slack's chat.postMessage).",
            "params": {
                "message": {"required": True, "description": "The message's text."},
                "channel_name": {"required": True, "description": "The channel, e.g. marketing."},
            },
            "body": {"channel": "{channel_name}", "text": "{message}"},
        }
    },
}
DEPLOYMENTS = Path(__file__).with_name("demo_deployments")
"""One deployment of each kind that runs code; `bay demo` deploys what is missing."""
REPORT = "weekly_report"
BUILD_TIMEOUT = 600.0
REPORT_TIMEOUT = 60.0
SALES = "sales"
SALES_URL_NAME = "SALES_DB_URL"
SALES_DAY = "2026-11-27"
SALES_SERVICE: dict[str, Any] = {
    "name": SALES,
    "kind": "sql",
    "description": "A sample business database: customers, their orders, daily activity",
    "secret": SALES_URL_NAME,
    "tables": {
        "customer": {
            "description": "Paying and free customers",
            "key": "email",
            "operations": ["read", "create", "update"],
        },
        "orders": {"description": "What customers ordered, and when", "operations": ["read"]},
    },
    "queries": {
        "daily_active_users": {
            "sql": "SELECT count(DISTINCT user_email) AS users FROM events WHERE day = :day",
            "params": {"day": "date"},
            "description": "Distinct users active on a day",
        }
    },
}
CUSTOMERS = (
    ("julius@nyknicks.com", "Julius Randle", "pro"),
    ("jalen@nyknicks.com", "Jalen Brunson", "pro"),
    ("josh@nyknicks.com", "Josh Hart", "free"),
    ("og@nyknicks.com", "OG Anunoby", "team"),
    ("mikal@nyknicks.com", "Mikal Bridges", "pro"),
    ("karl@nyknicks.com", "Karl-Anthony Towns", "team"),
    ("mitchell@nyknicks.com", "Mitchell Robinson", "free"),
    ("miles@nyknicks.com", "Miles McBride", "free"),
    ("precious@nyknicks.com", "Precious Achiuwa", "free"),
    ("cam@nyknicks.com", "Cameron Payne", "pro"),
    ("landry@nyknicks.com", "Landry Shamet", "free"),
    ("tyler@nyknicks.com", "Tyler Kolek", "free"),
    ("pacome@nyknicks.com", "Pacome Dadiet", "free"),
    ("ariel@nyknicks.com", "Ariel Hukporti", "team"),
    ("kevin@nyknicks.com", "Kevin McCullar", "free"),
    ("patrick@nyknicks.com", "Patrick Ewing", "pro"),
    ("walt@nyknicks.com", "Walt Frazier", "team"),
    ("willis@nyknicks.com", "Willis Reed", "pro"),
    ("bernard@nyknicks.com", "Bernard King", "free"),
    ("carmelo@nyknicks.com", "Carmelo Anthony", "pro"),
)


def demo(
    home: Annotated[Path, typer.Option("--home", help="The demo instance's folder.")] = HOME,
    port: Annotated[
        int, typer.Option("--port", min=1, max=65535, help="Port to serve on (127.0.0.1).")
    ] = 8600,
    reset: Annotated[
        bool, typer.Option("--reset", help="Delete the demo instance first and start afresh.")
    ] = False,
) -> None:
    """Serve a demo instance with users, teams, keys and grants; print what to try.

    It runs until Ctrl-C; running it again reuses the instance and its keys.
    """
    home = home.expanduser().resolve()
    for taken in (port, port + 1, port + 2):
        _ensure_port_free(taken)
    if reset:
        _reset(home)
    state = _prepare(home)
    url = f"http://127.0.0.1:{port}"
    signal.signal(signal.SIGTERM, _interrupt)
    console.print(f"Starting the demo server on {url} ...", style="dim")
    fakes = Fakes(port)
    with fakes, _server(home, port) as process:
        _wait_ready(url, process, home / LOG)
        api = Api(url, state["admin"]["key"])
        _seed(api, state, home / STATE, fakes)
        _deploy_all(api, state, home / STATE)
        console.print(_panel(url, home, state, fakes))
        sys.stdout.flush()
        try:
            code = process.wait()
        except KeyboardInterrupt:
            console.print("Stopping the demo server.")
            return
    fail(f"the demo server stopped by itself (exit code {code})", *_log_tail(home / LOG))


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM stops the demo like Ctrl-C does, so the server child is stopped too."""
    raise KeyboardInterrupt


def _reset(home: Path) -> None:
    if not home.exists():
        return
    if not (home / STATE).exists() and any(home.iterdir()):
        fail(f"refusing to delete {home}: it was not made by `bay demo` (no {STATE})")
    shutil.rmtree(home)


def _prepare(home: Path) -> dict[str, Any]:
    """The demo's state, creating the instance on first use."""
    path = home / STATE
    state = read_private(path)
    if state is None:
        if home.exists() and any(home.iterdir()):
            fail(f"{home} is not empty and was not made by `bay demo`", "Pass another --home.")
        console.print(f"Creating a demo instance in {home} ...", style="dim")
        state = {"admin": None, "keys": {}}
        write_private(path, state)
        created = create_instance(instance_settings(home, isolated=True), *ADMIN)
        state["admin"] = {"email": created.admin_email, "key": created.api_key}
        write_private(path, state)
    elif not state.get("admin"):
        fail(f"the demo instance in {home} is incomplete", "Start afresh: bay demo --reset")
    return state


def _ensure_port_free(port: int) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            fail(f"port {port} on 127.0.0.1 is in use", "Stop what uses it, or pass --port.")


@contextmanager
def _server(home: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A `bay serve` child for the demo home, stopped whatever happens to the parent."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("BAY_")}
    command = [sys.executable, "-m", "servicebay.cli.main", "serve", "--home", str(home)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with open(os.open(home / LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
        # Its own session: a terminal's Ctrl-C reaches only us, and we stop it once.
        process = subprocess.Popen(  # noqa: S603 - our interpreter, our arguments
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            fail("the demo server stopped while starting", *_log_tail(log))
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    fail(f"the demo server was not ready within {READY_TIMEOUT:.0f} s", *_log_tail(log))


def _log_tail(log: Path, lines: int = 15) -> list[str]:
    tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    return [*tail, f"(the whole log: {log})"]


def _key_works(url: str, key: str | None) -> bool:
    if not key:
        return False
    answer = httpx.get(f"{url}/api/v1/me", headers={"Authorization": f"Bearer {key}"})
    return answer.status_code == 200


class Fakes:
    """Local stand-ins for Instagram's Graph API and Slack's Web API, on the two ports
    after the demo's (so the services registered in the instance stay valid), each with a
    token made afresh for this run and stored as the service's secret."""

    def __init__(self, port: int) -> None:
        self.instagram = FakeInstagram(token=token_urlsafe(24), user_id=IG_USER, port=port + 1)
        self.slack = FakeSlack(
            token=f"xoxb-{token_urlsafe(24)}", channels={"marketing": "C0MARKETING"}, port=port + 2
        )

    def __enter__(self) -> Fakes:
        self.instagram.start()
        self.slack.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.instagram.stop()
        self.slack.stop()


def _seed(api: Api, state: dict[str, Any], path: Path, fakes: Fakes) -> None:
    """Add whatever of the demo's users, keys, grants, secrets and services is missing;
    the fakes' tokens are stored anew."""
    if not _key_works(api.url, state["admin"]["key"]):
        fail("the demo's admin key no longer works", "Start afresh: bay demo --reset")
    users = {user["email"] for user in api.collect(api_path("users"), {"include_disabled": "true"})}
    for person in PEOPLE:
        if person.email not in users:
            body = {"email": person.email, "name": person.name, "teams": [person.team]}
            api.request("POST", api_path("users"), json=body)
        if not _key_works(api.url, state["keys"].get(person.email)):
            body = {"user": person.email, "name": "demo"}
            state["keys"][person.email] = api.request("POST", api_path("keys"), json=body)["key"]
            write_private(path, state)
    granted = {(grant["principal"], grant["resource"]) for grant in api.collect(api_path("grants"))}
    for principal, resource, actions in GRANTS:
        if (principal, resource) not in granted:
            body = {"principal": principal, "resource": resource, "actions": actions}
            api.request("POST", api_path("grants"), json=body)
    stored = {secret["name"] for secret in api.collect(api_path("secrets"))}
    for (name, allow), fake in ((SECRET, fakes.instagram), (SLACK_SECRET, fakes.slack)):
        body = {"value": fake.token, "allow": allow}
        api.request("PUT", api_path("secrets", name), json=body)
    services = {service["name"] for service in api.collect(api_path("services"))}
    for document, base_url in (
        (instagram_service(IG_USER), fakes.instagram.base_url),
        (SLACK_SERVICE, fakes.slack.url),
    ):
        if document["name"] not in services:
            api.request("POST", api_path("services"), json={**document, "base_url": base_url})
    database = _sales_db(path.parent)
    if SALES_URL_NAME not in stored:
        body = {"value": f"sqlite:///{database}", "allow": [f"service:{SALES}"]}
        api.request("PUT", api_path("secrets", SALES_URL_NAME), json=body)
    if SALES not in services:
        api.request("POST", api_path("services"), json=SALES_SERVICE)


def _deploy_all(api: Api, state: dict[str, Any], path: Path) -> None:
    """Deploy the demo's folders that are not deployed yet, as `bay deploy` would, and run
    the weekly report once when it is new, so its spreadsheet and Slack post exist."""
    deployed = {row["name"] for row in api.collect(api_path("deployments"))}
    for folder in sorted(DEPLOYMENTS.iterdir()):
        if not folder.is_dir() or folder.name in deployed:
            continue
        bundle = build_bundle(folder)
        uploader = DeployApi(api.url, state["admin"]["key"])
        name = folder.name if (folder / "cron.json").exists() else None
        accepted = uploader.upload(bundle.data, f"{folder.name}.tar.gz", name, console)
        _wait_built(api, str(accepted["name"]), int(accepted["version"]))
        if folder.name == REPORT:
            run = api.request("POST", api_path("deployments", REPORT, "runs"))
            state["report_run"] = run["id"]
            write_private(path, state)
    if state.get("report_run"):
        _wait_run(api, state["report_run"])


def _wait_built(api: Api, name: str, number: int) -> None:
    """Until the version is built (its requirements installed): a deploy of the demo's own
    folders that fails is a bug of this release, reported with the build log."""
    path = api_path("deployments", name, "versions", str(number))
    deadline = time.monotonic() + BUILD_TIMEOUT
    with console.status(f"Building {name} (installing its requirements.txt) ..."):
        while time.monotonic() < deadline:
            version = api.request("GET", path)
            if version["status"] == "ready":
                console.print(f"Deployed {name} ({version['kind']}).", style="dim")
                return
            if version["status"] != "building":
                fail(
                    f"the demo's {name} did not build",
                    *str(version["build_log"]).splitlines()[-15:],
                )
            time.sleep(0.5)
    fail(f"the demo's {name} was still building after {BUILD_TIMEOUT:.0f} s")


def _wait_run(api: Api, run_id: str) -> None:
    deadline = time.monotonic() + REPORT_TIMEOUT
    with console.status(f"Running {REPORT} once ..."):
        while time.monotonic() < deadline:
            if api.request("GET", api_path("runs", run_id))["status"] not in ("queued", "running"):
                return
            time.sleep(0.3)


def _sales_db(home: Path) -> Path:
    """The demo's business database, made once: 20 customers, 50 orders, 5 days of events."""
    path = home / SALES_DB
    if path.exists():
        return path
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    customers = [
        (email, name, plan, f"2026-{1 + n % 10:02d}-{1 + n:02d} 09:{n:02d}:00")
        for n, (email, name, plan) in enumerate(CUSTOMERS)
    ]
    orders = [
        (1 + (n * 7) % len(CUSTOMERS), f"{5 + (n * 7919) % 29000 / 100:.2f}",
         f"2026-{1 + n % 11:02d}-{1 + (n * 3) % 28:02d}")
        for n in range(50)
    ]  # fmt: skip
    events = [
        (f"2026-11-{day:02d}", email)
        for day in range(24, 29)
        for n, (email, _, _) in enumerate(CUSTOMERS)
        if (n + day) % 3 != 0
    ]
    with sqlite3.connect(partial) as db:
        db.executescript(
            """
            CREATE TABLE customer (
                id INTEGER PRIMARY KEY, email VARCHAR(200) NOT NULL UNIQUE,
                name VARCHAR(100) NOT NULL, plan VARCHAR(20) NOT NULL DEFAULT 'free',
                created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP);
            CREATE TABLE orders (
                id INTEGER PRIMARY KEY,
                customer_id INTEGER NOT NULL REFERENCES customer (id),
                amount NUMERIC(10, 2) NOT NULL, ordered_on DATE NOT NULL);
            CREATE TABLE events (day DATE NOT NULL, user_email VARCHAR(200) NOT NULL);
            """
        )
        db.executemany(
            "INSERT INTO customer (email, name, plan, created_at) VALUES (?, ?, ?, ?)", customers
        )
        db.executemany(
            "INSERT INTO orders (customer_id, amount, ordered_on) VALUES (?, ?, ?)", orders
        )
        db.executemany("INSERT INTO events (day, user_email) VALUES (?, ?)", events)
    db.close()
    partial.chmod(0o600)
    partial.replace(path)
    return path


def _panel(url: str, home: Path, state: dict[str, Any], fakes: Fakes) -> Panel:
    admin = state["admin"]
    rights: dict[str, list[str]] = {}
    for principal, resource, actions in GRANTS:
        rights.setdefault(principal, []).append(f"may {', '.join(actions)} {resource}")
    ann, bo = PEOPLE
    who = []
    for p in PEOPLE:
        first, *more = rights.get(f"team:{p.team}", [""])
        who.append(f"  {p.email:<19} team {p.team:<13} {first}")
        who += [f"  {'':<19}      {'':<13} {line}" for line in more]
    sales = f'"$BAY_URL/{SALES}'
    lines = [
        f"ServiceBay is running at {url}",
        f"instance: {home} (server log: {LOG})",
        "",
        "Who is who:",
        f"  {admin['email']:<19} administrator",
        *who,
        "",
        "Their keys (a demo keeps them in demo.json; a real key is shown once):",
        f"  export BAY_URL={url}",
        f"  export BAY_API_KEY={admin['key']}",
        *(f"  export {p.variable}={state['keys'][p.email]}" for p in PEOPLE),
        "",
        "Then try:",
        f'  curl -H "Authorization: Bearer ${ann.variable}" $BAY_URL/api/v1/me',
        f'  curl -H "Authorization: Bearer ${bo.variable}" $BAY_URL/api/v1/users  # 403',
        '  curl -G "$BAY_URL/api/v1/permissions/check" \\',
        f'       -H "X-API-Key: $BAY_API_KEY" -d principal=user:{ann.email} \\',
        "       -d resource=service:instagram -d action=invoke",
        '  curl -H "X-API-Key: $BAY_API_KEY" "$BAY_URL/api/v1/audit?limit=5"',
        "",
        f"The sample database {SALES_DB}, served as the sql service {SALES}:",
        f'  curl -H "Authorization: Bearer ${ann.variable}" \\',
        f'       {sales}/customer/julius@nyknicks.com"',
        f'  curl -H "Authorization: Bearer ${bo.variable}" \\',
        f'       {sales}/orders?amount=gt.100&order=amount.desc&limit=5"',
        f'  curl -H "Authorization: Bearer ${bo.variable}" \\',
        f'       {sales}/queries/daily_active_users?day={SALES_DAY}"',
        f"  ({ann.variable} for orders or the query: 403, marketing may read customer only)",
        f"  {url}/docs in a browser: the API's documentation, {SALES} too",
        "",
        "Services in front of local fakes of the vendors (the article's names):",
        f'  curl -H "Authorization: Bearer ${ann.variable}" \\',
        '       "$BAY_URL/instagram/get_follower_count"',
        f"  (instagram: a fake Graph API at {fakes.instagram.url}; "
        f"slack: a fake Web API at {fakes.slack.url})",
        "",
        "Deployments, one of each kind that runs code (folders of `bay demo`'s own):",
        f"  {REPORT}: a cron job (Mondays 9 am New York) that wrote a spreadsheet and told Slack:",
        *(f"    #marketing got: {posted.text}" for posted in fakes.slack.messages[-1:]),
        f"    bay runs list --deployment {REPORT}",
        *(f"    bay runs artifacts {state['report_run']}" for _ in [0] if state.get("report_run")),
        "  hello: the article's webhook, public and synchronous:",
        '    curl -X POST $BAY_URL/hooks/hello -d \'{"from": "me"}\'',
        "  sales_dashboard: a Flask dashboard (data_science may see it):",
        f'    curl -H "Authorization: Bearer ${bo.variable}" $BAY_URL/apps/sales_dashboard/',
        "  bay deployments list",
        "",
        "  bay users list",
        f"  bay permissions check {ann.email} service:instagram invoke",
        f"  bay permissions check {bo.email} service:instagram invoke   # denied",
        f"  bay secrets list         # {SECRET[0]}: its value is never shown",
        "  bay audit --limit 10",
        "  bay audit verify",
        "",
        "Ctrl-C stops the server; `bay demo` again reuses this instance,",
        "`bay demo --reset` starts over.",
    ]
    return Panel(Text("\n".join(lines)), title="ServiceBay demo", expand=False)
