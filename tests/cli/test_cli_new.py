"""`bay new`: scaffold a deployment folder from a built-in template (on this machine alone)
or from one of the organisation's templates (fetched from a real server)."""

from __future__ import annotations

import base64
import io
import json
import os
import pty
import secrets
import select
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from servicebay.core import jsonc
from servicebay.runtime.config import ServerConfig, ServiceConfig, check_folder
from servicebay.services.kinds import parse_spec
from tests.cli.cli_support import BAY, Bay, assert_clean_failure

UNREACHABLE = "http://127.0.0.1:9"
"""No server answers here: built-in templates must not need one."""

BUILTIN_FILES = {
    "cron": ["README.md", "cron.json", "requirements.txt", "{name}.py"],
    "webhook": ["README.md", "requirements.txt", "webhook.json", "{name}.py"],
    "service": ["README.md", "service.json"],
    "server": ["README.md", "app.py", "requirements.txt", "server_deployment.json"],
}

DIGEST_MANIFEST = {
    "kind": "cron",
    "description": "Posts a weekly digest to a Slack channel.",
    "parameters": {
        "channel": {"prompt": "Slack channel", "default": "marketing", "pattern": "^[a-z-]+$"},
        "owner": {"prompt": "Who owns it (e-mail)", "pattern": "^[^@ ]+@[^@ ]+$"},
    },
}
DIGEST_FILES = {
    "cron.json.j2": '{"cron_frequency": "@weekly", "script_to_run": "{{ name }}.py"}\n',
    "{{ name }}.py.j2": 'CHANNEL = "{{ channel }}"\nOWNER = "{{ owner }}"\nprint(CHANNEL)\n',
    "README.md.j2": "# {{ name }}\n\nPosts to #{{ channel }}; ask {{ owner }}.\n",
    "data/regions.csv": "region,{{ kept as written }}\n",
}


@pytest.fixture
def offline(config_home: Path) -> Bay:
    """`bay` with no key and no reachable server."""
    return Bay(UNREACHABLE, None, config_home)


@pytest.fixture
def templates_dir(server: Any) -> Path:
    """The shared server's organisation templates: its default folder, BAY_HOME/templates."""
    folder = Path(server.home) / "templates"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture
def member(bay: Bay, server: Any) -> Bay:
    """`bay` as a user without admin rights: templates are for every authenticated user."""
    _, key = server.new_user()
    return bay.as_(key)


class BundleServer(ThreadingHTTPServer):
    """Answers every request with one tar.gz: what an impostor posing as the instance (or a
    compromised one) could send. The real server cannot be made to send such bundles."""

    bundle = b""


class _SendBundle(BaseHTTPRequestHandler):
    server: BundleServer

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(self.server.bundle)))
        self.end_headers()
        self.wfile.write(self.server.bundle)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads what `bay` says, not the fake's access log."""


@pytest.fixture
def impostor(config_home: Path) -> Iterator[tuple[BundleServer, Bay]]:
    """A fake instance on loopback, and `bay` pointed at it with some key."""
    fake = BundleServer(("127.0.0.1", 0), _SendBundle)
    thread = threading.Thread(target=fake.serve_forever, daemon=True)
    thread.start()
    yield fake, Bay(f"http://127.0.0.1:{fake.server_address[1]}", "bay_any", config_home)
    fake.shutdown()
    fake.server_close()


