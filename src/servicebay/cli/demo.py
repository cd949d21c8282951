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
import stat
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
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
from servicebay.connectors import CONNECTORS, configured
from servicebay.fakes.github import FakeGitHub
from servicebay.fakes.instagram import FakeInstagram
from servicebay.fakes.salesforce import FakeSalesforce
from servicebay.fakes.slack import FakeSlack
from servicebay.fakes.smtp import FakeSMTP
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
    ("team:marketing", "service:email", ["invoke"]),
    ("team:marketing", "service:spreadsheets", ["invoke"]),
    ("team:marketing", "service:sales/customer", ["read"]),
    ("team:data_science", "service:sales", ["invoke"]),
    ("team:data_science", "service:salesforce", ["invoke"]),
    ("team:data_science", "service:github", ["invoke"]),
    ("team:data_science", "service:spreadsheets/read_rows", ["read"]),
    ("team:data_science", "app:sales_dashboard", ["invoke"]),
)
IG_USER = "17841400000000000"
FAKES = "fakes"
"""The demo's folder for what the connectors read of the fakes (the SMTP certificate)."""
SPREADSHEETS = "spreadsheets"
"""The demo's folder of spreadsheets, served by the spreadsheets connector."""
CONNECTOR_COPIES = "connectors"
"""The connectors' folders as the demo deploys them: each pointed at its fake."""
MOUNT_TIMEOUT = 60.0


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
    for taken in Fakes.ports(port):
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
        _deploy_all(api, state, home / STATE, fakes)
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
    """Local stand-ins for the vendors the connectors call, on the ports after the demo's
    (instagram, slack, salesforce, github, then the mail server), so the addresses the
    deployed connectors keep stay valid. Their credentials are the fakes' own demo values,
    the same on every start: a code service reads its secrets when its process starts,
    which on a second `bay demo` is before the demo could store new ones."""

    def __init__(self, port: int) -> None:
        self.instagram = FakeInstagram(user_id=IG_USER, port=port + 1)
        self.slack = FakeSlack(channels={"marketing": "C0MARKETING"}, port=port + 2)
        self.salesforce = FakeSalesforce(port=port + 3)
        self.github = FakeGitHub(port=port + 4)
        self.smtp = FakeSMTP(port=port + 5)

    @staticmethod
    def ports(port: int) -> range:
        """The demo's port and its fakes'."""
        return range(port, port + 6)

    def __enter__(self) -> Fakes:
        for fake in (self.instagram, self.slack, self.salesforce, self.github, self.smtp):
            fake.start()
        return self

    def __exit__(self, *_: object) -> None:
        for fake in (self.instagram, self.slack, self.salesforce, self.github, self.smtp):
            fake.stop()

    def secrets(self) -> dict[str, tuple[str, str]]:
        """Each connector's secrets: name to (value, the connector allowed to open it)."""
        assert self.smtp.user is not None
        return {
            "INSTAGRAM_ACCESS_TOKEN": (self.instagram.token, "instagram"),
            "INSTAGRAM_USER_ID": (IG_USER, "instagram"),
            "SLACK_BOT_TOKEN": (self.slack.token, "slack"),
            "SALESFORCE_API_KEY": (self.salesforce.token, "salesforce"),
            "SALESFORCE_INSTANCE_URL": (self.salesforce.base_url, "salesforce"),
            "GITHUB_TOKEN": (self.github.token, "github"),
            "SMTP_HOST": (self.smtp.host, "email"),
            "SMTP_USER": (self.smtp.user, "email"),
            "SMTP_PASSWORD": (self.smtp.password, "email"),
            "EMAIL_FROM": (f"ServiceBay demo <{self.smtp.user}>", "email"),
        }

    def settings(self, home: Path) -> dict[str, dict[str, str]]:
        """Each connector's `env`: the fake's address, the same on every start. The SMTP
        fake makes a new certificate each time: it is copied where the connector reads it,
        for each message."""
        assert self.smtp.certificate_path is not None
        shared = home / FAKES
        shared.mkdir(exist_ok=True)
        shared.chmod(0o755)
        certificate = shared / "smtp-certificate.pem"
        shutil.copyfile(self.smtp.certificate_path, certificate)
        certificate.chmod(0o644)
        return {
            "instagram": {"INSTAGRAM_BASE_URL": self.instagram.base_url},
            "slack": {"SLACK_BASE_URL": self.slack.base_url},
            "salesforce": {},
            "github": {"GITHUB_BASE_URL": self.github.base_url},
            "email": {"SMTP_PORT": str(self.smtp.port), "SSL_CERT_FILE": str(certificate)},
            "spreadsheets": {"SPREADSHEETS_DIR": str(_spreadsheets(home))},
        }


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
    for name, (value, connector) in fakes.secrets().items():
        body = {"value": value, "allow": [f"service:{connector}"]}
        api.request("PUT", api_path("secrets", name), json=body)
    services = {service["name"]: service for service in api.collect(api_path("services"))}
    for name in CONNECTORS:
        if services.get(name, {}).get("kind") == "http":  # an older demo's, now a connector
            api.request("DELETE", api_path("services", name))
    database = _sales_db(path.parent)
    if SALES_URL_NAME not in stored:
        body = {"value": f"sqlite:///{database}", "allow": [f"service:{SALES}"]}
        api.request("PUT", api_path("secrets", SALES_URL_NAME), json=body)
    if SALES not in services:
        api.request("POST", api_path("services"), json=SALES_SERVICE)


