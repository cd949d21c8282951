"""A code service built on the staged SDK runs in a bare interpreter: `app.run()` on $PORT,
the standard library alone, and the gateway's signed identity verified with BAY_IDENTITY_KEY."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from servicebay.runtime.sdk_stage import sdk_files, stage_sdk
from servicebay.sdk import sign_identity

SERVICE = """
import sys

from servicebay.sdk import Identity, Service

app = Service("greeter", description="Greets the caller")


@app.get("/hello")
def hello(caller: Identity, name: str = "world") -> dict:
    '''Greets `name`, signed by whoever called.'''
    outside = sorted(
        module for module in sys.modules
        if module.split(".")[0] not in sys.stdlib_module_names
        and module.split(".")[0] not in ("servicebay", "__main__")
    )
    return {"greeting": f"hello {name}", "from": caller.user, "outside_stdlib": outside}


app.run()
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_new_modules_are_staged() -> None:
    assert {"sdk/identity.py", "sdk/service.py"} <= set(sdk_files())


def test_a_service_on_the_staged_sdk_runs_on_port_with_the_standard_library_alone(
    tmp_path: Path,
) -> None:
    sdk = stage_sdk(tmp_path / "sdk")
    (tmp_path / "service.py").write_text(textwrap.dedent(SERVICE))
    port = free_port()
    key = "k" * 43
    environment = {"PYTHONPATH": str(sdk), "PORT": str(port), "BAY_IDENTITY_KEY": key}
    # -S: no site module, so nothing of this virtual environment is importable.
    process = subprocess.Popen(
        [sys.executable, "-S", "-B", "service.py"],
        cwd=tmp_path,
        env=environment,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        answer = None
        deadline = time.monotonic() + 20
        while answer is None and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()[1]
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                header = sign_identity(
                    key.encode(), user="ana@corp.com", teams=[], request_id="r", service="greeter"
                )
                connection.request("GET", "/hello?name=Julius", headers={"X-Bay-Identity": header})
                response = connection.getresponse()
                answer = (response.status, json.loads(response.read()))
            except ConnectionRefusedError:
                time.sleep(0.05)
        assert answer == (
            200,
            {"greeting": "hello Julius", "from": "ana@corp.com", "outside_stdlib": []},
        )
        connection.request("GET", "/hello")
        refused = connection.getresponse()
        assert refused.status == 401
        refused.read()
    finally:
        process.terminate()
        _, logged = process.communicate(timeout=10)
    assert f"listening on http://127.0.0.1:{port}" in logged
