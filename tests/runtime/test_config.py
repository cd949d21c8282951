"""Deployment config files: what is accepted, and every problem said with where and how to fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from servicebay.core import jsonc
from servicebay.core.errors import InvalidInput
from servicebay.runtime.config import (
    CONFIG_FILES,
    ConfigInvalid,
    CronConfig,
    FolderInvalid,
    Problem,
    ServerConfig,
    ServiceConfig,
    WebhookConfig,
    check_folder,
    json_schema,
    load_folder,
    parse_config,
    schema_filename,
)

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "docs" / "schemas"

ARTICLE_CRON = """# cron.json
{
"cron_frequency" : "0 0 0 0 0", # cron syntax
"script_to_run" : "instagram_followers_to_slack.py"
}
"""
ARTICLE_SERVER = """# server_deployment.json
{
"sub_domain" : "my_flask_server"
"build command" : "pip install -r requirements.txt",
"start command" : "flask run --port 8080 --host 0.0.0.0",
"port" : 8080
}
"""
DESIGN_EXAMPLES = {
    "cron.json": """// cron.json
{"cron_frequency": "0 9 * * 5", "script_to_run": "instagram_followers_to_slack.py",
 "timezone": "America/New_York", "timeout_seconds": 600, "retries": 1,
 "concurrency": "skip", "catch_up": "latest", "notify": {"email": ["me@corp"]}}""",
    "webhook.json": """// webhook.json
{"sub_domain": "salesforce_data_lookup", "script_to_run": "webhook_microservice.py",
 "auth": "api_key", "mode": "sync", "timeout_seconds": 30}""",
    "server_deployment.json": """// server_deployment.json
{"sub_domain": "my_flask_server", "build command": "pip install -r requirements.txt",
 "start command": "flask run --port $PORT --host 0.0.0.0", "port": 8080}""",
    "service.json": """// service.json
{"name": "salesforce", "kind": "code", "start command": "python service.py",
 "secrets": ["SALESFORCE_API_KEY"], "description": "Customers in Salesforce"}""",
}
MINIMAL: dict[str, dict[str, Any]] = {
    "cron.json": {"cron_frequency": "0 9 * * 5", "script_to_run": "main.py"},
    "webhook.json": {"sub_domain": "lookup", "script_to_run": "main.py"},
    "server_deployment.json": {"sub_domain": "app", "start_command": "python app.py"},
    "service.json": {
        "name": "sales",
        "kind": "code",
        "description": "Sales figures",
        "start_command": "python service.py",
    },
}


def problems_in(file: str, text: str) -> list[Problem]:
    with pytest.raises(ConfigInvalid) as raised:
        parse_config(file, text, file)
    return raised.value.problems


def only_problem(file: str, text: str) -> Problem:
    found = problems_in(file, text)
    assert len(found) == 1, found
    return found[0]


# The article's own files


def test_the_articles_cron_line_is_refused_at_its_value_naming_the_bad_fields() -> None:
    problem = only_problem("cron.json", ARTICLE_CRON)
    assert (problem.line, problem.column, problem.field) == (3, 20, "cron_frequency")
    assert "day of month (field 3)" in problem.message
    assert "month (field 4)" in problem.message
    assert problem.fix is not None
    assert "'0 0 * * 0'" in problem.fix
    assert str(problem).startswith("cron.json:3:20: cron_frequency: invalid cron expression")
    assert str(problem).endswith(")")
    assert "(fix: " in str(problem)


def test_the_articles_server_file_misses_a_comma_at_the_end_of_line_3() -> None:
    problem = only_problem("server_deployment.json", ARTICLE_SERVER)
    assert (problem.line, problem.column) == (3, 33)
    assert problem.message == (
        'missing comma after `"sub_domain" : "my_flask_server"`, before `"build command"` on line 4'
    )
    assert problem.fix == "add ',' at the end of line 3"


def test_the_articles_server_file_with_its_comma_is_accepted_as_written() -> None:
    text = ARTICLE_SERVER.replace('"my_flask_server"\n', '"my_flask_server",\n')
    config = parse_config("server_deployment.json", text, "server_deployment.json")
    assert config == ServerConfig(
        sub_domain="my_flask_server",
        build_command="pip install -r requirements.txt",
        start_command="flask run --port 8080 --host 0.0.0.0",
        port=8080,
    )


@pytest.mark.parametrize("file", CONFIG_FILES)
def test_the_design_examples_are_accepted_comments_and_all(file: str) -> None:
    config = parse_config(file, DESIGN_EXAMPLES[file], file)
    assert (
        type(config)
        is {
            "cron.json": CronConfig,
            "webhook.json": WebhookConfig,
            "server_deployment.json": ServerConfig,
            "service.json": ServiceConfig,
        }[file]
    )


def test_a_cron_config_takes_its_values_and_documented_defaults() -> None:
    config = parse_config("cron", DESIGN_EXAMPLES["cron.json"], "cron.json")
    assert isinstance(config, CronConfig)
    assert config.notify.email == ["me@corp"]
    assert (config.notify.slack, config.notify.webhook) == (True, True)
    assert config.schedule().timezone == "America/New_York"
    defaults = CronConfig.model_validate(MINIMAL["cron.json"])
    assert defaults.model_dump() == {
        "cron_frequency": "0 9 * * 5",
        "script_to_run": "main.py",
        "timezone": "UTC",
        "timeout_seconds": 600,
        "retries": 0,
        "retry_backoff_seconds": 30,
        "concurrency": "skip",
        "catch_up": "latest",
        "memory_mb": 1024,
        "env": {},
        "notify": {"email": [], "slack": True, "webhook": True},
    }


def test_the_other_kinds_defaults() -> None:
    webhook = WebhookConfig.model_validate(MINIMAL["webhook.json"])
    assert (webhook.auth, webhook.mode, webhook.timeout_seconds, webhook.secret) == (
        "api_key",
        "sync",
        30,
        None,
    )
    server = ServerConfig.model_validate(MINIMAL["server_deployment.json"])
    assert (server.build_command, server.port, server.health_path, server.auth) == (
        None,
        None,
        "/",
        "api_key",
    )
    service = ServiceConfig.model_validate(MINIMAL["service.json"])
    assert (service.secrets, service.port, service.memory_mb) == ([], None, 1024)


# Spellings


@pytest.mark.parametrize("spelling", ["build command", "build_command"])
def test_the_articles_spelling_and_its_snake_case_twin_are_the_same_setting(spelling: str) -> None:
    document = {"sub_domain": "app", "start command": "python app.py", spelling: "make"}
    config = parse_config("server", json.dumps(document), "server_deployment.json")
    assert isinstance(config, ServerConfig)
    assert (config.build_command, config.start_command) == ("make", "python app.py")


def test_both_spellings_at_once_are_refused_at_the_second() -> None:
    text = '{"sub_domain": "app", "start_command": "a",\n "start command": "b"}'
    problem = only_problem("server_deployment.json", text)
    assert (problem.line, problem.column, problem.field) == (2, 2, "start command")
    assert problem.message == (
        "repeats 'start_command' (line 1): two spellings of the same setting"
    )


@pytest.mark.parametrize(
    ("key", "fix"),
    [
        ("concurency", "did you mean 'concurrency'"),
        ("cron frequency", "did you mean 'cron_frequency'?"),
        ("Script-To-Run", "did you mean 'script_to_run'?"),
        ("catchup", "did you mean 'catch_up'?"),
        ("colour", "remove it; the keys are: catch_up, concurrency, cron_frequency"),
    ],
)
def test_an_unknown_key_is_pointed_at_with_the_key_meant(key: str, fix: str) -> None:
    text = '{"cron_frequency": "@daily", "script_to_run": "main.py",\n  ' + json.dumps(key) + ": 1}"
    found = [problem for problem in problems_in("cron.json", text) if problem.field == key]
    assert len(found) == 1
    assert (found[0].line, found[0].column, found[0].message) == (2, 3, "unknown key")
    assert found[0].fix is not None
    assert found[0].fix.startswith(fix)


def test_an_unknown_nested_key_is_named_by_its_path() -> None:
    text = '{"cron_frequency": "@daily", "script_to_run": "main.py",\n "notify": {"emial": []}}'
    problem = only_problem("cron.json", text)
    assert (problem.line, problem.column, problem.field) == (2, 13, "notify.emial")
    assert problem.fix == "did you mean 'email'?"


# Every field's bad value


def _line_of(text: str, field: str) -> int:
    """Where a problem about `field` belongs: its key's line, or the object's first."""
    key = json.dumps(field.split(".")[-1]) + ":"
    return next((n for n, line in enumerate(text.splitlines(), 1) if key in line), 1)


BAD_VALUES: list[tuple[str, str, Any, str, str, str]] = [
    # file, field, value (None: leave it out), problem's field, message, fix
    ("cron.json", "cron_frequency", "", "cron_frequency", "must not be empty", '"0 9 * * 5"'),
    ("cron.json", "cron_frequency", 5, "cron_frequency", "must be text", '"5"'),
    ("cron.json", "cron_frequency", "*/5 * *", "cron_frequency", "has 3 fields", "'@daily'"),
    ("cron.json", "cron_frequency", None, "cron_frequency", "is required", '"0 9 * * 5"'),
    ("cron.json", "script_to_run", "main.sh", "script_to_run", "not a Python file", ".py"),
    ("cron.json", "script_to_run", "/srv/main.py", "script_to_run", "outside the", "relative"),
    ("cron.json", "script_to_run", "../main.py", "script_to_run", "outside the", "relative"),
    ("cron.json", "script_to_run", "jobs\\main.py", "script_to_run", "uses '\\'", "'/'"),
    ("cron.json", "timezone", "Europe/Londn", "timezone", "unknown time zone", "Europe/London"),
    ("cron.json", "timeout_seconds", 0, "timeout_seconds", "out of range", "from 1 to 86400"),
    ("cron.json", "timeout_seconds", "600", "timeout_seconds", "whole number", "600 without"),
    ("cron.json", "timeout_seconds", 1.5, "timeout_seconds", "whole number", "e.g. 2"),
    ("cron.json", "retries", 11, "retries", "out of range", "from 0 to 10"),
    ("cron.json", "retries", True, "retries", "not a boolean true", '"retries"'),
    ("cron.json", "retry_backoff_seconds", 0, "retry_backoff_seconds", "range", "from 1"),
    ("cron.json", "concurrency", "Queue", "concurrency", "not one of", "did you mean 'queue'"),
    ("cron.json", "catch_up", "lastest", "catch_up", "not one of", "did you mean 'latest'"),
    ("cron.json", "memory_mb", 32, "memory_mb", "out of range", "from 64 to 65536"),
    ("cron.json", "env", {"lower": "x"}, "env.lower", "not an environment", "UPPER_CASE"),
    ("cron.json", "env", {"INTERNAL_API_KEY": "x"}, "env.INTERNAL_API_KEY", "set by the", "BAY_"),
    ("cron.json", "env", {"BAY_URL": "x"}, "env.BAY_URL", "set by the platform", "another"),
    ("cron.json", "env", {"N": 1}, "env.N", "must be text", 'double quotes: "1"'),
    ("cron.json", "env", ["N=1"], "env", "must be an object", '"REPORT_CHANNEL"'),
    ("cron.json", "notify", {"email": ["nobody"]}, "notify.email", "not an e-mail", "@"),
    ("cron.json", "notify", {"email": "a@b.c"}, "notify.email", "must be a list", '["a@b.c"]'),
    ("cron.json", "notify", {"slack": "true"}, "notify.slack", "true or false", "true without"),
    ("cron.json", "notify", "a@b.c", "notify", "must be an object", "notify"),
    ("webhook.json", "sub_domain", "Sales Lookup", "sub_domain", "becomes a URL", "sales_lookup"),
    ("webhook.json", "sub_domain", "1st", "sub_domain", "cannot be a name", "'x1st'"),
    ("webhook.json", "auth", "apikey", "auth", "not one of", "did you mean 'api_key'"),
    ("webhook.json", "secret", "STRIPE_KEY", "secret", "only with auth hmac", '"hmac-sha256"'),
    ("webhook.json", "mode", "later", "mode", "not one of: sync, async", "use one of"),
    ("webhook.json", "timeout_seconds", 900, "timeout_seconds", "over the 300 s", "async"),
    ("webhook.json", "retries", 2, "retries", "only to async webhooks", '"mode": "async"'),
    ("server_deployment.json", "start_command", "", "start_command", "is empty", "python"),
    ("server_deployment.json", "start_command", "run 'x", "start_command", "quotation", "quote"),
    ("server_deployment.json", "start_command", None, "start_command", "is required", "$PORT"),
    ("server_deployment.json", "build_command", 7, "build_command", "must be text", '"7"'),
    ("server_deployment.json", "port", 70000, "port", "out of range", "from 1 to 65535"),
    ("server_deployment.json", "port", "8080", "port", "whole number", "8080 without quotes"),
    ("server_deployment.json", "health_path", "health", "health_path", "not a URL", "'/'"),
    ("server_deployment.json", "auth", "hmac-sha256", "auth", "api_key, public", "use one"),
    ("service.json", "name", "Sales!", "name", "cannot be a name", "'sales'"),
    ("service.json", "kind", "lambda", "kind", "not one of: sql, http, code", "use one of"),
    ("service.json", "description", "", "description", "must not be empty", "Salesforce"),
    ("service.json", "description", None, "description", "is required", '"description"'),
    ("service.json", "start_command", None, "start_command", "needs the command", "service.py"),
    ("service.json", "secrets", ["db_url"], "secrets", "not a secret name", "never the"),
    ("service.json", "secrets", ["A", "B", "A"], "secrets", "A listed twice", "once"),
    ("service.json", "port", 0, "port", "out of range", "from 1 to 65535"),
]


@pytest.mark.parametrize(
    ("file", "key", "value", "field", "message", "fix"),
    BAD_VALUES,
    ids=[f"{case[0]}-{case[1]}={case[2]!r}" for case in BAD_VALUES],
)
def test_a_bad_value_names_its_field_line_and_fix(
    file: str, key: str, value: Any, field: str, message: str, fix: str
) -> None:
    document = dict(MINIMAL[file])
    if file == "webhook.json" and key == "secret":
        document["auth"] = "api_key"
    if value is None:
        del document[key]
    else:
        document[key] = value
    text = json.dumps(document, indent=1)
    problem = only_problem(file, text)
    assert problem.field == field
    assert problem.file == file
    assert problem.line == _line_of(text, field)
    assert message in problem.message
    assert problem.fix is not None
    assert fix in problem.fix


def test_hmac_auth_needs_the_secrets_name_and_not_its_value() -> None:
    base = {"sub_domain": "stripe", "script_to_run": "main.py", "auth": "hmac-sha256"}
    problem = only_problem("webhook.json", json.dumps(base))
    assert (problem.field, problem.line, problem.column) == ("secret", 1, 1)
    assert "needs the secret that holds the signing key" in problem.message
    leaked = only_problem("webhook.json", json.dumps(base | {"secret": "whsec_abc123"}))
    assert leaked.message == "'whsec_abc123' is not a secret name"
    signed = parse_config("webhook", json.dumps(base | {"secret": "STRIPE_SECRET"}), "w")
    assert isinstance(signed, WebhookConfig)
    assert signed.secret == "STRIPE_SECRET"


def test_a_code_service_keeps_secrets_out_of_env_and_refuses_unknown_keys() -> None:
    document = MINIMAL["service.json"] | {"secrets": ["DB_URL"], "env": {"DB_URL": "x"}}
    problem = only_problem("service.json", json.dumps(document))
    assert (problem.field, problem.message) == ("env", "DB_URL is both a secret and in env")
    with pytest.raises(ValueError, match="unknown key for a code service: tables"):
        ServiceConfig.model_validate(MINIMAL["service.json"] | {"tables": "*"})


def test_other_service_kinds_keep_their_own_keys_for_the_services_layer() -> None:
    document = {
        "name": "sales",
        "kind": "sql",
        "description": "Sales",
        "secret": "SALES_DB",
        "tables": {"customer": {"key": "email", "read only": ["email"]}},
    }
    config = parse_config("service.json", json.dumps(document), "service.json")
    assert isinstance(config, ServiceConfig)
    assert config.model_extra == {
        "secret": "SALES_DB",
        "tables": {"customer": {"key": "email", "read only": ["email"]}},
    }
    with_code_keys = document | {"start command": "python x.py", "secrets": ["A"]}
    found = problems_in("service.json", json.dumps(with_code_keys))
    assert [(problem.field, problem.fix) for problem in found] == [
        ("start command", 'remove "start_command", or set "kind": "code"'),
        ("secrets", 'remove "secrets", or set "kind": "code"'),
    ]


def test_every_problem_is_reported_at_once_in_the_order_of_the_file() -> None:
    text = """{
  "cron_frequency": "61 * * * *",
  "script_to_run": "report.sh",
  "timezone": "Mars/Base",
  "concurency": "skip",
  "retries": -1
}"""
    found = problems_in("cron.json", text)
    assert [(problem.line, problem.field) for problem in found] == [
        (2, "cron_frequency"),
        (3, "script_to_run"),
        (4, "timezone"),
        (5, "concurency"),
        (6, "retries"),
    ]


# Syntax


@pytest.mark.parametrize(
    ("text", "line", "column", "message", "fix"),
    [
        (
            '{"cron_frequency": "@daily",\n "script_to_run": "a.py",\n}',
            2,
            25,
            "a comma with nothing after it before '}' (JSON allows no trailing comma)",
            "remove the ',' at line 2, column 25",
        ),
        (
            '{"cron_frequency": "@daily" "script_to_run": "a.py"}',
            1,
            28,
            'missing comma after `"cron_frequency": "@daily"`, before `"script_to_run"` on line 1',
            "add ',' at line 1, column 28",
        ),
        (
            "{'cron_frequency': '@daily'}",
            1,
            2,
            "text is written in double quotes in JSON, not single quotes",
            "replace the ' quotes with \"",
        ),
        ('{"retries": True}', 1, 13, "True is Python, not JSON", "write true"),
        ('{"retries": None}', 1, 13, "None is Python, not JSON", "write null"),
        ('{"mode": sync}', 1, 10, "sync is not a JSON value", 'put text in double quotes: "sync"'),
        ('{cron_frequency: "@daily"}', 1, 2, "expected a key in double quotes", '"key": value'),
        ('{"a" 1}', 1, 6, "missing ':' after the key `\"a\"`", 'write "key": value'),
        ('{"a": "open\n}', 1, 12, "holds a tab or line break as is", '" on this line'),
        ('{"a": "open', 1, 7, "never closed", 'add the closing " on line 1'),
        ('{"a": "C:\\temp\\x"}', 1, 15, "a backslash starts an escape", "use / in paths"),
        ('{"a": 1', 1, 8, "the file ends before its object is closed", "close every {"),
        ('{"a": 1}\n{"b": 2}', 2, 1, "more after the end of the config's {...}", "one object"),
    ],
)
def test_a_syntax_error_says_where_and_what_to_write(
    text: str, line: int, column: int, message: str, fix: str
) -> None:
    problem = only_problem("cron.json", text)
    assert (problem.file, problem.line, problem.column, problem.field) == (
        "cron.json",
        line,
        column,
        None,
    )
    assert message in problem.message
    assert problem.fix is not None
    assert fix in problem.fix


def test_a_key_given_twice_is_pointed_at_where_it_repeats() -> None:
    text = '{"cron_frequency": "@daily",\n "notify": {"slack": true,\n  "slack": false}}'
    problem = only_problem("cron.json", text)
    assert (problem.line, problem.column, problem.field) == (3, 3, "notify.slack")
    assert problem.message == "given twice (first on line 2)"


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "no JSON value"), ("# only a comment\n// and another", "no JSON value")],
)
def test_an_empty_file_gets_a_minimal_example(text: str, message: str) -> None:
    problem = only_problem("webhook.json", text)
    assert message in problem.message
    assert problem.fix == 'write {"sub_domain": "my_webhook", "script_to_run": "main.py"}'


def test_a_config_that_is_not_an_object_is_refused() -> None:
    problem = only_problem("cron.json", '\n  ["0 9 * * 5", "main.py"]')
    assert (problem.line, problem.column) == (2, 3)
    assert problem.message == "holds a list; a config file is one object {...}"


def test_crlf_line_ends_keep_lines_and_columns() -> None:
    text = '{\r\n"cron_frequency": "0 0 0 0 0",\r\n"script_to_run": "a.py"}'
    problem = only_problem("cron.json", text)
    assert (problem.line, problem.column) == (2, 19)


def test_parse_config_takes_a_kind_or_a_file_name() -> None:
    text = json.dumps(MINIMAL["webhook.json"])
    assert parse_config("webhook", text, "x") == parse_config("webhook.json", text, "x")
    with pytest.raises(ValueError, match=r"unknown deployment config 'lambda.json'"):
        parse_config("lambda.json", text, "x")


def test_problems_travel_as_a_400_with_one_error_per_problem() -> None:
    with pytest.raises(ConfigInvalid) as raised:
        parse_config("cron", ARTICLE_CRON, "cron.json")
    error = raised.value
    assert isinstance(error, InvalidInput)
    assert error.status == 400
    assert error.message.startswith("1 problem: cron.json:3:20: cron_frequency: ")
    assert error.errors is not None
    assert error.errors[0]["loc"] == ["cron.json", "cron_frequency"]
    assert (error.errors[0]["line"], error.errors[0]["column"]) == (3, 20)
    assert "0 0 * * 0" in error.errors[0]["fix"]


def test_a_problem_renders_like_a_compiler_message() -> None:
    assert str(Problem("cron.json", 3, 20, "retries", "too many", "use 3")) == (
        "cron.json:3:20: retries: too many (fix: use 3)"
    )
    assert str(Problem("README.md", None, None, None, "missing")) == "README.md: missing"


# Folders


def make_folder(folder: Path, files: Mapping[str, str | bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return folder


CRON_FOLDER: dict[str, str | bytes] = {
    "cron.json": DESIGN_EXAMPLES["cron.json"],
    "instagram_followers_to_slack.py": "print('followers')\n",
    "README.md": "# Followers to Slack\nPosts the follower count every Friday.\n",
    "requirements.txt": "requests>=2\n",
}


def test_a_complete_folder_loads(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "followers", CRON_FOLDER)
    check = check_folder(folder)
    assert check.ok
    assert check.problems == []
    assert (check.kind, check.config_file) == ("cron", "cron.json")
    loaded = load_folder(folder)
    assert isinstance(loaded.config, CronConfig)
    assert loaded.readme.startswith("# Followers to Slack")
    assert loaded.requirements == "requests>=2\n"


def test_a_folder_without_requirements_needs_none(tmp_path: Path) -> None:
    files = {name: text for name, text in CRON_FOLDER.items() if name != "requirements.txt"}
    assert load_folder(make_folder(tmp_path / "f", files)).requirements is None


def test_a_folder_reports_every_problem_at_once(tmp_path: Path) -> None:
    folder = make_folder(
        tmp_path / "messy",
        {
            "cron.json": ARTICLE_CRON.replace("instagram_followers", "instagram_follower"),
            "webhook.json": json.dumps(MINIMAL["webhook.json"]),
            "instagram_followers_to_slack.py": "",
            "main.py": "",
            "requirements.txt": b"requests\n\xff\xfe\n",
        },
    )
    check = check_folder(folder)
    assert not check.ok
    assert check.kind is None
    assert check.config is None
    assert [str(problem) for problem in check.problems] == [
        "messy/: holds 2 config files (cron.json, webhook.json); a folder is one deployment "
        "(fix: keep one; move each other deployment to a folder of its own)",
        f"cron.json:3:20: cron_frequency: {check.problems[1].message} "
        f"(fix: {check.problems[1].fix})",
        "cron.json:4:19: script_to_run: there is no file 'instagram_follower_to_slack.py' in "
        "the folder (fix: did you mean 'instagram_followers_to_slack.py'?)",
        "README.md: missing: documentation is required, so a folder without one is not "
        "deployed (fix: write README.md: what this deployment does, its inputs and outputs, "
        "and whom to ask)",
        "requirements.txt:2:1: is not UTF-8 text (fix: save the file as UTF-8 in your editor)",
    ]
    assert "invalid cron expression '0 0 0 0 0'" in check.problems[1].message
    with pytest.raises(FolderInvalid) as raised:
        load_folder(folder)
    assert raised.value.problems == check.problems


def test_a_folder_without_a_config_file_is_told_which_to_add(tmp_path: Path) -> None:
    files = {name: text for name, text in CRON_FOLDER.items() if name != "cron.json"}
    check = check_folder(make_folder(tmp_path / "job", files))
    assert [(problem.file, problem.message) for problem in check.problems] == [
        (
            "job/",
            "no deployment config file: expected one of cron.json, webhook.json, "
            "server_deployment.json, service.json",
        )
    ]
    assert check.problems[0].fix is not None
    assert "bay new" in check.problems[0].fix


@pytest.mark.parametrize("misnamed", ["Cron.json", "cron.jsonc", "crons.json"])
def test_a_misnamed_config_file_is_to_be_renamed(tmp_path: Path, misnamed: str) -> None:
    files = {name: text for name, text in CRON_FOLDER.items() if name != "cron.json"}
    folder = make_folder(tmp_path / "job", files | {misnamed: CRON_FOLDER["cron.json"]})
    (problem,) = check_folder(folder).problems
    assert problem.fix == f"rename {misnamed} to cron.json"


def test_the_readme_is_required_and_must_say_something(tmp_path: Path) -> None:
    lower = {name: text for name, text in CRON_FOLDER.items() if name != "README.md"}
    (problem,) = check_folder(make_folder(tmp_path / "a", lower | {"readme.md": "x"})).problems
    assert (problem.file, problem.fix) == ("README.md", "rename readme.md to README.md")
    empty = make_folder(tmp_path / "b", CRON_FOLDER | {"README.md": " \n\n"})
    (problem,) = check_folder(empty).problems
    assert problem.message == "is empty: documentation is required"


def test_files_left_out_by_bayignore_are_named(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "job", CRON_FOLDER | {".bayignore": "*.py\nREADME.md\n"})
    problems = check_folder(folder).problems
    assert [(problem.file, problem.field, problem.line) for problem in problems] == [
        ("cron.json", "script_to_run", 2),
        ("README.md", None, None),
    ]
    assert problems[0].message == (
        "instagram_followers_to_slack.py is left out of the bundle by .bayignore or the "
        "default ignores"
    )


def test_a_script_in_a_subfolder_is_found(tmp_path: Path) -> None:
    cron = json.dumps({"cron_frequency": "@daily", "script_to_run": "jobs/./report.py"})
    files = {"cron.json": cron, "jobs/report.py": "", "README.md": "Reports."}
    check = check_folder(make_folder(tmp_path / "job", files))
    assert check.ok
    assert isinstance(check.config, CronConfig)
    assert check.config.script_to_run == "jobs/report.py"


def test_a_folder_without_python_files_is_told_to_create_the_script(tmp_path: Path) -> None:
    files = {name: text for name, text in CRON_FOLDER.items() if not name.endswith(".py")}
    (problem,) = check_folder(make_folder(tmp_path / "job", files)).problems
    assert problem.fix == (
        "create instagram_followers_to_slack.py: the folder holds no Python file"
    )


def test_a_config_file_that_is_not_utf8_is_pointed_at(tmp_path: Path) -> None:
    bad: dict[str, str | bytes] = {
        "cron.json": b'{"cron_frequency": "@daily",\n "script_to_run": "caf\xe9.py"}'
    }
    (problem,) = check_folder(make_folder(tmp_path / "job", CRON_FOLDER | bad)).problems
    assert str(problem) == (
        "cron.json:2:23: is not UTF-8 text (fix: save the file as UTF-8 in your editor)"
    )


def test_a_link_out_of_the_folder_is_a_problem_of_the_folder(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "job", CRON_FOLDER)
    (folder / "passwords").symlink_to("/etc/passwd")
    (problem,) = check_folder(folder).problems
    assert problem.file == "job/"
    assert problem.message.startswith("passwords links outside the folder (to /etc/passwd)")


def test_a_path_that_is_not_a_folder(tmp_path: Path) -> None:
    (problem,) = check_folder(tmp_path / "nowhere").problems
    assert problem.message == "is not a folder"


# JSON Schemas for editors


@pytest.mark.parametrize("file", CONFIG_FILES)
def test_the_published_schemas_are_up_to_date(file: str) -> None:
    published = SCHEMAS / schema_filename(file)
    assert published.is_file(), f"{published} is missing"
    assert json.loads(published.read_text()) == json_schema(file), (
        f"{published} is out of date: regenerate with "
        "`python -m servicebay.runtime.config --write-schemas docs/schemas`"
    )


def test_the_schema_writer_writes_what_is_published(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "servicebay.runtime.config", "--write-schemas", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ | {"PYTHONWARNINGS": "error"},
    )
    written = sorted(Path(line).name for line in result.stdout.split())
    assert written == sorted(schema_filename(file) for file in CONFIG_FILES)
    for name in written:
        assert (tmp_path / name).read_text() == (SCHEMAS / name).read_text()


@pytest.mark.parametrize("file", CONFIG_FILES)
def test_the_schemas_accept_the_design_examples(file: str) -> None:
    validator = jsonschema_rs.validator_for(json_schema(file))
    assert validator.is_valid(jsonc.loads(DESIGN_EXAMPLES[file]))
    assert validator.is_valid(MINIMAL[file])
    assert not validator.is_valid(MINIMAL[file] | {"colour": "blue"})


def test_a_schema_key_for_editors_is_allowed_and_ignored() -> None:
    url = "https://example.com/docs/schemas/cron.schema.json"
    document = {"$schema": url} | MINIMAL["cron.json"]
    assert parse_config("cron", json.dumps(document), "cron.json") == CronConfig.model_validate(
        MINIMAL["cron.json"]
    )
    assert jsonschema_rs.validator_for(json_schema("cron.json")).is_valid(document)


def test_the_service_schema_leaves_other_kinds_keys_to_their_kind() -> None:
    validator = jsonschema_rs.validator_for(json_schema("service.json"))
    sql = {"name": "sales", "kind": "sql", "description": "Sales", "secret": "DB", "tables": "*"}
    assert validator.is_valid(sql)
    assert not validator.is_valid(sql | {"start command": "python x.py"})
    code = {"name": "sales", "kind": "code", "description": "Sales"}
    assert not validator.is_valid(code)
    assert validator.is_valid(code | {"start command": "python service.py"})


def test_the_schema_offers_both_spellings_and_requires_one_of_them() -> None:
    validator = jsonschema_rs.validator_for(json_schema("server_deployment.json"))
    assert validator.is_valid({"sub_domain": "app", "start command": "python app.py"})
    assert validator.is_valid({"sub_domain": "app", "start_command": "python app.py"})
    assert not validator.is_valid({"sub_domain": "app"})
    assert not validator.is_valid({"sub_domain": "My App", "start_command": "python app.py"})
    properties = json_schema("cron.json")["properties"]
    assert all(properties[name].get("description") for name in properties)
