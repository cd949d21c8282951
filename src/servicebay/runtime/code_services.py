"""Code services (`service.json` of kind `code`): the deployment rules the supervisor
applies besides those of every supervised process.

- **Secrets.** Each name in `secrets` must be a stored secret whose allow list holds
  `service:{name}`; checked at deploy (`check_secrets`, a 400 naming the secret and the
  `bay secrets` command that fixes it) and read again, decrypted, only when the process
  starts (`reveal_secrets`), so a secret reaches that process's environment and nothing
  else (not its build, not a log line).
- **Documentation.** Once a new version answers its health check, and before traffic
  switches to it, its `GET /openapi.json` is read (`read_openapi`); every operation must
  carry a summary or a description (`undocumented`), or the version is refused and the
  previous one keeps serving. A program that has no OpenAPI of its own (a plain Flask
  app answers 404 there) is documented by an `openapi.json` file in its folder instead:
  documentation is the folder's to give, like its README, without changing the program.
- **Publishing.** An accepted document is stored as the service's record (`services`
  table, kind `code`, with the version it describes), which is how the gateway's service
  registry mounts it at `/{name}/...` and `/docs` lists its endpoints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from servicebay.core import secret_store
from servicebay.core.crypto import MasterKey
from servicebay.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from servicebay.core.models import Deployment, ServiceRecord, User, utcnow
from servicebay.runtime.config import ServiceConfig

OPENAPI_PATH = "/openapi.json"
"""Where a code service documents itself; also its default health path."""
OPENAPI_FILE = "openapi.json"
"""The folder's own document, for a program that serves none (404 at OPENAPI_PATH)."""
OPERATION_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def resource_of(name: str) -> str:
    """The resource a code service's secrets must allow."""
    return f"service:{name}"


def secret_problem(secret: str, name: str, *, exists: bool) -> str:
    resource = resource_of(name)
    if not exists:
        return (
            f"service {name} needs secret {secret}, which does not exist: an admin sets it "
            f"with `bay secrets set {secret} --allow {resource}`"
        )
    return (
        f"secret {secret} is not allowed for {resource}: an admin allows it with "
        f"`bay secrets allow {secret} {resource}`"
    )


async def check_secrets(session: AsyncSession, config: ServiceConfig) -> None:
    """InvalidInput naming every secret the service may not have (without opening any)."""
    problems = []
    for secret in config.secrets:
        try:
            stored = await secret_store.get_secret(session, secret)
        except NotFound:
            problems.append(secret_problem(secret, config.name, exists=False))
            continue
        if resource_of(config.name) not in stored.allow:
            problems.append(secret_problem(secret, config.name, exists=True))
    if problems:
        raise InvalidInput(
            "; ".join(problems),
            errors=[
                {"loc": ["service.json", "secrets"], "msg": problem, "type": "value_error"}
                for problem in problems
            ],
        )


async def check_name_is_free(session: AsyncSession, name: str) -> None:
    """A code service cannot take the name of a registered sql or http service."""
    record = await session.get(ServiceRecord, name)
    if record is not None and record.kind != "code":
        raise Conflict(
            f"{name} is already a {record.kind} service: remove it (`bay services delete "
            f"{name}`) or choose another name"
        )


async def reveal_secrets(
    session: AsyncSession, master: MasterKey, config: ServiceConfig
) -> dict[str, str]:
    """The service's secrets by name, for its process's environment only."""
    values = {}
    for secret in config.secrets:
        try:
            values[secret] = await secret_store.reveal(
                session, master, secret, for_resource=resource_of(config.name)
            )
        except NotFound:
            raise ValueError(secret_problem(secret, config.name, exists=False)) from None
        except Forbidden:
            raise ValueError(secret_problem(secret, config.name, exists=True)) from None
    return values


async def read_openapi(
    address: str, folder: Path, *, wait_seconds: float
) -> tuple[Any, str | None]:
    """The version's OpenAPI document, from its process at `address` or else the folder's
    `openapi.json`, and why it cannot serve (None: it may)."""
    try:
        async with httpx.AsyncClient(timeout=wait_seconds, trust_env=False) as client:
            answer = await client.get(f"http://{address}{OPENAPI_PATH}")
    except httpx.HTTPError as error:
        return None, f"its {OPENAPI_PATH} could not be read ({type(error).__name__})"
    file = folder / OPENAPI_FILE
    try:
        if answer.status_code == 200:
            document = answer.json()
        elif answer.status_code == 404 and file.is_file():
            document = json.loads(file.read_text(encoding="utf-8-sig"))
        else:
            return None, (
                f"GET {OPENAPI_PATH} answered {answer.status_code}: every endpoint needs a "
                f"description, so serve the program's OpenAPI document there, or put it in "
                f"an {OPENAPI_FILE} file in the folder"
            )
    except ValueError as error:
        where = OPENAPI_PATH if answer.status_code == 200 else f"the folder's {OPENAPI_FILE}"
        return None, f"{where} is not JSON ({type(error).__name__})"
    missing = undocumented(document)
    if not missing:
        return document, None
    return document, (
        f"every endpoint needs a description, and {', '.join(missing)} has none: document "
        f"{'them' if len(missing) > 1 else 'it'} (a docstring, or `summary`/`description`)"
    )


def undocumented(document: Any) -> list[str]:
    """The operations (`METHOD /path`) without a summary or description; a document that
    is not OpenAPI at all is one problem naming what is wrong."""
    if not isinstance(document, dict) or not isinstance(document.get("paths"), dict):
        return [f"{OPENAPI_PATH} is not an OpenAPI document (it has no `paths` object)"]
    missing = []
    for path, operations in document["paths"].items():
        if not isinstance(operations, dict):
            missing.append(f"{path} (not an object of operations)")
            continue
        for method, operation in operations.items():
            if method not in OPERATION_METHODS:
                continue
            said = isinstance(operation, dict) and any(
                isinstance(operation.get(field), str) and operation[field].strip()
                for field in ("summary", "description")
            )
            if not said:
                missing.append(f"{method.upper()} {path}")
    return missing


def refusal(version: int, problem: str) -> str:
    return f"version {version} is refused: {problem}, then deploy again"


async def publish(
    session: AsyncSession,
    deployment: Deployment,
    version: int,
    description: str,
    document: dict[str, Any],
) -> None:
    """Make `document` the service's record: the registry mounts it from there."""
    record = await session.get(ServiceRecord, deployment.name)
    if record is None:
        owner = await session.scalar(select(User.email).where(User.id == deployment.owner_id))
        record = ServiceRecord(
            name=deployment.name, kind="code", version=0, created_by=owner or "-"
        )
        session.add(record)
    record.description = description
    record.spec = {
        "name": deployment.name,
        "kind": "code",
        "description": description,
        "deployment_version": version,
        "openapi": document,
    }
    record.version += 1
    record.updated_at = utcnow()


async def unpublish(session: AsyncSession, name: str) -> None:
    """The deployment is gone: so is its service."""
    await session.execute(
        delete(ServiceRecord).where(ServiceRecord.name == name, ServiceRecord.kind == "code")
    )
