"""The gateway application: `create_app(settings, role)` builds everything a node serves.

Every node serves HTTP and sends alerts; its role says which background parts it runs
besides (the run worker and the servers' supervisor for `all` and `worker`), started with
the app and stopped, in reverse order, before it closes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import servicebay
from servicebay.core.audit import AuditRecord
from servicebay.core.instance import Instance
from servicebay.core.models import Deployment, Run
from servicebay.core.settings import Settings
from servicebay.gateway import docs, health, problems
from servicebay.gateway.api import router as api_router
from servicebay.gateway.apps import AppCalls, Apps
from servicebay.gateway.dispatch import ServiceCalls
from servicebay.gateway.envelope import Envelope
from servicebay.gateway.hooks import WebhookCalls, Webhooks
from servicebay.gateway.limits import RateLimiter
from servicebay.gateway.metrics import GatewayMetrics
from servicebay.runtime.alerts import Alerter, Streak
from servicebay.runtime.builder import Builder, default_build_uid
from servicebay.runtime.deployments import Deployer
from servicebay.runtime.layout import Layout
from servicebay.runtime.metrics import QueueWatch, RunMetrics
from servicebay.runtime.node import Component, Node, Role
from servicebay.runtime.runs import Intake
from servicebay.runtime.scheduler import Scheduler
from servicebay.runtime.supervisor import Supervisor
from servicebay.runtime.worker import Worker
from servicebay.services.registry import ServiceRegistry

log = logging.getLogger(__name__)

DESCRIPTION = """\
Every data source as a documented, permissioned REST service.

Authenticate with your API key: `Authorization: Bearer bay_...`, `X-API-Key: bay_...`
or `?api_key=bay_...`. Errors are `application/problem+json` (RFC 9457).
"""


def create_app(settings: Settings, role: Role = Role.all) -> Envelope:
    """The FastAPI app inside its envelope, which sits outside FastAPI's own error handling
    so that even a 500 answer carries a request id and is audited."""
    metrics = GatewayMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        instance = await Instance.open(settings)
        app.state.instance = instance
        app.state.services = ServiceRegistry(
            instance.sessions, instance.master_key, ttl=settings.auth_cache_seconds
        )
        app.state.intake = Intake(instance.sessions)
        app.state.alerter = alerter = Alerter(instance, registry=metrics.registry)
        run_metrics = RunMetrics(metrics.registry)

        async def run_finished(deployment: Deployment, run: Run, streak: Streak | None) -> None:
            run_metrics.observe(deployment, run)
            if streak is not None:
                alerter.announce(deployment, run, streak)

        layout = Layout(settings.home)
        app.state.deployer = Deployer(
            instance.sessions,
            layout,
            Builder(layout, uid=default_build_uid()),
            on_failure=alerter.build_failed,
        )
        components: list[Component] = [
            alerter,
            QueueWatch(instance.sessions, run_metrics),
            app.state.deployer,
        ]
        if role.runs(Role.worker):
            app.state.worker = Worker(instance, on_finished=run_finished)
            components.append(app.state.worker)
        if role.runs(Role.scheduler):
            wake = app.state.worker.wake if app.state.worker else None
            components.append(
                Scheduler(instance.engine, registry=metrics.registry, on_enqueued=wake)
            )
        app.state.webhooks = Webhooks(instance, app.state.worker, on_finished=run_finished)
        components.append(app.state.webhooks)
        if role.runs(Role.worker):
            app.state.supervisor = Supervisor(instance, on_crash_loop=alerter.server_crash_looping)
            app.state.deployer.on_ready = app.state.supervisor.wake
            components.append(app.state.supervisor)
        routes = app.state.supervisor.routes if app.state.supervisor else None
        app.state.apps = Apps(instance, routes)
        components.append(app.state.apps)
        node = Node(components)
        await instance.audit.write(AuditRecord(action="gateway.start", outcome="allowed"))
        try:
            await node.start()
            log.info(
                "ServiceBay %s serving %s as role %s",
                servicebay.__version__,
                settings.base_url,
                role,
            )
            yield
        finally:
            await node.stop()
            await app.state.services.close()
            await instance.close()

    app = FastAPI(
        title="ServiceBay",
        version=servicebay.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        redirect_slashes=False,
    )
    app.state.metrics = metrics
    app.state.worker = None
    app.state.supervisor = None
    app.state.rate_limiter = RateLimiter(
        per_minute=settings.rate_limit_per_minute, burst=settings.rate_limit_burst
    )
    problems.install(app)
    docs.install(app, lambda: app.state.services)
    app.include_router(health.router)
    app.include_router(api_router)
    return Envelope(
        AppCalls(
            WebhookCalls(ServiceCalls(app, app.state), app.state, domain=settings.domain),
            app.state,
            domain=settings.domain,
        ),
        audit=lambda: get_instance_of(app).audit,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
    )


def get_instance_of(app: FastAPI) -> Instance:
    instance = app.state.instance
    assert isinstance(instance, Instance)
    return instance
