"""Running a node: `bay serve`."""

from __future__ import annotations

import gc
import os

import uvicorn

from servicebay.core.settings import Settings
from servicebay.gateway import logs
from servicebay.gateway.app import create_app
from servicebay.runtime.node import Role


def serve(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    role: Role = Role.all,
) -> None:
    """Serve until interrupted, with the background parts of `role`; files the platform
    creates are readable by it alone."""
    os.umask(0o077)
    logs.configure(settings)
    app = create_app(settings, role)
    # Everything imported so far lives as long as the process: the collector need not
    # walk it again on every full collection under load.
    gc.freeze()
    uvicorn.run(
        app,
        host=host or settings.host,
        port=port or settings.port,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="on",
    )
