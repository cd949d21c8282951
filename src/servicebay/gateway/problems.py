"""RFC 9457 problem details for every error path, and nothing more than they should say."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from servicebay.core.errors import ServiceBayError
from servicebay.core.redaction import redact_keys
from servicebay.gateway.context import request_context
from servicebay.gateway.limits import BodyTooLarge

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TITLES = {
    400: "Invalid input",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def problem_body(
    *,
    status: int,
    detail: str,
    instance: str,
    request_id: str,
    title: str | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    title = title or TITLES.get(status, "Error")
    body: dict[str, Any] = {
        "type": f"urn:servicebay:problem:{title.lower().replace(' ', '-')}",
        "title": title,
        "status": status,
        "detail": redact_keys(detail),  # messages may quote the bad input: never a key
        "instance": redact_keys(instance),
        "request_id": request_id,
    }
    if errors:
        body["errors"] = [_without_keys(error) for error in errors]
    return body


def _without_keys(error: dict[str, Any]) -> dict[str, Any]:
    cleaned = dict(error)
    for name, value in error.items():
        if isinstance(value, str):
            cleaned[name] = redact_keys(value)
        elif isinstance(value, list):  # `loc` names a field, and a field name may be a key
            cleaned[name] = [redact_keys(part) if isinstance(part, str) else part for part in value]
    return cleaned


def problem_response(
    scope: Scope,
    status: int,
    detail: str,
    *,
    title: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The problem answer to the request of `scope`; a refusal's reason goes to its audit."""
    context = request_context(scope)
    if status in (401, 403, 413, 429):
        context.note_refusal(detail)
    body = problem_body(
        status=status,
        detail=detail,
        instance=scope["path"],
        request_id=context.request_id,
        title=title,
        errors=errors,
    )
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Only where and why: echoing `input` could hand a secret's value back to a log.
    return [
        {
            "loc": list(error.get("loc", ())),
            "msg": error.get("msg", ""),
            "type": error.get("type", ""),
        }
        for error in exc.errors()
    ]


def error_response(scope: Scope, error: ServiceBayError) -> JSONResponse:
    """A domain error as its problem answer, for FastAPI's handler and the plain-ASGI
    fronts alike; server-side ones are logged."""
    if error.status >= 500:
        log.error("%s: %s", error.title, error.message)
    return problem_response(
        scope,
        error.status,
        error.message,
        title=error.title,
        errors=error.errors,
        headers=error.headers(),
    )


async def _on_domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceBayError)
    return error_response(request.scope, exc)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _field_errors(exc)
    where = ", ".join(".".join(str(part) for part in error["loc"]) for error in errors)
    return problem_response(
        request.scope, 400, f"the request is invalid at: {where}", errors=errors
    )


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, BodyTooLarge):
        # FastAPI turns any error while reading a body into "400 error parsing the body";
        # a streamed body over the limit is found out there, and it is a 413.
        return problem_response(request.scope, 413, str(exc.__cause__))
    detail = exc.detail if isinstance(exc.detail, str) else TITLES.get(exc.status_code, "Error")
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"nothing is served at {request.url.path}"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return problem_response(request.scope, exc.status_code, detail, headers=dict(exc.headers or {}))


async def _on_body_too_large(request: Request, exc: Exception) -> JSONResponse:
    return problem_response(request.scope, 413, str(exc))


async def _on_integrity_error(request: Request, exc: Exception) -> JSONResponse:
    # A race between two requests creating the same thing: the loser gets a clean 409.
    return problem_response(
        request.scope, 409, "the change conflicts with an existing record; retry or reload"
    )


async def _on_unstorable(request: Request, exc: Exception) -> JSONResponse:
    # The database refused a value that passed validation (a NUL character, a date out of
    # its range...): the caller's input, not a server fault; and no SQL in the answer.
    return problem_response(
        request.scope,
        400,
        "a value in the request cannot be stored (e.g. a NUL character or an out-of-range "
        "number or date)",
    )


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    context = request_context(request.scope)
    log.exception("unhandled error in request %s", context.request_id)
    return problem_response(
        request.scope, 500, f"an unexpected error occurred; quote request id {context.request_id}"
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(ServiceBayError, _on_domain_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(BodyTooLarge, _on_body_too_large)
    app.add_exception_handler(IntegrityError, _on_integrity_error)
    app.add_exception_handler(DataError, _on_unstorable)
    app.add_exception_handler(Exception, _on_unexpected)