def _deploy_all(api: Api, state: dict[str, Any], path: Path, fakes: Fakes) -> None:
    """Deploy the connectors and the demo's folders that are not deployed yet, as `bay
    deploy` would, and run the weekly report once when it is new, so its spreadsheet and
    Slack post exist (the connectors serve first: the report posts through `slack`)."""
    deployed = {row["name"] for row in api.collect(api_path("deployments"))}
    settings = fakes.settings(path.parent)
    copies = path.parent / CONNECTOR_COPIES
    copies.mkdir(exist_ok=True)
    for connector in CONNECTORS:
        if connector not in deployed:
            _deploy(api, state, configured(connector, settings[connector], copies))
    for connector in CONNECTORS:
        _wait_mounted(api.url, state["admin"]["key"], connector)
    for source in sorted(DEPLOYMENTS.iterdir()):
        if not source.is_dir() or source.name in deployed:
            continue
        _deploy(api, state, source)
        if source.name == REPORT:
            run = api.request("POST", api_path("deployments", REPORT, "runs"))
            state["report_run"] = run["id"]
            write_private(path, state)
    if state.get("report_run"):
        _wait_run(api, state["report_run"])


def _deploy(api: Api, state: dict[str, Any], source: Path) -> None:
    bundle = build_bundle(source)
    uploader = DeployApi(api.url, state["admin"]["key"])
    name = source.name if (source / "cron.json").exists() else None
    accepted = uploader.upload(bundle.data, f"{source.name}.tar.gz", name, console)
    _wait_built(api, str(accepted["name"]), int(accepted["version"]))


def _wait_mounted(url: str, key: str, name: str) -> None:
    """Until the code service `name` serves its document through the gateway (its process
    started and health-checked), so the panel's curls and the report's post answer."""
    deadline = time.monotonic() + MOUNT_TIMEOUT
    headers = {"Authorization": f"Bearer {key}"}
    with console.status(f"Starting the {name} connector ..."):
        while time.monotonic() < deadline:
            if httpx.get(f"{url}/{name}/openapi.json", headers=headers).status_code == 200:
                return
            time.sleep(0.3)
    fail(
        f"the {name} connector did not serve within {MOUNT_TIMEOUT:.0f} s",
        f"See why: bay deployments show {name}; bay deployments logs {name}",
    )


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


def _spreadsheets(home: Path) -> Path:
    """The spreadsheets connector's folder, made once with `budget.xlsx` (a sheet `Q1`)
    and `campaigns.csv`. The connector runs as its deployment's own user when the server
    runs as root, and appends rows: the folder and files are open to it."""
    tables = home / SPREADSHEETS
    if not tables.exists():
        partial = home / f".{SPREADSHEETS}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        _write_xlsx(partial / "budget.xlsx", "Q1", BUDGET)
        (partial / "campaigns.csv").write_text(CAMPAIGNS, newline="")
        partial.replace(tables)
    tables.chmod(0o777)
    for path in tables.iterdir():
        if path.is_file() and not path.is_symlink():
            path.chmod(stat.S_IMODE(path.stat().st_mode) | 0o666)
    return tables


