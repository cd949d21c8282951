"""The six shipped connectors deployed as code services on one real `bay serve`, against
their fakes (a temporary folder for spreadsheets), each called through the gateway with
a user's key, and documented in the platform's `/docs`.

Their `service.py` and README are the shipped ones, byte for byte. What an instance
provides (credentials, Salesforce's org URL, the mail server) are secrets; what has a
default (the vendors' addresses) is set by a copy of the folder whose `service.json`
adds `env`, as docs/connectors.md says to. As root, each service runs as its own user,
so what it reads (the fake's certificate, the spreadsheets) lies in folders it may enter.
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from openpyxl import Workbook, load_workbook

from servicebay.connectors import CONNECTORS, configured, folder
from servicebay.fakes.github import FakeGitHub
from servicebay.fakes.instagram import FakeInstagram
from servicebay.fakes.salesforce import FakeSalesforce
from servicebay.fakes.slack import FakeSlack
from servicebay.fakes.smtp import FakeSMTP
from tests.conftest import Server
from tests.gateway.code_support import JULIUS, code_server, grant, serve_folders, store_secret
from tests.gateway.gateway_support import assert_problem, find_event

SLACK_TOKEN = "xoxb-3333333333-4444444444-DeployedConnectorToken"
SALESFORCE_TOKEN = "00D5e000000TEST!AQ0AQDeployedConnectorSessionToken"
GITHUB_TOKEN = "github_pat_11DeployedConnectorToken0123456789"
INSTAGRAM_TOKEN = "EAAGDeployedConnectorInstagramToken0123"
INSTAGRAM_USER = "17841405822304914"
SMTP_USER = "reports@corp.com"
SMTP_PASSWORD = "deployed-connector-smtp-password-456"
CREDENTIALS = (SLACK_TOKEN, SALESFORCE_TOKEN, GITHUB_TOKEN, INSTAGRAM_TOKEN, SMTP_PASSWORD)
REPOSITORY = "knicks/analytics"

ENDPOINTS = {
    "slack": {("post", "/post_message_to_channel")},
    "salesforce": {
        ("get", "/get_customer"),
        ("post", "/create_customer"),
        ("patch", "/update_customer"),
        ("delete", "/delete_customer"),
    },
    "github": {("get", "/open_pull_requests")},
    "instagram": {("get", "/get_follower_count"), ("get", "/get_follower_count_by_date")},
    "email": {("post", "/send_email")},
    "spreadsheets": {("get", "/list_tables"), ("get", "/read_rows"), ("post", "/append_row")},
}
"""Every endpoint of every connector, as docs/connectors.md lists them."""

GRANTS = (
    ("slack/post_message_to_channel", "create"),
    ("salesforce/create_customer", "create"),
    ("salesforce/get_customer", "read"),
    ("github/open_pull_requests", "read"),
    ("instagram/get_follower_count", "read"),
    ("email/send_email", "create"),
    ("spreadsheets/read_rows", "read"),
    ("spreadsheets/append_row", "create"),
)
"""The analyst's grants: one per endpoint it calls, and no other."""


@dataclass
class Fakes:
    slack: FakeSlack
    salesforce: FakeSalesforce
    github: FakeGitHub
    instagram: FakeInstagram
    smtp: FakeSMTP


@pytest.fixture(scope="module")
def shared() -> Iterator[Path]:
    """A folder every service's own user may read and write (the spreadsheets, the SMTP
    fake's certificate)."""
    root = Path(tempfile.mkdtemp(prefix="bay-connectors-shared-"))
    root.chmod(0o777)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    github = FakeGitHub(token=GITHUB_TOKEN)
    github.add_pull_request(REPOSITORY, "Weekly report: add Instagram", user="julius")
    github.add_pull_request(REPOSITORY, "An old one", state="closed")
    started = Fakes(
        slack=FakeSlack(token=SLACK_TOKEN),
        salesforce=FakeSalesforce(token=SALESFORCE_TOKEN),
        github=github,
        instagram=FakeInstagram(token=INSTAGRAM_TOKEN, user_id=INSTAGRAM_USER),
        smtp=FakeSMTP(user=SMTP_USER, password=SMTP_PASSWORD, tls=True),
    )
    with started.slack, started.salesforce, started.github, started.instagram, started.smtp:
        yield started


