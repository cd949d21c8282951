"""The service framework: documented, typed functions answer HTTP on loopback, with the
gateway's signed identity required, bad input listed, and no traceback ever answered."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from servicebay.sdk import HttpError, Identity, Service, ServiceDefinitionError, sign_identity

KEY = b"shared-identity-key"


def build(verify: bool = True) -> Service:
    app = Service(
        "salesforce",
        description="Customers in Salesforce",
        verify_identity=verify,
        identity_key=KEY if verify else None,
    )
    customers: dict[str, dict[str, Any]] = {"julius@nyknicks.com": {"name": "Julius"}}

    @app.get("/customer/{email}")
    def customer(email: str) -> dict[str, Any]:
        """One customer, by e-mail.

        Answers 404 when there is none.
        """
        if email not in customers:
            raise HttpError(404, f"no customer with the e-mail {email!r}")
        return {"email": email, **customers[email]}

    @app.get("/search")
    def search(limit: int, ratio: float = 0.5, active: bool | None = None, q: str = "") -> Any:
        """Search customers with typed filters."""
        return {"limit": limit, "ratio": ratio, "active": active, "q": q}

    @app.post("/customer", status=201)
    def create_customer(customer: dict[str, Any], caller: Identity) -> dict[str, Any]:
        """Create a customer; the caller is recorded as its creator."""
        customers[customer["email"]] = {"name": customer.get("name"), "by": caller.user}
        return {"created": customer["email"], "by": caller.user, "teams": list(caller.teams)}

    @app.delete("/customer/{email}")
    def remove(email: str) -> None:
        """Remove a customer."""
        customers.pop(email, None)

    @app.get("/later")
    async def later(n: int) -> dict[str, int]:
        """An async function is awaited."""
        return {"twice": 2 * n}

    @app.get("/boom")
    def boom() -> None:
        """Always fails, as a handler with a bug does."""
        raise RuntimeError("secret database password in the message")

    return app


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[Any] = []

    def start(app: Service) -> int:
        server = app.make_server("127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()  # fmt: skip
        servers.append(server)
        return int(server.server_address[1])

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def call(
    port: int,
    method: str,
    target: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    identity: str | None = "julius@nyknicks.com",
) -> tuple[int, dict[str, str], Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    sent = dict(headers or {})
    if identity is not None:
        sent["X-Bay-Identity"] = sign_identity(
            KEY, user=identity, teams=["marketing"], request_id="req-42", service="salesforce"
        )
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    connection.request(method, target, body=data, headers=sent)
    answer = connection.getresponse()
    raw = answer.read()
    connection.close()
    found = {name.lower(): value for name, value in answer.getheaders()}
    return answer.status, found, json.loads(raw) if raw else None


@pytest.fixture
def port(serve: Any) -> int:
    return int(serve(build()))


def test_a_path_parameter_reaches_the_function_and_its_answer_is_json(port: int) -> None:
    status, headers, body = call(port, "GET", "/customer/julius%40nyknicks.com")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert body == {"email": "julius@nyknicks.com", "name": "Julius"}


def test_query_parameters_are_converted_by_their_type_hints(port: int) -> None:
    status, _, body = call(port, "GET", "/search?limit=5&ratio=0.25&active=false&q=knicks")
    assert (status, body) == (200, {"limit": 5, "ratio": 0.25, "active": False, "q": "knicks"})
    status, _, body = call(port, "GET", "/search?limit=-3")
    assert body == {"limit": -3, "ratio": 0.5, "active": None, "q": ""}


def test_bad_input_is_one_400_problem_listing_every_bad_parameter(port: int) -> None:
    status, headers, body = call(port, "GET", "/search?ratio=nan&active=maybe&colour=red")
    assert status == 400
    assert headers["content-type"] == "application/problem+json"
    assert body["title"] == "Invalid input"
    assert body["request_id"] == "req-42"
    assert sorted((error["loc"], error["type"]) for error in body["errors"]) == [
        (["query", "active"], "type"),
        (["query", "colour"], "unknown"),
        (["query", "limit"], "missing"),
        (["query", "ratio"], "type"),
    ]
    assert "query.limit" in body["detail"]
    status, _, body = call(port, "GET", "/search?limit=" + "9" * 5000)
    assert (status, body["errors"][0]["loc"]) == (400, ["query", "limit"])


def test_a_json_body_and_the_verified_caller_reach_the_function(port: int) -> None:
    status, _, body = call(
        port, "POST", "/customer", {"email": "ana@corp.com", "name": "Ana"}, identity="ana@corp.com"
    )
    assert status == 201
    assert body == {"created": "ana@corp.com", "by": "ana@corp.com", "teams": ["marketing"]}
    assert call(port, "GET", "/customer/ana@corp.com")[2]["by"] == "ana@corp.com"


def test_a_body_of_the_wrong_shape_or_not_json_is_a_400(port: int) -> None:
    status, _, body = call(port, "POST", "/customer", [1, 2])
    assert (status, body["errors"][0]["loc"]) == (400, ["body", "customer"])
    status, _, body = call(port, "POST", "/customer", b"{not json")
    assert (status, body["errors"][0]["type"]) == (400, "json")
    status, _, body = call(port, "POST", "/customer")
    assert (status, body["errors"][0]["type"]) == (400, "missing")


def test_a_call_without_a_valid_signed_identity_is_a_401(port: int) -> None:
    status, headers, body = call(port, "GET", "/customer/julius@nyknicks.com", identity=None)
    assert status == 401
    assert "www-authenticate" in headers
    assert "X-Bay-Identity" in body["detail"]
    forged = {"X-Bay-Identity": "v1.e30.AAAA", "X-Bay-User": "boss@corp.com"}
    status, _, body = call(port, "GET", "/search?limit=1", headers=forged, identity=None)
    assert status == 401
    assert "signature does not match" in body["detail"]


def test_an_identity_signed_for_another_service_is_a_401(port: int) -> None:
    other = sign_identity(KEY, user="a@corp.com", teams=[], request_id="r", service="slack")
    status, _, body = call(
        port, "GET", "/search?limit=1", headers={"X-Bay-Identity": other}, identity=None
    )
    assert status == 401
    assert "'slack'" in body["detail"]


def test_without_verification_the_plain_headers_name_the_caller(serve: Any) -> None:
    port = serve(build(verify=False))
    status, _, body = call(
        port,
        "POST",
        "/customer",
        {"email": "local@corp.com"},
        headers={"X-Bay-User": "me@corp.com", "X-Bay-Teams": "a,b"},
        identity=None,
    )
    assert (status, body["by"], body["teams"]) == (201, "me@corp.com", ["a", "b"])


def test_an_async_function_is_awaited(port: int) -> None:
    assert call(port, "GET", "/later?n=21")[:3:2] == (200, {"twice": 42})


def test_handler_problems_unknown_paths_and_methods(port: int) -> None:
    status, _, body = call(port, "GET", "/customer/nobody@corp.com")
    assert (status, body["detail"]) == (404, "no customer with the e-mail 'nobody@corp.com'")
    assert call(port, "GET", "/nowhere")[0] == 404
    status, headers, _ = call(port, "PUT", "/customer/julius@nyknicks.com")
    assert (status, headers["allow"]) == (405, "GET, DELETE")
    status, _, body = call(port, "DELETE", "/customer/julius@nyknicks.com")
    assert (status, body) == (204, None)


def test_a_failing_handler_is_a_500_with_the_request_id_and_no_traceback(
    port: int, capfd: pytest.CaptureFixture[str]
) -> None:
    status, headers, body = call(port, "GET", "/boom")
    assert status == 500
    assert headers["content-type"] == "application/problem+json"
    assert body["request_id"] == "req-42"
    text = json.dumps(body)
    assert "Traceback" not in text
    assert "password" not in text
    logged = capfd.readouterr().err
    assert "req-42" in logged
    assert "Traceback" in logged
    assert "secret database password" in logged


def test_the_openapi_document_describes_every_operation(port: int) -> None:
    status, _, document = call(port, "GET", "/openapi.json", identity=None)
    assert status == 200
    assert document["openapi"].startswith("3.1")
    assert document["info"]["title"] == "salesforce"
    assert document["info"]["description"] == "Customers in Salesforce"
    get_one = document["paths"]["/customer/{email}"]["get"]
    assert get_one["summary"] == "One customer, by e-mail."
    assert "Answers 404" in get_one["description"]
    assert get_one["parameters"] == [
        {"name": "email", "in": "path", "required": True, "schema": {"type": "string"}}
    ]
    search = document["paths"]["/search"]["get"]
    assert {p["name"]: (p["required"], p["schema"]) for p in search["parameters"]} == {
        "limit": (True, {"type": "integer"}),
        "ratio": (False, {"type": "number", "default": 0.5}),
        "active": (False, {"type": "boolean"}),
        "q": (False, {"type": "string", "default": ""}),
    }
    create = document["paths"]["/customer"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {"type": "object"}
    assert create["parameters"] == []  # the caller's identity is not a request parameter
    assert "201" in create["responses"]
    for operations in document["paths"].values():
        for operation in operations.values():
            assert operation["description"]


def test_an_undocumented_endpoint_is_refused_when_decorated() -> None:
    app = Service("s", description="A service")
    with pytest.raises(ServiceDefinitionError, match="no docstring"):

        @app.get("/x")
        def undocumented() -> None:
            pass


@pytest.mark.parametrize(
    ("method", "path", "signature", "reason"),
    [
        ("GET", "/x", "def f(a): '''Doc.'''", "no type hint"),
        ("GET", "/x", "def f(a: dict): '''Doc.'''", "only POST, PUT and PATCH"),
        ("GET", "/x/{b}", "def f(a: int): '''Doc.'''", "no such parameter"),
        ("GET", "/x/{a}", "def f(a: int = 1): '''Doc.'''", "always given"),
        ("GET", "/x", "def f(a: bytes): '''Doc.'''", "use str, int"),
        ("GET", "/x", "def f(*a: str): '''Doc.'''", "name each"),
        ("POST", "/x", "def f(a: dict, b: list): '''Doc.'''", "at most one"),
        ("GET", "x", "def f(): '''Doc.'''", "starts with '/'"),
    ],
)
def test_an_endpoint_that_cannot_be_served_is_refused(
    method: str, path: str, signature: str, reason: str
) -> None:
    namespace: dict[str, Any] = {}
    exec(signature, namespace)  # noqa: S102 -- builds the function under test
    app = Service("s", description="A service")
    with pytest.raises(ServiceDefinitionError, match=reason):
        app.route(method, path)(namespace["f"])


def test_a_service_needs_a_port_and_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PORT", raising=False)
    monkeypatch.delenv("BAY_IDENTITY_KEY", raising=False)
    with pytest.raises(RuntimeError, match="set PORT"):
        Service("s", description="d").run()
    with pytest.raises(RuntimeError, match="BAY_IDENTITY_KEY"):
        Service("s", description="d").make_server(port=0)
    with pytest.raises(ServiceDefinitionError, match="needs a description"):
        Service("s", description=" ")
