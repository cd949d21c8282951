"""The JSON shapes of the platform API (docs/api.md), in and out."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints

from servicebay.core.audit import Verification
from servicebay.core.models import ApiKey, AuditEvent, Grant, Secret, ServiceRecord, User

T = TypeVar("T")

Email = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=320, pattern=r"^[^@\s:]+@[^@\s:]+$")
]
Label = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class Strict(BaseModel):
    """Unknown fields are an error: a typo must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Page(BaseModel, Generic[T]):
    data: list[T]
    next: str | None = Field(description="Pass as `cursor` for the next page; null at the end.")


class UserIn(Strict):
    email: Email
    name: Label
    teams: list[str] = Field(default_factory=list, max_length=100)
    admin: bool = False


class UserPatch(Strict):
    name: Label | None = None
    teams: list[str] | None = Field(default=None, max_length=100)
    admin: bool | None = None
    disabled: bool | None = None


class UserOut(BaseModel):
    id: str
    email: str
    name: str
    teams: list[str]
    admin: bool
    disabled: bool
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls.model_validate(user, from_attributes=True)


class KeyIn(Strict):
    user: Email | None = Field(default=None, description="Whose key; defaults to the caller.")
    name: Label = "default"
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)

    @property
    def lifetime(self) -> timedelta | None:
        return None if self.expires_in_days is None else timedelta(days=self.expires_in_days)


class KeyOut(BaseModel):
    id: str
    user: str
    name: str
    prefix: str = Field(description="The key's first characters, to recognise it by.")
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey, user: User) -> KeyOut:
        return cls(
            id=key.id,
            user=user.email,
            name=key.name,
            prefix=key.prefix,
            created_at=key.created_at,
            expires_at=key.expires_at,
            last_used_at=key.last_used_at,
            revoked_at=key.revoked_at,
        )


class KeyCreated(KeyOut):
    key: str = Field(description="The API key itself. Shown this once; store it now.")


class MeOut(UserOut):
    key: KeyOut


class GrantIn(Strict):
    principal: str = Field(max_length=400, examples=["team:marketing"])
    resource: str = Field(max_length=400, examples=["service:sql/customer"])
    actions: list[str] = Field(min_length=1, max_length=6, examples=[["read"]])


class GrantOut(BaseModel):
    id: str
    principal: str
    resource: str
    actions: list[str]
    created_at: datetime
    created_by: str | None

    @classmethod
    def of(cls, grant: Grant) -> GrantOut:
        return cls.model_validate(grant, from_attributes=True)


class DecisionOut(BaseModel):
    allowed: bool
    reason: str
    grant: str | None
    principal: str
    resource: str
    action: str


class SecretIn(Strict):
    value: SecretStr = Field(description="Stored encrypted; never returned by any interface.")
    allow: list[str] | None = Field(
        default=None,
        max_length=200,
        description="Who may receive it: service:<name> or deployment:<name>. "
        "Omitted keeps the current allow-list (empty for a new secret).",
    )


class SecretPatch(Strict):
    allow: list[str] = Field(max_length=200)


class SecretOut(BaseModel):
    name: str
    allow: list[str]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, secret: Secret) -> SecretOut:
        return cls.model_validate(secret, from_attributes=True)


class AuditEventOut(BaseModel):
    seq: int
    ts: datetime
    request_id: str | None
    actor: str | None
    key_id: str | None
    action: str
    resource: str | None
    outcome: str
    status: int | None
    method: str | None
    path: str | None
    client: str | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEventOut:
        return cls.model_validate(event, from_attributes=True)


class VerificationOut(BaseModel):
    ok: bool
    checked: int
    head: int
    problems: list[dict[str, Any]]

    @classmethod
    def of(cls, report: Verification) -> VerificationOut:
        return cls(ok=report.ok, checked=report.checked, head=report.head, problems=report.problems)


class ServiceOut(BaseModel):
    name: str
    kind: str
    description: str
    version: int
    spec: dict[str, Any] = Field(description="The service document (names secrets, never values).")
    created_by: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, record: ServiceRecord) -> ServiceOut:
        return cls.model_validate(record, from_attributes=True)