def tarball(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for member, data in members:
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def link(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    member = tarfile.TarInfo(name)
    member.type, member.linkname = tarfile.SYMTYPE, target
    return member, b""


def write_template(root: Path, manifest: dict[str, Any] | str, files: dict[str, str]) -> str:
    """An organisation template with a fresh name, as an admin would lay it out."""
    name = f"tpl-{secrets.token_hex(4)}"
    folder = root / name
    folder.mkdir()
    text = manifest if isinstance(manifest, str) else json.dumps(manifest, indent=2)
    (folder / "template.json").write_text(text)
    for path, content in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(content)
    return name


def created(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, (result.stdout, result.stderr)
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def in_terminal(
    args: list[str], env: dict[str, str], answers: list[tuple[str, str]]
) -> tuple[int, str]:
    """Run `bay` on a pseudo-terminal, as a person at a keyboard would: each time the next
    expected text appears, type the answer and Enter. The exit code and everything shown."""
    terminal, process_side = pty.openpty()
    wide = {**env, "COLUMNS": "400"}  # no wrapping of long paths
    process = subprocess.Popen(
        [BAY, *args], stdin=process_side, stdout=process_side, stderr=process_side, env=wide
    )
    os.close(process_side)
    shown, seen = b"", 0
    try:
        for expected, answer in answers:
            while (found := shown.find(expected.encode(), seen)) < 0:
                ready, _, _ = select.select([terminal], [], [], 30)
                assert ready, f"no {expected!r} on the terminal; it shows:\n{shown.decode()}"
                shown += os.read(terminal, 4096)
            seen = found + len(expected)
            os.write(terminal, answer.encode() + b"\n")
        while select.select([terminal], [], [], 30)[0]:
            try:
                chunk = os.read(terminal, 4096)
            except OSError:  # the process closed its side: all is read
                break
            if not chunk:
                break
            shown += chunk
        return process.wait(timeout=30), shown.decode()
    finally:
        os.close(terminal)
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("kind", sorted(BUILTIN_FILES))
def test_each_builtin_kind_renders_its_files_without_a_server(
    offline: Bay, tmp_path: Path, kind: str
) -> None:
    name = f"my-{kind}"
    folder = tmp_path / name

    answer = created(offline("new", kind, name, "--dir", str(folder), "--json"))

    expected = sorted(file.format(name=name) for file in BUILTIN_FILES[kind])
    assert answer == {"path": str(folder), "kind": kind, "files": expected}
    assert sorted(path.name for path in folder.iterdir()) == expected
    for path in folder.iterdir():
        text = path.read_text()
        assert "{{" not in text, f"{path.name} was not rendered"
        assert "{%" not in text, f"{path.name} was not rendered"
        assert name in text or path.name == "requirements.txt"
    if kind != "service":
        program = "app.py" if kind == "server" else f"{name}.py"
        compile((folder / program).read_text(), program, "exec")


def test_the_cron_scaffold_follows_the_article(offline: Bay, tmp_path: Path) -> None:
    folder = tmp_path / "weekly-report"

    created(offline("new", "cron", "weekly-report", "--dir", str(folder), "--json"))

    config = jsonc.load(folder / "cron.json")
    assert config["cron_frequency"] == "0 9 * * 5"
    assert config["script_to_run"] == "weekly-report.py"
    assert {"timezone", "timeout_seconds", "retries", "concurrency", "catch_up"} <= set(config)
    assert "Friday" in (folder / "cron.json").read_text()  # its comments explain the fields
    script = (folder / "weekly-report.py").read_text()
    steps = [script.index(f"# Step {number}") for number in (1, 2, 3)]
    assert steps == sorted(steps)
    assert "from servicebay import Client" in script
    assert 'client.get("sales/customer", params=' in script
    assert 'os.environ["BAY_OUTPUT_DIR"]' in script
    readme = (folder / "README.md").read_text()
    assert "bay run . --local" in readme
    assert "bay deploy" in readme
    assert (folder / "requirements.txt").read_text().startswith("#")


def test_the_webhook_scaffold_answers_through_the_sdk(offline: Bay, tmp_path: Path) -> None:
    folder = tmp_path / "lookup"

    created(offline("new", "webhook", "customer_lookup", "--dir", str(folder), "--json"))

    config = jsonc.load(folder / "webhook.json")
    assert config["sub_domain"] == "customer_lookup"
    assert config["script_to_run"] == "customer_lookup.py"
    assert (config["auth"], config["mode"]) == ("api_key", "sync")
    script = (folder / "customer_lookup.py").read_text()
    assert "from servicebay.webhook import request, webhook_response" in script
    assert "webhook_response.send_response(data=" in script


@pytest.fixture
def sales_instance(
    start_server: Callable[..., Any], tmp_path: Path, sales_db: Path
) -> tuple[Any, str]:
    """A server of its own serving the sales database as the service `sales` (the name the
    built-in scripts read), and the key of an analyst allowed to read its customers."""
    server = start_server(tmp_path / "instance")
    _, key = server.new_user(teams=["analysts"])
    with server.admin() as admin:
        steps = [
            admin.put(
                "/api/v1/secrets/SALES_DB_URL",
                json={"value": f"sqlite:///{sales_db}", "allow": ["service:sales"]},
            ),
            admin.post(
                "/api/v1/services",
                json={"name": "sales", "kind": "sql", "description": "Sales",
                      "secret": "SALES_DB_URL", "tables": {"customer": {"key": "email"}}},
            ),
            admin.post(
                "/api/v1/grants",
                json={"principal": "team:analysts", "resource": "service:sales/customer",
                      "actions": ["read"]},
            ),
        ]  # fmt: skip
    for step in steps:
        assert step.is_success, step.text
    return server, key


def run_script(folder: Path, script: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a scaffold's script as the platform would: with only the variables it sets."""
    return subprocess.run(
        [sys.executable, script],
        cwd=folder, env={"PATH": os.environ["PATH"], **env},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_the_cron_script_pulls_analyses_and_writes_its_report(
    offline: Bay, sales_instance: tuple[Any, str], tmp_path: Path
) -> None:
    server, key = sales_instance
    folder, output = tmp_path / "report", tmp_path / "output"
    output.mkdir()
    created(offline("new", "cron", "report", "--dir", str(folder), "--json"))

    run = run_script(
        folder, "report.py", BAY_URL=server.url, INTERNAL_API_KEY=key, BAY_OUTPUT_DIR=str(output)
    )

    assert run.returncode == 0, run.stderr
    assert run.stdout == "pro customers: 1, e-mail domains: 1\n"
    assert (output / "pro_customers_by_domain.csv").read_text().splitlines() == [
        "domain,customers",
        "nyknicks.com,1",
    ]


WEBHOOK_CALLS = [
    (b'{"email": "julius@nyknicks.com"}', 200, {"email": "julius@nyknicks.com", "plan": "pro"}),
    (b'{"email": "nobody@example.com"}', 404,
     {"error": "no customer with the e-mail nobody@example.com"}),
    (b"", 400, {"error": 'send {"email": "..."} as the JSON body'}),
    (b"email=julius", 400, {"error": 'send {"email": "..."} as the JSON body'}),
]  # fmt: skip


def test_the_webhook_script_answers_each_call(
    offline: Bay, sales_instance: tuple[Any, str], tmp_path: Path
) -> None:
    server, key = sales_instance
    folder = tmp_path / "lookup"
    created(offline("new", "webhook", "lookup", "--dir", str(folder), "--json"))
    answers = []

    for number, (body, _, _) in enumerate(WEBHOOK_CALLS):
        call, response = tmp_path / f"request-{number}.json", tmp_path / f"response-{number}.json"
        call.write_text(
            json.dumps(
                {"method": "POST", "path": "", "query": [],
                 "headers": [["content-type", "application/json"]],
                 "body_base64": base64.b64encode(body).decode()}
            )
        )  # fmt: skip
        run = run_script(
            folder, "lookup.py", BAY_URL=server.url, INTERNAL_API_KEY=key,
            BAY_WEBHOOK_REQUEST=str(call), BAY_WEBHOOK_RESPONSE=str(response),
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        sent = json.loads(response.read_text())
        assert ["content-type", "application/json"] in sent["headers"]
        answers.append((sent["status_code"], json.loads(base64.b64decode(sent["body_base64"]))))

    assert answers == [(status, answer) for _, status, answer in WEBHOOK_CALLS]


@pytest.mark.parametrize("kind", sorted(BUILTIN_FILES))
def test_each_builtin_scaffold_is_a_deployable_folder(
    offline: Bay, tmp_path: Path, kind: str
) -> None:
    folder = tmp_path / kind

    created(offline("new", kind, f"new-{kind}", "--dir", str(folder), "--json"))

    check = check_folder(folder)
    assert check.ok, [str(problem) for problem in check.problems]
    assert check.kind == kind


def test_the_service_scaffold_registered_as_its_readme_says_serves_the_table(
    bay: Bay, server: Any, tmp_path: Path, sales_db: Path
) -> None:
    name = f"shop-{secrets.token_hex(3)}"
    folder = tmp_path / name
    scaffolded = bay("new", "service", name, "--dir", str(folder))
    document = jsonc.load(folder / "service.json")
    readme = (folder / "README.md").read_text()
    secret = document["secret"]
    assert parse_spec(document).name == name
    assert f"bay secrets set {secret} --allow service:{name}" in readme
    assert f"bay secrets set {secret} --allow service:{name}" in scaffolded.stdout
    assert f"bay services register {folder}" in scaffolded.stdout

    stored = bay(
        "secrets", "set", secret, "--allow", f"service:{name}", input=f"sqlite:///{sales_db}"
    )
    registered = bay("services", "register", str(folder))

    assert stored.returncode == 0, stored.stderr
    assert registered.returncode == 0, registered.stderr
    with server.admin() as admin:
        row = admin.get(f"/{name}/customer/julius@nyknicks.com")
    assert row.status_code == 200, row.text
    assert row.json()["plan"] == "pro"
    bay("services", "delete", name)
    bay("secrets", "delete", secret)


def test_the_folder_defaults_to_the_name_in_the_current_directory(
    offline: Bay, tmp_path: Path
) -> None:
    result = subprocess.run(
        [BAY, "new", "cron", "nightly"],
        cwd=tmp_path, env=offline.env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "nightly" / "nightly.py").is_file()
    assert "Created nightly/ from the built-in cron template:" in result.stdout
    assert "  nightly/cron.json" in result.stdout
    assert "cd nightly && bay run . --local" in result.stdout
    assert "bay deploy" in result.stdout


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("My Report", "my-report"),
        ("1st-report", "weekly-report"),
        ("reports/weekly", "reports-weekly"),
        ("x" * 64, "x" * 63),
        ("..", "weekly-report"),
    ],
)
def test_a_name_that_cannot_be_a_url_is_refused_with_a_suggestion(
    offline: Bay, tmp_path: Path, name: str, suggestion: str
) -> None:
    result = offline("new", "cron", name, "--dir", str(tmp_path / "out"))

    assert_clean_failure(result)
    assert f"{name!r} is not a valid name" in result.stderr
    assert "lowercase letters, digits, '-' or '_', starting with a letter" in result.stderr
    assert f"e.g. {suggestion}" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_folder_that_holds_anything_is_never_overwritten(offline: Bay, tmp_path: Path) -> None:
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "cron.json").write_text("mine")

    result = offline("new", "cron", "report", "--dir", str(folder))

    assert_clean_failure(result)
    assert f"{folder} exists and is not empty; bay new never overwrites files" in result.stderr
    assert [path.name for path in folder.iterdir()] == ["cron.json"]
    assert (folder / "cron.json").read_text() == "mine"


def test_an_existing_empty_folder_is_filled(offline: Bay, tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()

    answer = created(offline("new", "webhook", "hook", "--dir", str(folder), "--json"))

    assert "webhook.json" in answer["files"]
    assert (folder / "webhook.json").is_file()


def test_an_unknown_kind_says_which_there_are(offline: Bay, tmp_path: Path) -> None:
    result = offline("new", "crontab", "thing", "--dir", str(tmp_path / "thing"))

    assert_clean_failure(result)
    assert "'crontab' is not a kind of deployment" in result.stderr
    assert "cron, webhook, service, server, dashboard" in result.stderr
    assert not (tmp_path / "thing").exists()


def test_the_dashboard_scaffold_is_a_static_site(offline: Bay, tmp_path: Path) -> None:
    folder = tmp_path / "sales-board"

    answer = created(offline("new", "dashboard", "sales-board", "--dir", str(folder), "--json"))

    assert answer["files"] == ["README.md", "server_deployment.json", "site/index.html"]
    check = check_folder(folder)
    assert check.ok, [str(problem) for problem in check.problems]
    assert check.kind == "server"
    assert isinstance(check.config, ServerConfig)
    assert (check.config.static, check.config.start_command) == ("site", None)
    assert "npm run build" in (folder / "README.md").read_text()
    assert "<h1>sales-board</h1>" in (folder / "site" / "index.html").read_text()


def test_a_service_may_not_take_a_reserved_name(offline: Bay, tmp_path: Path) -> None:
    result = offline("new", "service", "docs", "--dir", str(tmp_path / "docs"))

    assert_clean_failure(result)
    assert "'docs' is reserved for the platform's own routes" in result.stderr


def test_list_without_a_key_shows_the_builtin_kinds(offline: Bay) -> None:
    listed = offline("new", "--list")
    listed_json = offline("new", "--list", "--json")

    assert listed.returncode == 0, listed.stderr
    for kind in ("cron", "webhook", "service", "server"):
        assert kind in listed.stdout
    assert "bay login" in listed.stdout
    assert [item["name"] for item in json.loads(listed_json.stdout)] == [
        "code-service",
        "cron",
        "dashboard",
        "server",
        "service",
        "webhook",
    ]


def test_an_organisation_template_renders_with_params(
    member: Bay, templates_dir: Path, tmp_path: Path
) -> None:
    template = write_template(templates_dir, DIGEST_MANIFEST, DIGEST_FILES)
    folder = tmp_path / "digest"

    result = member(
        "new", "cron", "sales-digest", "--template", template, "--dir", str(folder),
        "--param", "owner=ann@example.com", "--json",
    )  # fmt: skip

    answer = created(result)
    assert answer["files"] == [
        "README.md",
        "cron.json",
        "data/regions.csv",
        "sales-digest.py",
    ]
    script = (folder / "sales-digest.py").read_text()
    assert 'CHANNEL = "marketing"' in script  # the default: stdin is no terminal to ask on
    assert 'OWNER = "ann@example.com"' in script
    compile(script, "sales-digest.py", "exec")
    assert (folder / "README.md").read_text() == (
        "# sales-digest\n\nPosts to #marketing; ask ann@example.com.\n"
    )
    assert (folder / "data/regions.csv").read_text() == DIGEST_FILES["data/regions.csv"]
    assert not (folder / "template.json").exists()
    assert check_folder(folder).ok


def test_an_organisation_template_asks_for_its_parameters_at_a_terminal(
    member: Bay, templates_dir: Path, tmp_path: Path
) -> None:
    template = write_template(templates_dir, DIGEST_MANIFEST, DIGEST_FILES)
    folder = tmp_path / "asked"

    code, shown = in_terminal(
        ["new", "cron", "asked", "--template", template, "--dir", str(folder)],
        member.env,
        [
            ("Slack channel [marketing]: ", "Sales Team"),
            ("Slack channel [marketing]: ", "sales"),  # asked again
            ("Who owns it (e-mail): ", "bob@example.com"),
        ],
    )

    assert code == 0, shown
    assert "'Sales Team' does not match the pattern ^[a-z-]+$; try again." in shown
    assert f"Created {folder}/ from template '{template}'" in shown
    script = (folder / "asked.py").read_text()
    assert 'CHANNEL = "sales"' in script
    assert 'OWNER = "bob@example.com"' in script


def test_a_prompt_with_a_default_takes_it_on_enter(
    member: Bay, templates_dir: Path, tmp_path: Path
) -> None:
    template = write_template(templates_dir, DIGEST_MANIFEST, DIGEST_FILES)
    folder = tmp_path / "defaulted"

    code, shown = in_terminal(
        ["new", "cron", "defaulted", "--template", template, "--dir", str(folder),
         "--param", "owner=ann@example.com"],
        member.env,
        [("Slack channel [marketing]: ", "")],
    )  # fmt: skip

    assert code == 0, shown
    assert "Who owns it" not in shown  # given with --param, so not asked
    assert 'CHANNEL = "marketing"' in (folder / "defaulted.py").read_text()


def test_without_a_terminal_missing_parameters_are_listed(
    member: Bay, templates_dir: Path, tmp_path: Path
) -> None:
    template = write_template(templates_dir, DIGEST_MANIFEST, DIGEST_FILES)
    folder = tmp_path / "nothing"

    result = member("new", "cron", "nothing", "--template", template, "--dir", str(folder))

    assert_clean_failure(result)
    assert f"template '{template}' needs owner, and stdin is not a terminal" in result.stderr
    assert "--param owner=...   Who owns it (e-mail)" in result.stderr
    assert not folder.exists()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (["channel=Sales Team", "owner=a@b"], "--param channel: 'Sales Team' does not match"),
        (["owner=a@b", "colour=red"], "has no parameter colour"),
        (["owner"], "--param 'owner' is not KEY=VALUE"),
    ],
)
def test_bad_params_are_refused_before_anything_is_written(
    member: Bay, templates_dir: Path, tmp_path: Path, params: list[str], message: str
) -> None:
    template = write_template(templates_dir, DIGEST_MANIFEST, DIGEST_FILES)
    folder = tmp_path / "refused"
    options = [option for param in params for option in ("--param", param)]

    result = member(
        "new", "cron", "refused", "--template", template, "--dir", str(folder), *options
    )

    assert_clean_failure(result)
    assert message in result.stderr
    assert not folder.exists()


def test_a_template_of_another_kind_says_which_command_to_run(
    member: Bay, templates_dir: Path, tmp_path: Path
) -> None:
    template = write_template(templates_dir, DIGEST_MANIFEST, DIGEST_FILES)

    result = member("new", "webhook", "hook", "--template", template, "--dir", str(tmp_path / "h"))

    assert_clean_failure(result)
    assert f"template '{template}' makes a cron, not a webhook" in result.stderr
    assert f"bay new cron hook --template {template}" in result.stderr


def test_a_variable_the_manifest_does_not_declare_names_file_and_line(
    member: Bay, templates_dir: Path, tmp_path: Path
) -> None:
    files = {**DIGEST_FILES, "README.md.j2": "# {{ name }}\n\nAsk {{ team_lead }}.\n"}
    template = write_template(templates_dir, DIGEST_MANIFEST, files)
    folder = tmp_path / "undeclared"

    result = member(
        "new", "cron", "undeclared", "--template", template, "--dir", str(folder),
        "--param", "owner=ann@example.com",
    )  # fmt: skip

    assert_clean_failure(result)
    assert f"{template}/README.md.j2, line 3: 'team_lead' is undefined" in result.stderr
    assert "parameters template.json declares" in result.stderr
    assert not folder.exists()


def test_a_broken_manifest_is_reported_and_the_others_still_listed(
    member: Bay, templates_dir: Path, tmp_path: Path
) -> None:
    good = write_template(templates_dir, DIGEST_MANIFEST, DIGEST_FILES)
    broken = write_template(
        templates_dir, {"kind": "cron", "description": "x", "parameters": {"a": {}}}, {}
    )

    listed = member("new", "--list")
    listed_json = member("new", "--list", "--json")
    used = member("new", "cron", "x", "--template", broken, "--dir", str(tmp_path / "x"))

    assert listed.returncode == 0, listed.stderr
    assert good in listed.stdout
    assert "channel, owner" in listed.stdout
    assert "cannot be used: " in listed.stdout
    found = {item["name"]: item for item in json.loads(listed_json.stdout)}
    assert found[good]["parameters"]["channel"]["default"] == "marketing"
    assert found[good]["builtin"] is False
    assert found["cron"]["builtin"] is True
    assert found[broken]["kind"] is None
    assert (
        f"{broken}/template.json: parameters.a.prompt: Field required" in (found[broken]["problem"])
    )
    assert_clean_failure(used)
    assert f"template '{broken}' cannot be used" in used.stderr
    assert "parameters.a.prompt: Field required" in used.stderr


def test_an_unknown_template_is_not_found(member: Bay, tmp_path: Path) -> None:
    folder = tmp_path / "x"

    result = member("new", "cron", "x", "--template", "no-such-template", "--dir", str(folder))

    assert_clean_failure(result)
    assert "there is no template named 'no-such-template'" in result.stderr


def test_organisation_templates_need_a_key(offline: Bay, tmp_path: Path) -> None:
    result = offline("new", "cron", "x", "--template", "anything", "--dir", str(tmp_path / "x"))

    assert_clean_failure(result)
    assert "no API key is set" in result.stderr
    assert "bay login" in result.stderr


def test_a_template_cannot_reach_out_of_the_jinja2_sandbox(
    member: Bay, templates_dir: Path, tmp_path: Path
) -> None:
    files = {"README.md.j2": "{{ name.__class__.__mro__[1].__subclasses__() }}\n"}
    template = write_template(templates_dir, {"kind": "cron", "description": "x"}, files)
    folder = tmp_path / "escape"

    result = member("new", "cron", "escape", "--template", template, "--dir", str(folder))

    assert_clean_failure(result)
    assert f"{template}/README.md.j2, line 1: access to attribute '__class__'" in result.stderr
    assert "unsafe" in result.stderr
    assert not folder.exists()


MANIFEST_MEMBER = (tarfile.TarInfo("template.json"), b'{"kind": "cron", "description": "x"}')


@pytest.mark.parametrize(
    ("bundle", "message"),
    [
        (
            tarball(MANIFEST_MEMBER, (tarfile.TarInfo("../escape.txt"), b"out")),
            "holds '../escape.txt', which is not a file inside the template",
        ),
        (
            tarball(MANIFEST_MEMBER, (tarfile.TarInfo("/var/escape.txt"), b"out")),
            "holds '/var/escape.txt', which is not a file inside the template",
        ),
        (
            tarball(MANIFEST_MEMBER, link("passwd.j2", "/etc/passwd")),
            "holds 'passwd.j2', which is not a file inside the template",
        ),
        (b"<html>not a bundle</html>", "is not a readable tar.gz"),
        (tarball((tarfile.TarInfo("README.md"), b"# no manifest\n")), "has no template.json"),
    ],
)
def test_a_bundle_that_is_not_a_plain_template_is_refused(
    impostor: tuple[BundleServer, Bay], tmp_path: Path, bundle: bytes, message: str
) -> None:
    fake, bay_at_fake = impostor
    fake.bundle = bundle
    folder = tmp_path / "target" / "job"

    result = bay_at_fake("new", "cron", "job", "--template", "evil", "--dir", str(folder))

    assert_clean_failure(result)
    assert message in result.stderr
    assert not (tmp_path / "target").exists()
    assert not (tmp_path / "escape.txt").exists()


def test_a_code_service_comes_from_the_builtin_code_service_template_ready_to_deploy(
    offline: Bay, tmp_path: Path
) -> None:
    folder = tmp_path / "crm"
    result = offline("new", "service", "crm", "--template", "code-service", "--dir", str(folder))

    assert result.returncode == 0, result.stderr
    assert "bay deploy" in result.stdout
    assert "service:crm/hello read" in result.stdout
    check = check_folder(folder)
    assert check.problems == []
    assert isinstance(check.config, ServiceConfig)
    assert (check.config.name, check.config.kind) == ("crm", "code")
    assert 'Service("crm"' in (folder / "service.py").read_text()