BUDGET = (("team", "amount", "quarter"), ("marketing", 1200.5, "Q1"), ("data_science", 3000, "Q1"))
CAMPAIGNS = "campaign,channel,clicks\r\nSpring launch,instagram,1840\r\nPlayoffs,email,920\r\n"


XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'


def _write_xlsx(path: Path, sheet: str, rows: tuple[tuple[str | float, ...], ...]) -> None:
    """A one-sheet workbook (Office Open XML, text as inline strings): the demo writes its
    sample without openpyxl, which only the spreadsheets connector's environment has."""
    cells = []
    for number, row in enumerate(rows, start=1):
        values = "".join(
            f'<c r="{chr(65 + column)}{number}"><v>{value}</v></c>'
            if isinstance(value, int | float)
            else f'<c r="{chr(65 + column)}{number}" t="inlineStr"><is><t>{value}</t></is></c>'
            for column, value in enumerate(row)
        )
        cells.append(f'<row r="{number}">{values}</row>')
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    relations = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    package = "http://schemas.openxmlformats.org/package/2006"
    files = {
        "[Content_Types].xml": f'<Types xmlns="{package}/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
        'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-'
        'officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/'
        'sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.'
        'spreadsheetml.worksheet+xml"/></Types>',
        "_rels/.rels": f'<Relationships xmlns="{package}/relationships"><Relationship '
        f'Id="rId1" Type="{relations}/officeDocument" Target="xl/workbook.xml"/>'
        "</Relationships>",
        "xl/workbook.xml": f'<workbook xmlns="{main}" xmlns:r="{relations}"><sheets>'
        f'<sheet name="{sheet}" sheetId="1" r:id="rId1"/></sheets></workbook>',
        "xl/_rels/workbook.xml.rels": f'<Relationships xmlns="{package}/relationships">'
        f'<Relationship Id="rId1" Type="{relations}/worksheet" '
        'Target="worksheets/sheet1.xml"/></Relationships>',
        "xl/worksheets/sheet1.xml": f'<worksheet xmlns="{main}"><sheetData>'
        f"{''.join(cells)}</sheetData></worksheet>",
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as workbook:
        for name, text in files.items():
            workbook.writestr(name, XML_DECLARATION + text)


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


CONNECTOR_CALLS: tuple[tuple[str, str, str, str | None], ...] = (
    ("ann", "GET", "/instagram/get_follower_count", None),
    ("ann", "POST", "/slack/post_message_to_channel?channel_name=marketing&message=hi", None),
    ("ann", "POST", "/email/send_email", '{"to": "bo@example.com", "subject": "Hi", "text": "Hi"}'),
    ("ann", "GET", "/spreadsheets/read_rows?table=budget.Q1", None),
    ("bo", "POST", "/salesforce/create_customer?email=og@nyknicks.com"
                   "&first_name=OG&last_name=Anunoby", None),
    ("bo", "GET", "/github/open_pull_requests?owner=servicebay&repo=analytics", None),
)  # fmt: skip
"""One call of each connector (who, method, path, JSON body), by a user whose team may
make it: the panel prints them as curls, and the demo's test makes them."""


def _connector_curls(people: dict[str, Person]) -> list[str]:
    lines = []
    for who, method, path, body in CONNECTOR_CALLS:
        post = "-X POST " if method == "POST" and body is None else ""
        lines.append(f'  curl {post}-H "Authorization: Bearer ${people[who].variable}" \\')
        if body is not None:
            lines.append(f"       --json '{body}' \\")
        lines.append(f'       "$BAY_URL{path}"')
    return lines


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
        "The connectors, code services in front of local fakes of the vendors:",
        *_connector_curls({p.email.split("@")[0]: p for p in PEOPLE}),
        f"  (fakes: Instagram {fakes.instagram.url}, Slack {fakes.slack.url}, Salesforce "
        f"{fakes.salesforce.url}, GitHub {fakes.github.url}, SMTP {fakes.smtp.url};",
        f"   spreadsheets: {home / SPREADSHEETS})",
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
        "  bay secrets list         # SLACK_BOT_TOKEN...: their values are never shown",
        "  bay audit --limit 10",
        "  bay audit verify",
        "",
        "Ctrl-C stops the server; `bay demo` again reuses this instance,",
        "`bay demo --reset` starts over.",
    ]
    return Panel(Text("\n".join(lines)), title="ServiceBay demo", expand=False)
