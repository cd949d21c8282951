"""The complete example service in docs/sdk.md works as the page says."""

from __future__ import annotations

import http.client
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from servicebay.sdk import Service, sign_identity

DOC = Path(__file__).resolve().parents[2] / "docs" / "sdk.md"


def example() -> str:
    section = DOC.read_text().split("## A code service", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found is not None
    return found[1]


def test_the_documented_example_service_answers_as_documented(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BAY_IDENTITY_KEY", "local-key")
    namespace: dict[str, Any] = {"__name__": "service"}
    exec(compile(example(), "service.py", "exec"), namespace)  # noqa: S102 -- the doc's code
    app = namespace["app"]
    assert isinstance(app, Service)
    server = app.make_server("127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    identity = sign_identity(
        b"local-key", user="ana@corp.com", teams=["sales"], request_id="r1", service="salesforce"
    )

    def call(method: str, target: str, body: Any = None) -> tuple[int, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        data = None if body is None else json.dumps(body).encode()
        connection.request(method, target, body=data, headers={"X-Bay-Identity": identity})
        answer = connection.getresponse()
        raw = answer.read()
        connection.close()
        return answer.status, json.loads(raw) if raw else None

    try:
        customer = {"email": "julius@nyknicks.com", "name": "Julius", "plan": "pro"}
        assert call("POST", "/create_customer", customer) == (
            201,
            {"created": "julius@nyknicks.com"},
        )
        status, body = call("GET", "/customer/julius@nyknicks.com")
        assert (status, body["created_by"]) == (200, "ana@corp.com")
        assert call("GET", "/customer/nobody@corp.com")[0] == 404
        assert [row["email"] for row in call("GET", "/customers?plan=pro")[1]] == [
            "julius@nyknicks.com"
        ]
        assert call("GET", "/customers?plan=free") == (200, [])
        assert call("GET", "/customers?limit=ten")[1]["errors"][0]["loc"] == ["query", "limit"]
        assert call("POST", "/create_customer", {"email": "nope"})[0] == 400
        document = app.openapi()
        assert set(document["paths"]) == {"/customer/{email}", "/customers", "/create_customer"}
    finally:
        server.shutdown()
        server.server_close()
