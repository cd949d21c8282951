"""Operations: liveness, readiness, Prometheus metrics, request ids, offline documentation."""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway.gateway_support import unique_email

if TYPE_CHECKING:
    from tests.conftest import Server

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def request_count(server: Server, route: str, method: str, status: int) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    for family in text_string_to_metric_families(text):
        if family.name != "servicebay_http_requests":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels == {
                "route": route, "method": method, "status": str(status),
            }:  # fmt: skip
                return float(sample.value)
    return 0.0


def test_healthz_says_ok_without_a_key(server: Server) -> None:
    answer = httpx.get(f"{server.url}/healthz")

    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


def test_readyz_says_ready_when_the_database_is_migrated_and_audit_runs(server: Server) -> None:
    answer = httpx.get(f"{server.url}/readyz")

    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "ready"
    assert set(answer.json()["checks"].values()) == {"ok"}


def test_metrics_are_prometheus_text(server: Server) -> None:
    answer = httpx.get(f"{server.url}/metrics")

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(answer.text)}
    assert {
        "servicebay_http_requests",
        "servicebay_http_request_duration_seconds",
        "servicebay_http_requests_in_flight",
    } <= names


def test_metrics_count_requests_by_route_template_and_status(
    server: Server, admin: httpx.Client
) -> None:
    route = "/api/v1/users/{email}"
    before_404 = request_count(server, route, "GET", 404)
    before_200 = request_count(server, route, "GET", 200)

    for _ in range(3):
        assert admin.get(f"/api/v1/users/{unique_email()}").status_code == 404
    assert admin.get(f"/api/v1/users/{server.admin_email}").status_code == 200

    assert request_count(server, route, "GET", 404) == before_404 + 3
    assert request_count(server, route, "GET", 200) == before_200 + 1


def test_metrics_never_label_a_raw_path(server: Server, admin: httpx.Client) -> None:
    marker = secrets.token_hex(6)
    admin.get(f"/nowhere-{marker}")
    admin.get(f"/api/v1/users/{marker}@example.com")

    text = httpx.get(f"{server.url}/metrics").text

    assert marker not in text
    assert request_count(server, "unmatched", "GET", 404) >= 1


@pytest.mark.parametrize("path", ["/healthz", "/api/v1/me", "/api/v1/nowhere", "/docs"])
def test_a_sane_request_id_is_echoed(server: Server, path: str) -> None:
    mine = f"client-{secrets.token_hex(8)}"

    answer = httpx.get(f"{server.url}{path}", headers={"X-Request-ID": mine})

    assert answer.headers.get_list("x-request-id") == [mine]


@pytest.mark.parametrize(
    "offered",
    ["short", "x" * 65, "has spaces in it", "semi;colons;here", "<script>alert(1)</script>", ""],
    ids=["too short", "too long", "spaces", "semicolons", "markup", "empty"],
)
def test_an_insane_request_id_is_replaced_by_a_new_one(server: Server, offered: str) -> None:
    answer = httpx.get(f"{server.url}/api/v1/me", headers={"X-Request-ID": offered})

    ids = answer.headers.get_list("x-request-id")
    assert len(ids) == 1
    assert ids[0] != offered
    assert re.fullmatch(r"[A-Za-z0-9._:-]{8,64}", ids[0])
    assert answer.json()["request_id"] == ids[0]


def test_every_answer_has_a_fresh_request_id(server: Server) -> None:
    ids = [httpx.get(f"{server.url}/healthz").headers["x-request-id"] for _ in range(5)]

    assert len(set(ids)) == 5


def test_the_openapi_document_describes_the_platform_api(server: Server) -> None:
    answer = httpx.get(f"{server.url}/openapi.json")

    assert answer.status_code == 200
    schema = answer.json()
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "ServiceBay"
    assert {"/api/v1/me", "/api/v1/users", "/api/v1/keys", "/api/v1/grants",
            "/api/v1/permissions/check", "/api/v1/secrets", "/api/v1/audit",
            "/healthz"} <= set(schema["paths"])  # fmt: skip
    schemes = schema["components"]["securitySchemes"].values()
    assert {scheme["type"] for scheme in schemes} == {"http", "apiKey"}
    assert {scheme.get("in") for scheme in schemes} >= {"header", "query"}


def test_the_docs_page_is_served_without_any_external_host(server: Server) -> None:
    answer = httpx.get(f"{server.url}/docs")

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    html = answer.text
    absolute = re.findall(r"""(?:https?:)?//[^\s"'<>)]+""", html)
    external = [url for url in absolute if urlsplit(url).hostname not in LOOPBACK]
    assert not external, external
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert any(asset.endswith(".js") for asset in assets), html
    assert any(asset.endswith(".css") for asset in assets), html
    for asset in assets:
        assert httpx.get(urljoin(f"{server.url}/docs", asset)).status_code == 200, asset
    assert "/openapi.json" in html
