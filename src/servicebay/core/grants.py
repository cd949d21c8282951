"""Grants and the decision they drive: deny by default, explain every verdict."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from servicebay.core.errors import InvalidInput, NotFound
from servicebay.core.identity import TEAM_NAME, normalize_email
from servicebay.core.models import Grant, new_id
from servicebay.core.pagination import Page, decode_cursor, page_of

NAME = r"[a-z][a-z0-9_-]{0,62}"
RESOURCE = re.compile(
    rf"^(?:service:(?P<service>{NAME})(?:/(?P<glob>[A-Za-z0-9_.*?\[\]/-]{{1,200}}))?"
    rf"|(?:webhook|app|deployment):{NAME})$"
)
# No whitespace, ':' or control characters, and no longer than a user's e-mail column.
EMAIL = re.compile(r"[^@\s:\x00-\x1f\x7f-\x9f]+@[^@\s:\x00-\x1f\x7f-\x9f]+")
MAX_EMAIL_LENGTH = 320
ACTIONS = ("invoke", "read", "create", "update", "delete", "manage")
COVERED_BY_INVOKE = frozenset({"invoke", "read", "create", "update", "delete"})
EVERYONE = "*"


Source = Literal["body", "query"]
"""Where a value came from, for the error's `loc`."""


def _invalid(source: Source, field: str, message: str) -> InvalidInput:
    return InvalidInput(
        message, errors=[{"loc": [source, field], "msg": message, "type": "value_error"}]
    )


def _is_email(text: str) -> bool:
    return len(text) <= MAX_EMAIL_LENGTH and EMAIL.fullmatch(text) is not None


def parse_principal(text: str, *, source: Source = "body") -> str:
    """`user:<email>` (a bare e-mail is read as one), `team:<name>` or `*`."""
    text = text.strip()
    if text == EVERYONE:
        return text
    kind, _, name = text.partition(":")
    if kind == "user" and _is_email(name):
        return f"user:{normalize_email(name)}"
    if kind == "team" and TEAM_NAME.fullmatch(name):
        return text
    if ":" not in text and _is_email(text):
        return f"user:{normalize_email(text)}"
    raise _invalid(
        source, "principal", f"invalid principal {text!r}: use user:<email>, team:<name> or *"
    )


def parse_resource(text: str, *, source: Source = "body") -> str:
    # fullmatch: `$` alone would let a trailing newline through.
    if not RESOURCE.fullmatch(text):
        raise _invalid(
            source,
            "resource",
            f"invalid resource {text!r}: use service:<name>, service:<name>/<table-or-endpoint"
            "-glob>, webhook:<name>, app:<name> or deployment:<name>",
        )
    return text


def parse_actions(actions: Iterable[str]) -> list[str]:
    chosen = sorted(set(actions))
    unknown = [action for action in chosen if action not in ACTIONS]
    if unknown or not chosen:
        raise _invalid(
            "body",
            "actions",
            f"unknown action(s) {', '.join(unknown)}; choose from {', '.join(ACTIONS)}"
            if unknown
            else f"name at least one action: {', '.join(ACTIONS)}",
        )
    return chosen


@dataclass(frozen=True)
class Subject:
    """Whoever a decision is about: a user (with teams) or a whole team."""

    principal: str
    teams: tuple[str, ...] = ()
    admin: bool = False
    disabled: bool = False

    @property
    def principals(self) -> frozenset[str]:
        """Every principal string a grant could name to reach this subject."""
        names = {self.principal, *(f"team:{team}" for team in self.teams)}
        if not self.disabled:
            names.add(EVERYONE)
        return frozenset(names)


@dataclass(frozen=True)
class GrantRule:
    id: str
    principal: str
    resource: str
    actions: frozenset[str]

    def covers(self, resource: str, action: str) -> bool:
        return self.allows(action) and resource_covers(self.resource, resource)

    def allows(self, action: str) -> bool:
        return action in self.actions or ("invoke" in self.actions and action in COVERED_BY_INVOKE)


def resource_covers(granted: str, requested: str) -> bool:
    """`service:sql` covers all of `sql`; `service:sql/cust*` covers the tables it matches."""
    if granted == requested:
        return True
    base, slash, glob = granted.partition("/")
    wanted_base, wanted_slash, wanted_part = requested.partition("/")
    if base != wanted_base or not wanted_slash:
        return False
    return not slash or fnmatchcase(wanted_part, glob)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    grant: str | None = None


def decide(rules: Sequence[GrantRule], subject: Subject, resource: str, action: str) -> Decision:
    if subject.disabled:
        return Decision(False, f"{subject.principal} is disabled")
    if subject.admin:
        return Decision(True, f"{subject.principal} is an admin: admins may do everything")
    reachable = subject.principals
    for rule in rules:
        if rule.principal in reachable and rule.covers(resource, action):
            return Decision(
                True,
                f"granted to {rule.principal} by {rule.id} ({', '.join(sorted(rule.actions))} "
                f"on {rule.resource})",
                rule.id,
            )
    return Decision(
        False,
        f"no grant allows {action} on {resource} for {subject.principal}: denied by default",
    )


def rule_of(grant: Grant) -> GrantRule:
    return GrantRule(grant.id, grant.principal, grant.resource, frozenset(grant.actions))


async def load_rules(session: AsyncSession) -> list[GrantRule]:
    # Specific grants first, so the explanation names the narrowest grant that decided.
    grants = await session.scalars(select(Grant).order_by(Grant.resource.desc(), Grant.id))
    return [rule_of(grant) for grant in grants]


async def create_grant(
    session: AsyncSession, *, principal: str, resource: str, actions: list[str], created_by: str
) -> Grant:
    grant = Grant(
        id=new_id("grt"),
        principal=parse_principal(principal),
        resource=parse_resource(resource),
        actions=parse_actions(actions),
        created_by=created_by,
    )
    session.add(grant)
    await session.flush()
    return grant


async def get_grant(session: AsyncSession, grant_id: str) -> Grant:
    grant = await session.get(Grant, grant_id)
    if grant is None:
        raise NotFound(f"no grant with id {grant_id}")
    return grant


async def list_grants(
    session: AsyncSession,
    *,
    principals: Iterable[str] | None,
    resource: str | None,
    limit: int,
    cursor: str | None,
) -> Page[Grant]:
    query = select(Grant).order_by(Grant.id).limit(limit + 1)
    if principals is not None:
        query = query.where(Grant.principal.in_(list(principals)))
    if resource is not None:
        query = query.where(Grant.resource == resource)
    if (after := decode_cursor(cursor)) is not None:
        query = query.where(Grant.id > after)
    grants = list(await session.scalars(query))
    return page_of(grants, limit, grants[limit - 1].id if len(grants) > limit else None)


async def delete_grant(session: AsyncSession, grant: Grant) -> None:
    await session.delete(grant)
    await session.flush()
