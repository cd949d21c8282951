"""`bay deploy` and `bay deployments`, run as a user runs them, against a real server.

Everything wrong with a folder is listed before anything is sent, each problem with its
place and fix; a good folder is bundled, uploaded, built (the log shown as it comes) and
activated, and the command ends with what happens next: a cron job's next runs, or a
webhook's URL.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cli.cli_support import Bay, assert_clean_failure
from tests.conftest import Server
from tests.gateway.test_code_services import plain_files
from tests.gateway.test_deployments_api import DOMAIN, alert_receiver, deploys

__all__ = ["alert_receiver", "deploys"]  # the module's own server, as the HTTP tests make it

CRON_NEW_YORK = (
    "// every Friday morning in New York\n"
    '{"cron_frequency": "0 9 * * 5", "script_to_run": "report.py",\n'
    ' "timezone": "America/New_York"}\n'
)


@pytest.fixture
def bay(deploys: Server, config_home: Path) -> Bay:
    return Bay(deploys.url, deploys.admin_key, config_home)


@pytest.fixture
def admin(deploys: Server) -> Iterator[httpx.Client]:
    with deploys.admin() as client:
        yield client


def make_folder(parent: Path, files: dict[str, str], prefix: str = "report") -> Path:
    folder = parent / f"{prefix}_{secrets.token_hex(4)}"
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def cron_folder(parent: Path, **extra: str) -> Path:
    files = {
        "cron.json": CRON_NEW_YORK,
        "report.py": "print('the weekly report')\n",
        "README.md": "# Weekly report\n",
        "data/big.csv": "a,b\n" * 1000,
        ".bayignore": "data/\n",
        **extra,
    }
    return make_folder(parent, files)


def test_deploy_builds_the_folder_and_tells_when_it_runs_next(
    bay: Bay, admin: httpx.Client, tmp_path: Path
) -> None:
    folder = cron_folder(tmp_path)
    name = folder.name
    result = bay("deploy", str(folder))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"Building {name} version 1:" in out
    assert "creating environment" in out or "reusing environment" in out
    assert f"Deployed {name} version 1 (cron): it is active." in out
    assert "at 09:00 on Friday (America/New_York)" in out
    runs = re.findall(r"Fri (\d{4}-\d\d-\d\d) 09:00 E[SD]T \((\d{4}-\d\d-\d\d) 1[34]:00 UTC\)", out)
    assert len(runs) == 3, out
    assert [local for local, _ in runs] == sorted({local for local, _ in runs})
    assert all(local == utc for local, utc in runs)

    shown = admin.get(f"/api/v1/deployments/{name}/versions/1").json()
    assert shown["config"]["timezone"] == "America/New_York"

    again = bay("deploy", str(folder))
    assert again.returncode == 0, again.stderr
    assert f"Building {name} version 2:" in again.stdout
    assert "reusing environment" in again.stdout


def test_deploy_uploads_what_bayignore_lets_through(
    bay: Bay, deploys: Server, tmp_path: Path
) -> None:
    folder = cron_folder(tmp_path)
    assert bay("deploy", str(folder)).returncode == 0
    source = deploys.home / "runtime" / "deployments" / folder.name / "v1"
    assert (source / "report.py").is_file()
    assert not (source / "data").exists()


def test_every_problem_is_listed_before_anything_is_sent(
    bay: Bay, admin: httpx.Client, tmp_path: Path
) -> None:
    folder = make_folder(
        tmp_path,
        {
            "cron.json": '{"cron_frequency": "0 9 * * 5", "script_to_run": "report.py",\n'
            ' "timezone": "America/New_Yrok", "retries": "2"}\n',
        },
    )
    result = bay("deploy", str(folder))
    assert_clean_failure(result, code=1)
    assert f"{folder} cannot be deployed: 4 problems" in result.stderr
    stderr = " ".join(result.stderr.split())
    assert "README.md: missing: documentation is required" in stderr
    assert "cron.json:1:50: script_to_run: there is no file 'report.py' in the folder" in stderr
    assert "cron.json:2:14: timezone: unknown time zone 'America/New_Yrok'" in stderr
    assert "Did you mean 'America/New_York'" in stderr
    assert 'cron.json:2:45: retries: must be a whole number, not text "2"' in stderr
    assert "(fix: write 2 without quotes)" in stderr
    assert admin.get(f"/api/v1/deployments/{folder.name}").status_code == 404


def test_a_cron_folder_must_have_a_name_that_can_be_a_url(bay: Bay, tmp_path: Path) -> None:
    folder = cron_folder(tmp_path).rename(tmp_path / "Weekly Report")
    result = bay("deploy", str(folder))
    assert_clean_failure(result, code=1)
    assert "a cron job is named by its folder, and 'Weekly Report' cannot be a name" in " ".join(
        result.stderr.split()
    )
    assert "Rename the folder" in result.stderr


def test_the_articles_config_files_get_their_exact_problems(bay: Bay, tmp_path: Path) -> None:
    cron = make_folder(
        tmp_path,
        {
            "cron.json": '# cron.json\n{\n"cron_frequency" : "0 0 0 0 0", # cron syntax\n'
            '"script_to_run" : "instagram_followers_to_slack.py"\n}\n',
            "instagram_followers_to_slack.py": "",
            "README.md": "# Followers\n",
        },
    )
    result = bay("deploy", str(cron))
    assert_clean_failure(result, code=1)
    stderr = " ".join(result.stderr.split())
    assert "cron.json:3:20: cron_frequency: invalid cron expression '0 0 0 0 0'" in stderr
    assert "month (field 4): 0 is out of range 1-12" in stderr
    assert "Did you mean '0 0 * * 0'" in stderr

    server = make_folder(
        tmp_path,
        {
            "server_deployment.json": "# server_deployment.json\n{\n"
            '"sub_domain" : "my_flask_server"\n'
            '"build command" : "pip install -r requirements.txt",\n'
            '"start command" : "flask run --port 8080 --host 0.0.0.0",\n'
            '"port" : 8080\n}\n',
            "README.md": "# Flask\n",
        },
    )
    result = bay("deploy", str(server))
    assert_clean_failure(result, code=1)
    stderr = " ".join(result.stderr.split())
    assert "server_deployment.json:3:33: missing comma after" in stderr
    assert "(fix: add ',' at the end of line 3)" in stderr


def test_a_webhook_deploy_ends_with_its_urls(bay: Bay, deploys: Server, tmp_path: Path) -> None:
    name = f"lookup_{secrets.token_hex(4)}"
    folder = make_folder(
        tmp_path,
        {
            "webhook.json": f'{{"sub_domain": "{name}", "script_to_run": "hook.py"}}',
            "hook.py": "",
            "README.md": "# Lookup\n",
        },
        prefix="any_folder_name",
    )
    result = bay("deploy", str(folder))
    assert result.returncode == 0, result.stderr
    assert f"Deployed {name} version 1 (webhook)" in result.stdout
    assert f"{deploys.url}/hooks/{name}" in result.stdout
    assert f"https://{name}.{DOMAIN}" in result.stdout


def test_a_failed_build_shows_pips_log_and_keeps_the_active_version(
    bay: Bay, tmp_path: Path
) -> None:
    folder = cron_folder(tmp_path)
    assert bay("deploy", str(folder)).returncode == 0
    (folder / "requirements.txt").write_text("baytiny==9.9\n")
    result = bay("deploy", str(folder))
    assert_clean_failure(result, code=1)
    assert "No matching distribution found for baytiny==9.9" in result.stdout
    assert f"the build of {folder.name} version 2 failed; version 1 stays active" in " ".join(
        result.stderr.split()
    )


def test_deploy_json_prints_the_finished_version_and_keeps_the_log_off_stdout(
    bay: Bay, tmp_path: Path
) -> None:
    folder = cron_folder(tmp_path)
    result = bay("deploy", str(folder), "--json")
    assert result.returncode == 0, result.stderr
    version = json.loads(result.stdout)
    assert (version["name"], version["version"], version["status"]) == (folder.name, 1, "ready")
    assert version["build_log"]
    assert "Building" in result.stderr


def test_a_code_service_without_its_secret_is_refused_saying_how_to_set_it(
    bay: Bay, admin: httpx.Client, tmp_path: Path
) -> None:
    service = make_folder(
        tmp_path,
        {
            "service.json": '{"name": "crm_code", "kind": "code", "description": "CRM", '
            '"start command": "python service.py", "secrets": ["CRM_TOKEN"]}',
            "service.py": "print('serving')\n",
            "README.md": "# CRM\n",
        },
    )
    result = bay("deploy", str(service))
    assert_clean_failure(result)
    assert "bay secrets set CRM_TOKEN --allow service:crm_code" in result.stderr
    assert admin.get("/api/v1/deployments/crm_code").status_code == 404


def test_an_sql_service_folder_is_registered_as_a_service(
    bay: Bay, admin: httpx.Client, tmp_path: Path, sales_db: Path
) -> None:
    name = f"sales_{secrets.token_hex(3)}"
    secret = f"SALES_DB_{secrets.token_hex(3).upper()}"
    stored = bay(
        "secrets", "set", secret, "--allow", f"service:{name}", input=f"sqlite:///{sales_db}"
    )
    assert stored.returncode == 0, stored.stderr
    folder = make_folder(
        tmp_path,
        {
            "service.json": f'{{"name": "{name}", "kind": "sql", "description": "Sales",\n'
            f' "secret": "{secret}", "tables": {{"customer": {{"key": "email"}}}}}}\n',
            "README.md": "# Sales\n",
        },
    )
    result = bay("deploy", str(folder))
    assert result.returncode == 0, result.stderr
    assert f"Registered service {name} (version 1)" in result.stdout
    assert admin.get(f"/api/v1/services/{name}").status_code == 200


def test_deployments_list_show_rollback_and_delete(
    bay: Bay, admin: httpx.Client, tmp_path: Path
) -> None:
    folder = cron_folder(tmp_path)
    name = folder.name
    assert bay("deploy", str(folder)).returncode == 0
    assert bay("deploy", str(folder)).returncode == 0

    listed = bay("deployments", "list")
    assert listed.returncode == 0, listed.stderr
    assert name in listed.stdout
    rows = json.loads(bay("deployments", "list", "--json").stdout)
    [row] = [row for row in rows if row["name"] == name]
    assert row["active_version"] == 2

    shown = bay("deployments", "show", name)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"│ 2 +│ ready +│ active +│", shown.stdout), shown.stdout
    assert re.search(r"│ 1 +│ ready +│ +│", shown.stdout), shown.stdout
    first = bay("deployments", "show", name, "--version", "1")
    assert first.returncode == 0, first.stderr
    assert "environment" in first.stdout

    back = bay("deployments", "rollback", name)
    assert back.returncode == 0, back.stderr
    assert f"{name}: version 1 is active (it was version 2)." in back.stdout
    forward = bay("deployments", "rollback", name, "--to", "2", "--json")
    assert json.loads(forward.stdout)["active_version"] == 2

    deleted = bay("deployments", "delete", name)
    assert deleted.returncode == 0, deleted.stderr
    assert f"Deleted deployment {name}" in deleted.stdout
    gone = bay("deployments", "show", name)
    assert_clean_failure(gone)
    assert f"there is no deployment named {name!r}" in gone.stderr


def test_another_users_deployment_is_not_theirs_to_change(
    bay: Bay, deploys: Server, tmp_path: Path
) -> None:
    folder = cron_folder(tmp_path)
    assert bay("deploy", str(folder)).returncode == 0
    _, key = deploys.new_user()
    result = bay.as_(key)("deploy", str(folder))
    assert_clean_failure(result)
    assert f"manage on deployment:{folder.name}" in " ".join(result.stderr.split())


def test_a_server_deploys_prints_its_urls_and_shows_its_state_and_logs(
    bay: Bay, admin: httpx.Client, tmp_path: Path
) -> None:
    name = f"site_{secrets.token_hex(3)}"
    folder = make_folder(
        tmp_path,
        {
            "server_deployment.json": json.dumps(
                {
                    "sub_domain": name,
                    "start command": "python -m http.server $PORT --bind 127.0.0.1",
                    "auth": "public",
                }
            ),
            "index.html": "<h1>hello from the site</h1>\n",
            "README.md": "# Site\n",
        },
    )
    deployed = bay("deploy", str(folder))
    assert deployed.returncode == 0, deployed.stderr
    assert f"Deployed {name} version 1 (server): it is active." in deployed.stdout
    assert f"/apps/{name}/" in deployed.stdout
    assert f"https://{name}.{DOMAIN}" in deployed.stdout
    assert "running" in deployed.stdout
    assert "hello from the site" in admin.get(f"/apps/{name}/").text

    shown = bay("deployments", "show", name)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"state\s+running", shown.stdout), shown.stdout
    assert re.search(r"restarts\s+0", shown.stdout), shown.stdout

    logs = bay("deployments", "logs", name)
    assert logs.returncode == 0, logs.stderr
    assert "[servicebay] starting version 1" in logs.stdout
    assert "GET / HTTP/1.1" in logs.stdout  # http.server logs each request on stderr


def test_a_server_that_keeps_crashing_fails_the_deploy_and_says_why(
    bay: Bay, tmp_path: Path
) -> None:
    name = f"crashy_{secrets.token_hex(3)}"
    folder = make_folder(
        tmp_path,
        {
            "server_deployment.json": json.dumps(
                {"sub_domain": name, "start command": "python -c 'raise SystemExit(4)'"}
            ),
            "README.md": "# Crashes\n",
        },
    )
    deployed = bay("deploy", str(folder))
    assert_clean_failure(deployed, 1)
    assert "crash_looping" in deployed.stdout
    assert "exited with code 4" in deployed.stdout
    assert "keeps crashing" in deployed.stderr
    assert f"bay deployments logs {name}" in deployed.stderr


def test_a_code_service_deploys_with_its_url_and_an_undocumented_version_fails_the_deploy(
    bay: Bay, admin: httpx.Client, tmp_path: Path
) -> None:
    name = f"greeter_{secrets.token_hex(3)}"
    first = make_folder(tmp_path, plain_files(name, "v1", described=True))
    deployed = bay("deploy", str(first))
    assert deployed.returncode == 0, deployed.stderr
    assert f"Deployed {name} version 1 (service): it is active." in deployed.stdout
    assert f"/{name}/" in deployed.stdout
    assert "running" in deployed.stdout

    second = make_folder(tmp_path, plain_files(name, "v2", described=False))
    refused = bay("deploy", str(second))
    assert_clean_failure(refused, 1)
    assert f"{name} version 2 built and started, but was refused" in refused.stderr
    assert "GET /hello has none" in refused.stderr
    shown = admin.get(f"/api/v1/deployments/{name}").json()
    assert (shown["active_version"], shown["server"]["version"]) == (1, 1)