@pytest.fixture(autouse=True)
def fresh(fakes: Fakes) -> None:
    for fake in (fakes.slack, fakes.salesforce, fakes.github, fakes.instagram, fakes.smtp):
        fake.clear()


@pytest.fixture(scope="module")
def spreadsheets_dir(shared: Path) -> Path:
    """`budget.xlsx` (a sheet `Q1`) and `sales.csv`, writable by the service's user."""
    tables = shared / "spreadsheets"
    tables.mkdir(mode=0o777)
    tables.chmod(0o777)
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "Q1"
    sheet.append(["team", "amount"])
    sheet.append(["marketing", 1200])
    workbook.save(tables / "budget.xlsx")
    (tables / "sales.csv").write_text("region,product,units\nEast,Jersey,3\n")
    for path in tables.iterdir():
        path.chmod(0o666)
    return tables


@pytest.fixture(scope="module")
def bay_server() -> Iterator[Server]:
    with code_server("bay-connectors-", "openpyxl") as server:
        yield server


@pytest.fixture(scope="module")
def admin(bay_server: Server) -> Iterator[httpx.Client]:
    with bay_server.admin() as client:
        yield client


def with_env(name: str, parent: Path, env: dict[str, str]) -> Path:
    """The connector's folder with `env` added; its program is the shipped one."""
    copy = configured(name, env, parent)
    assert (copy / "service.py").read_bytes() == (folder(name) / "service.py").read_bytes()
    return copy


