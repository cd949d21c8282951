"""Templates for `bay new`: the built-in ones and the organisation's, listed and served.

The organisation's templates are folders in the instance's `templates_dir` (env
`BAY_TEMPLATES_DIR`, default `BAY_HOME/templates`), read on each request, so a template
added or fixed there is served at once. Any authenticated user may list and fetch them:
templates hold scaffolds, not secrets.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from servicebay.core.errors import Conflict, NotFound
from servicebay.gateway.api.common import API
from servicebay.gateway.auth import Caller, get_instance
from servicebay.gateway.schemas import Page
from servicebay.templates import catalog
from servicebay.templates.catalog import TemplateInfo
from servicebay.templates.manifest import TemplateError

log = logging.getLogger(__name__)

router = APIRouter(prefix=f"{API}/templates", tags=["templates"])
TemplateName = Annotated[str, Path(max_length=63, description="A template's name, e.g. cron.")]


@router.get("", response_model=Page[TemplateInfo], summary="List templates")
async def list_templates(request: Request, caller: Caller) -> Page[TemplateInfo]:
    """The built-in templates (`builtin: true`), then the organisation's. A template that
    cannot be used is listed with its `problem` and `kind: null`, so that one broken
    manifest never hides the others."""
    folder = get_instance(request).settings.resolved_templates_dir
    found = await asyncio.to_thread(catalog.list_templates, folder)
    return Page[TemplateInfo](data=found, next=None)


@router.get(
    "/{name}/bundle",
    response_class=Response,
    summary="Download a template",
    responses={200: {"content": {"application/gzip": {}}, "description": "A tar.gz."}},
)
async def template_bundle(request: Request, name: TemplateName, caller: Caller) -> Response:
    """The template's folder as a tar.gz of regular files (its `template.json` included),
    for `bay new` to render. A template with a link out of its folder is not served."""
    folder = get_instance(request).settings.resolved_templates_dir
    try:
        template = await asyncio.to_thread(catalog.find_template, folder, name)
    except LookupError:
        raise NotFound(
            f"there is no template named {name!r}; `bay new --list` shows the templates"
        ) from None
    except TemplateError as error:
        log.warning("template %r cannot be served: %s", name, error)
        raise Conflict(
            f"template {name!r} cannot be used: {error.message}; an admin must {error.fix}"
        ) from None
    return Response(
        catalog.pack(template),
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{name}.tar.gz"'},
    )
