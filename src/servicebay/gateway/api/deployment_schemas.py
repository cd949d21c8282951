"""The JSON shapes of `/api/v1/deployments`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from servicebay.core.models import Deployment, DeploymentVersion
from servicebay.gateway.schemas import Strict
from servicebay.runtime.supervisor import SUPERVISED_KINDS


class DeployAccepted(BaseModel):
    """A deploy received: the version is building; follow it at its URL."""

    name: str
    version: int
    kind: str
    status: str = Field(description="`building`: poll the version until ready or failed.")
    created: bool = Field(description="Whether this deploy created the deployment.")


class VersionOut(BaseModel):
    version: int
    status: str = Field(description="building, ready or failed.")
    active: bool
    bundle_digest: str
    requirements_digest: str = Field(
        description="Names the environment: versions with the same requirements share it."
    )
    created_by: str
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, version: DeploymentVersion, deployment: Deployment) -> VersionOut:
        return cls(
            **_version_fields(version),
            active=deployment.active_version == version.version,
        )


class VersionDetail(VersionOut):
    """A version with its config and (part of) its build log."""

    name: str
    kind: str
    config: dict[str, Any]
    build_log: str = Field(description="The build log from `log_offset` on.")
    log_offset: int
    log_end: int = Field(description="Pass as `log_offset` to read only what comes next.")

    @classmethod
    def of_log(
        cls, version: DeploymentVersion, deployment: Deployment, offset: int
    ) -> VersionDetail:
        return cls(
            **_version_fields(version),
            active=deployment.active_version == version.version,
            name=deployment.name,
            kind=deployment.kind,
            config=version.config,
            build_log=version.build_log[offset:],
            log_offset=offset,
            log_end=max(len(version.build_log), offset),
        )


def _version_fields(version: DeploymentVersion) -> dict[str, Any]:
    return {
        "version": version.version,
        "status": version.status,
        "bundle_digest": version.bundle_digest,
        "requirements_digest": version.requirements_digest,
        "created_by": version.created_by,
        "created_at": version.created_at,
        "finished_at": version.finished_at,
    }


class ServerOut(BaseModel):
    """A server's or code service's process, as its supervisor last recorded it."""

    state: str | None = Field(
        description="starting, running, restarting, crash_looping, refused (a code service "
        "whose only version was refused) or stopped; null before the supervisor first saw it."
    )
    reason: str | None = Field(description="Why, in words: a crash loop's cause, a restart's.")
    version: int | None = Field(description="The version serving.")
    port: int | None
    pid: int | None
    restarts: int
    since: datetime | None = Field(description="When the serving process became healthy.")
    url: str = Field(
        description="Where it answers: `{BAY_URL}/apps/{name}/`, or `{BAY_URL}/{name}/` for a "
        "code service."
    )

    @classmethod
    def of(cls, deployment: Deployment, base_url: str) -> ServerOut:
        address = deployment.server_address
        return cls(
            state=deployment.server_state,
            reason=deployment.server_reason,
            version=deployment.server_version,
            port=int(address.rsplit(":", 1)[1]) if address else None,
            pid=deployment.server_pid,
            restarts=deployment.server_restarts or 0,
            since=deployment.server_since,
            url=f"{base_url}/apps/{deployment.name}/"
            if deployment.kind == "server"
            else f"{base_url}/{deployment.name}/",
        )


class DeploymentOut(BaseModel):
    name: str
    kind: str
    owner: str = Field(description="The e-mail of whoever first deployed it.")
    active_version: int | None = Field(description="null until a version has built.")
    failing: bool = Field(description="In a failure streak (its owner was alerted).")
    domain_url: str | None = Field(
        description="`https://{name}.{BAY_DOMAIN}` for a webhook or a server, when the "
        "instance has a domain."
    )
    server: ServerOut | None = Field(description="A server deployment's process; else null.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(
        cls, deployment: Deployment, owner: str, domain: str | None, base_url: str
    ) -> DeploymentOut:
        return cls(**_deployment_fields(deployment, owner, domain, base_url))


class DeploymentDetail(DeploymentOut):
    versions: list[VersionOut] = Field(description="Newest first.")

    @classmethod
    def with_versions(
        cls,
        deployment: Deployment,
        owner: str,
        domain: str | None,
        base_url: str,
        versions: list[DeploymentVersion],
    ) -> DeploymentDetail:
        return cls(
            **_deployment_fields(deployment, owner, domain, base_url),
            versions=[VersionOut.of(version, deployment) for version in versions],
        )


def _deployment_fields(
    deployment: Deployment, owner: str, domain: str | None, base_url: str
) -> dict[str, Any]:
    served = domain is not None and deployment.kind in ("webhook", "server")
    supervised = deployment.kind in SUPERVISED_KINDS
    server = ServerOut.of(deployment, base_url) if supervised else None
    return {
        "name": deployment.name,
        "kind": deployment.kind,
        "owner": owner,
        "active_version": deployment.active_version,
        "failing": deployment.failing,
        "domain_url": f"https://{deployment.name}.{domain}" if served else None,
        "server": server,
        "created_at": deployment.created_at,
        "updated_at": deployment.updated_at,
    }


class RollbackIn(Strict):
    version: int | None = Field(
        default=None, ge=1, description="The version to make active; default: the previous one."
    )