@pytest.fixture(scope="module")
def connectors(
    admin: httpx.Client,
    fakes: Fakes,
    shared: Path,
    spreadsheets_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """All six deployed side by side: Salesforce's folder as shipped (its address is a
    secret), the others with their addresses set."""
    for name, value, service in (
        ("SLACK_BOT_TOKEN", SLACK_TOKEN, "slack"),
        ("SALESFORCE_API_KEY", SALESFORCE_TOKEN, "salesforce"),
        ("SALESFORCE_INSTANCE_URL", fakes.salesforce.base_url, "salesforce"),
        ("GITHUB_TOKEN", GITHUB_TOKEN, "github"),
        ("INSTAGRAM_ACCESS_TOKEN", INSTAGRAM_TOKEN, "instagram"),
        ("INSTAGRAM_USER_ID", INSTAGRAM_USER, "instagram"),
        ("SMTP_HOST", fakes.smtp.host, "email"),
        ("SMTP_USER", SMTP_USER, "email"),
        ("SMTP_PASSWORD", SMTP_PASSWORD, "email"),
        ("EMAIL_FROM", f"Corp Reports <{SMTP_USER}>", "email"),
    ):
        store_secret(admin, name, value, service)
    assert fakes.smtp.certificate_path is not None
    certificate = shared / "smtp-certificate.pem"
    shutil.copyfile(fakes.smtp.certificate_path, certificate)
    certificate.chmod(0o644)
    parent = tmp_path_factory.mktemp("connectors")
    served = serve_folders(
        admin,
        with_env("slack", parent, {"SLACK_BASE_URL": fakes.slack.base_url}),
        folder("salesforce"),
        with_env("github", parent, {"GITHUB_BASE_URL": fakes.github.base_url}),
        with_env("instagram", parent, {"INSTAGRAM_BASE_URL": fakes.instagram.base_url}),
        with_env(
            "email",
            parent,
            {"SMTP_PORT": str(fakes.smtp.port), "SSL_CERT_FILE": str(certificate)},
        ),
        with_env("spreadsheets", parent, {"SPREADSHEETS_DIR": str(spreadsheets_dir)}),
    )
    assert sorted(shown["name"] for shown in served) == sorted(CONNECTORS)


@pytest.fixture(scope="module")
def analyst(bay_server: Server, admin: httpx.Client, connectors: None) -> tuple[str, str]:
    """A user holding one grant per endpoint it calls, and no other."""
    email, key = bay_server.new_user(teams=["marketing"])
    for endpoint, action in GRANTS:
        grant(admin, f"user:{email}", f"service:{endpoint}", action)
    return email, key


def test_slack_posts_through_the_gateway_in_slacks_wire_format(
    bay_server: Server, analyst: tuple[str, str], fakes: Fakes
) -> None:
    _, key = analyst
    with bay_server.client(key) as client:
        answer = client.post(
            "/slack/post_message_to_channel",
            params={"channel_name": "marketing", "message": "Followers: 7100 (+2.2%)"},
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["channel"] == "C0MARKETING"
    (sent,) = fakes.slack.requests_to("/api/chat.postMessage")
    assert sent.headers["authorization"] == f"Bearer {SLACK_TOKEN}"
    assert sent.json == {"channel": "marketing", "text": "Followers: 7100 (+2.2%)"}
    assert key not in json.dumps(dict(sent.headers))


def test_salesforce_creates_and_reads_a_customer_through_the_gateway(
    bay_server: Server, analyst: tuple[str, str], fakes: Fakes
) -> None:
    _, key = analyst
    with bay_server.client(key) as client:
        created = client.post("/salesforce/create_customer", params=JULIUS)
        found = client.get("/salesforce/get_customer", params={"email": JULIUS["email"]})
    assert created.status_code == 201, created.text
    assert created.json() == {"id": created.json()["id"], **JULIUS}
    assert found.json() == created.json()
    (posted,) = fakes.salesforce.requests_to("/services/data/v61.0/sobjects/Contact")
    assert posted.method == "POST"
    assert posted.headers["authorization"] == f"Bearer {SALESFORCE_TOKEN}"
    assert posted.json["Email"] == JULIUS["email"]


def test_github_lists_a_repositorys_open_pull_requests_through_the_gateway(
    bay_server: Server, analyst: tuple[str, str], fakes: Fakes
) -> None:
    _, key = analyst
    with bay_server.client(key) as client:
        answer = client.get(
            "/github/open_pull_requests", params={"owner": "knicks", "repo": "analytics"}
        )
    assert answer.status_code == 200, answer.text
    listed = answer.json()
    assert (listed["repository"], listed["count"]) == (REPOSITORY, 1)
    assert listed["pull_requests"][0]["title"] == "Weekly report: add Instagram"
    (sent,) = fakes.github.requests_to(f"/repos/{REPOSITORY}/pulls")
    assert sent.headers["authorization"] == f"Bearer {GITHUB_TOKEN}"


def test_instagram_reads_the_follower_count_through_the_gateway(
    bay_server: Server, analyst: tuple[str, str], fakes: Fakes
) -> None:
    _, key = analyst
    with bay_server.client(key) as client:
        answer = client.get("/instagram/get_follower_count")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"followers_count": 7100, "user_id": INSTAGRAM_USER}
    (sent,) = fakes.instagram.requests_to(f"/v19.0/{INSTAGRAM_USER}")
    assert sent.headers["authorization"] == f"Bearer {INSTAGRAM_TOKEN}"


def test_email_sends_a_message_over_starttls_through_the_gateway(
    bay_server: Server, analyst: tuple[str, str], fakes: Fakes
) -> None:
    _, key = analyst
    message = {"to": "ana@corp.com", "subject": "Weekly report", "text": "Followers: 7100"}
    with bay_server.client(key) as client:
        answer = client.post("/email/send_email", json=message)
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == ["ana@corp.com"]
    (delivered,) = fakes.smtp.messages
    assert (delivered.login, delivered.recipients) == (SMTP_USER, ["ana@corp.com"])
    assert delivered.message["Subject"] == "Weekly report"


def test_spreadsheets_reads_a_csv_and_appends_to_a_workbook_through_the_gateway(
    bay_server: Server, analyst: tuple[str, str], spreadsheets_dir: Path
) -> None:
    _, key = analyst
    with bay_server.client(key) as client:
        read = client.get("/spreadsheets/read_rows", params={"table": "sales"})
        appended = client.post(
            "/spreadsheets/append_row",
            params={"table": "budget.Q1"},
            json={"team": "data_science", "amount": 3000},
        )
    assert read.status_code == 200, read.text
    assert read.json()["rows"] == [{"region": "East", "product": "Jersey", "units": "3"}]
    assert appended.status_code == 201, appended.text
    sheet = load_workbook(spreadsheets_dir / "budget.xlsx")["Q1"]
    assert [list(row) for row in sheet.iter_rows(values_only=True)][-1] == ["data_science", 3000]
    with (spreadsheets_dir / "sales.csv").open(newline="") as unchanged:
        assert len(list(csv.reader(unchanged))) == 2


def test_a_user_without_the_grant_gets_403_and_no_connector_is_called(
    bay_server: Server,
    admin: httpx.Client,
    analyst: tuple[str, str],
    fakes: Fakes,
) -> None:
    email, key = bay_server.new_user(teams=["sales"])
    _, granted = analyst
    with bay_server.client(key) as client:
        posted = client.post(
            "/slack/post_message_to_channel", params={"channel_name": "general", "message": "x"}
        )
        deleted = client.delete("/salesforce/delete_customer", params={"email": JULIUS["email"]})
    with bay_server.client(granted) as client:  # a grant per endpoint: not delete
        not_granted = client.delete(
            "/salesforce/delete_customer", params={"email": JULIUS["email"]}
        )
    assert_problem(posted, 403, "`create` on `service:slack/post_message_to_channel`")
    assert_problem(deleted, 403, "`delete` on `service:salesforce/delete_customer`")
    assert_problem(not_granted, 403, "`delete` on `service:salesforce/delete_customer`")
    assert fakes.slack.received == []
    assert fakes.salesforce.received == []
    event = find_event(admin, posted.headers["x-request-id"], actor=email)
    assert (event["outcome"], event["resource"]) == (
        "denied",
        "service:slack/post_message_to_channel",
    )


def test_the_tokens_appear_in_no_answer_log_or_audit_record(
    bay_server: Server, admin: httpx.Client, analyst: tuple[str, str]
) -> None:
    _, key = analyst
    with bay_server.client(key) as client:
        answers = [
            client.post(
                "/slack/post_message_to_channel",
                params={"channel_name": "nope", "message": "hi"},
            ),
            client.get("/salesforce/get_customer", params={"email": "nobody@corp.com"}),
        ]
    texts = [answer.text + json.dumps(dict(answer.headers)) for answer in answers]
    for name in CONNECTORS:
        texts.append(
            admin.get(f"/api/v1/deployments/{name}/logs", headers={"Accept": "text/plain"}).text
        )
        texts.append(admin.get(f"/api/v1/deployments/{name}/versions/1").text)
        texts.append(admin.get(f"/{name}/openapi.json").text)
    texts.append(admin.get("/api/v1/audit", params={"limit": 500}).text)
    texts.append(bay_server.log_text())
    for text in texts:
        for credential in CREDENTIALS:
            assert credential not in text
    assert [answer.status_code for answer in answers] == [404, 404]


def test_docs_list_every_endpoint_of_every_connector_with_its_description(
    admin: httpx.Client, connectors: None
) -> None:
    document = admin.get("/openapi.json").json()
    assert set(ENDPOINTS) == set(CONNECTORS)
    for name, endpoints in ENDPOINTS.items():
        listed = {
            (method, path.removeprefix(f"/{name}"))
            for path, operations in document["paths"].items()
            if path.startswith(f"/{name}/")
            for method in operations
        }
        assert listed == endpoints, name
        for method, path in endpoints:
            operation = document["paths"][f"/{name}{path}"][method]
            assert operation["summary"], (method, path)
            assert operation["description"], (method, path)
    described = {tag["name"]: tag["description"] for tag in document["tags"]}
    for name in CONNECTORS:
        config = json.loads((folder(name) / "service.json").read_text())
        assert described[name].startswith(config["description"][:20]), name
