"""The staged SDK runs in a bare interpreter, and importing `servicebay` stays cheap."""

from __future__ import annotations

import base64
import json
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from servicebay.runtime.sdk_stage import stage_sdk

if TYPE_CHECKING:
    from tests.conftest import Server

SERVER_LIBRARIES = ("fastapi", "starlette", "sqlalchemy", "pydantic", "httpx", "uvicorn")

# A webhook script as an analyst writes it, reporting what its interpreter loaded.
SCRIPT = """
import sys

from internal_sdk import webhook_response
from servicebay import Client
from servicebay.webhook import request

# Step 1 -- Pull: the caller's input, and data through ServiceBay as the script's owner.
name = request.json()["name"]
with Client() as client:
    me = client.get("api/v1/me")

# Step 2 -- Analyse.
greeting = f"hello {name}, from {me['email']}"

# Step 3 -- Answer the call.
outside = sorted(
    module for module in sys.modules
    if module.split(".")[0] not in sys.stdlib_module_names
    and module.split(".")[0] not in ("servicebay", "internal_sdk", "__main__")
)
webhook_response.send_response(
    data={"greeting": greeting, "outside_stdlib": outside, "path": sys.path,
          "sdk": sys.modules["servicebay"].__file__},
    headers={"content-type": "application/json"},
    status_code=201,
)
"""


def test_staging_copies_only_the_sdk_readable_by_anyone(tmp_path: Path) -> None:
    staged = stage_sdk(tmp_path / "sdk")
    assert staged == tmp_path / "sdk"
    stage_sdk(staged)  # again over itself, as a new version of a deployment would
    files = sorted(str(path.relative_to(staged)) for path in staged.rglob("*"))
    assert files == [
        "internal_sdk.py",
        "servicebay",
        "servicebay/__init__.py",
        "servicebay/sdk",
        "servicebay/sdk/__init__.py",
        "servicebay/sdk/client.py",
        "servicebay/sdk/errors.py",
        "servicebay/sdk/identity.py",
        "servicebay/sdk/service.py",
        "servicebay/sdk/upstream.py",
        "servicebay/webhook.py",
    ]
    for path in staged.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), path


def test_a_webhook_script_runs_on_the_staged_sdk_and_the_standard_library_alone(
    server: Server, tmp_path: Path
) -> None:
    sdk = stage_sdk(tmp_path / "sdk")
    work = tmp_path / "deployment"
    work.mkdir()
    (work / "webhook_microservice.py").write_text(textwrap.dedent(SCRIPT))
    call = tmp_path / "request.json"
    call.write_text(
        json.dumps(
            {
                "method": "POST",
                "path": "/",
                "query": [],
                "headers": [["content-type", "application/json"]],
                "body_base64": base64.b64encode(b'{"name": "Julius"}').decode(),
            }
        )
    )
    answer = tmp_path / "response.json"
    environment = {
        "PYTHONPATH": str(sdk),
        "BAY_URL": server.url,
        "INTERNAL_API_KEY": server.admin_key,
        "BAY_WEBHOOK_REQUEST": str(call),
        "BAY_WEBHOOK_RESPONSE": str(answer),
    }
    # -S: no site module, so no site-packages of this (or any) virtual environment.
    ran = subprocess.run(
        [sys.executable, "-S", "-B", "webhook_microservice.py"],
        cwd=work,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    document = json.loads(answer.read_text())
    assert document["status_code"] == 201
    assert document["headers"] == [["content-type", "application/json"]]
    body = json.loads(base64.b64decode(document["body_base64"]))
    assert body["greeting"] == f"hello Julius, from {server.admin_email}"
    assert body["outside_stdlib"] == []
    assert body["sdk"] == str(sdk / "servicebay" / "__init__.py")
    assert not [entry for entry in body["path"] if "site-packages" in entry]


def loaded_modules(code: str) -> set[str]:
    """The modules a fresh interpreter of this environment holds after running `code`."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    ran = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(ran.stdout))


def test_importing_servicebay_loads_no_server_library_and_not_even_the_sdk() -> None:
    bare = loaded_modules("import servicebay; servicebay.__version__")
    assert "servicebay.sdk" not in bare
    assert "http.client" not in bare
    with_sdk = loaded_modules(
        "from servicebay import ApiError, Client\n"
        "from servicebay.webhook import request, webhook_response"
    )
    assert "servicebay.sdk.client" in with_sdk
    for modules in (bare, with_sdk):
        assert not [name for name in modules if name.split(".")[0] in SERVER_LIBRARIES]
