"""The platform's own API, `/api/v1`.

Each module's router carries the full prefix, so a route knows its whole path template
(metrics and audit events are labelled with it).
"""

from fastapi import APIRouter

from servicebay.gateway.api import (
    audit,
    deployments,
    grants,
    keys,
    me,
    runs,
    secrets,
    services,
    templates,
    users,
)

router = APIRouter()
for module in (me, users, keys, grants, secrets, services, templates, deployments, runs, audit):
    router.include_router(module.router)
