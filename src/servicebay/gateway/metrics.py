"""Prometheus metrics of the gateway, on a registry of the app's own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "servicebay_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "servicebay_http_request_duration_seconds",
            "Time from receiving a request to starting its answer (audit commit included).",
            ["route", "method"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "servicebay_http_requests_in_flight",
            "Requests being handled now.",
            registry=self.registry,
        )
        self.audit_failures = Counter(
            "servicebay_audit_write_failures",
            "Requests refused with 503 because their audit event could not be committed.",
            registry=self.registry,
        )
