"""Users and their API keys."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from servicebay.core.crypto import hash_api_key, new_api_key
from servicebay.core.errors import Conflict, InvalidInput, NotFound
from servicebay.core.models import ApiKey, User, new_id, utcnow
from servicebay.core.pagination import Page, decode_cursor, page_of

TEAM_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
KEY_PREFIX_LENGTH = 12


def normalize_email(email: str) -> str:
    return email.strip().lower()


def validate_teams(teams: list[str]) -> list[str]:
    bad = [team for team in teams if not TEAM_NAME.fullmatch(team)]  # `$` allows a final \n
    if bad:
        raise InvalidInput(
            f"invalid team name(s) {', '.join(map(repr, bad))}: use lowercase letters, digits, "
            "'_', '.' or '-', starting with a letter or digit",
            errors=[
                {
                    "loc": ["body", "teams"],
                    "msg": f"invalid team name {team!r}",
                    "type": "value_error",
                }
                for team in bad
            ],
        )
    return sorted(set(teams))


async def create_user(
    session: AsyncSession, *, email: str, name: str, teams: list[str], admin: bool
) -> User:
    email = normalize_email(email)
    if await session.scalar(select(User.id).where(User.email == email)):
        raise Conflict(f"a user with e-mail {email} already exists")
    user = User(
        id=new_id("usr"),
        email=email,
        name=name,
        teams=validate_teams(teams),
        admin=admin,
        disabled=False,
    )
    session.add(user)
    await session.flush()
    return user


async def get_user(session: AsyncSession, email: str) -> User:
    user = await session.scalar(select(User).where(User.email == normalize_email(email)))
    if user is None:
        raise NotFound(f"no user with e-mail {normalize_email(email)}")
    return user


async def list_users(
    session: AsyncSession,
    *,
    team: str | None,
    include_disabled: bool,
    limit: int,
    cursor: str | None,
) -> Page[User]:
    query = select(User).order_by(User.email).limit(limit + 1)
    if not include_disabled:
        query = query.where(User.disabled.is_(False))
    after = decode_cursor(cursor)
    users: list[User] = []
    # Teams are a JSON list, so the team filter runs here; it keeps one query for every
    # backend and still fills each page.
    while len(users) <= limit:
        batch = list(
            await session.scalars(query if after is None else query.where(User.email > after))
        )
        users += [user for user in batch if team is None or team in user.teams]
        if len(batch) <= limit:
            break
        after = batch[-1].email
    return page_of(users, limit, users[limit - 1].email if len(users) > limit else None)


async def update_user(
    session: AsyncSession,
    user: User,
    *,
    name: str | None = None,
    teams: list[str] | None = None,
    admin: bool | None = None,
    disabled: bool | None = None,
) -> User:
    if name is not None:
        user.name = name
    if teams is not None:
        user.teams = validate_teams(teams)
    if admin is not None:
        user.admin = admin
    if disabled is not None:
        user.disabled = disabled
    user.updated_at = utcnow()
    await session.flush()
    return user


DISABLED_OWNER = "{email} is disabled: enable the user before issuing keys"


@dataclass(frozen=True)
class IssuedKey:
    """A freshly created key: `secret` is the only copy of the key there will ever be."""

    record: ApiKey
    secret: str


async def create_key(
    session: AsyncSession, user: User, *, name: str, lifetime: timedelta | None
) -> IssuedKey:
    """A new key of `user`, valid for `lifetime` (for good if None); the secret is in the
    answer and nowhere else."""
    [issued] = await create_keys(session, [(user, name, lifetime)])
    return issued


async def create_keys(
    session: AsyncSession, wanted: Sequence[tuple[User, str, timedelta | None]]
) -> list[IssuedKey]:
    """`create_key` for each (user, name, lifetime), inserted in one statement."""
    now = utcnow()
    issued = []
    for user, name, lifetime in wanted:
        if user.disabled:
            raise Conflict(DISABLED_OWNER.format(email=user.email))
        secret = new_api_key()
        record = ApiKey(
            id=new_id("key"),
            user_id=user.id,
            name=name,
            prefix=secret[:KEY_PREFIX_LENGTH],
            key_hash=hash_api_key(secret),
            created_at=now,
            expires_at=None if lifetime is None else now + lifetime,
        )
        issued.append(IssuedKey(record, secret))
    session.add_all([key.record for key in issued])
    await session.flush()
    return issued


async def get_key(session: AsyncSession, key_id: str) -> tuple[ApiKey, User]:
    row = (
        await session.execute(
            select(ApiKey, User).join(User, ApiKey.user_id == User.id).where(ApiKey.id == key_id)
        )
    ).first()
    if row is None:
        raise NotFound(f"no key with id {key_id}")
    return row[0], row[1]


async def list_keys(
    session: AsyncSession,
    *,
    user_id: str | None,
    include_revoked: bool,
    limit: int,
    cursor: str | None,
) -> Page[tuple[ApiKey, User]]:
    query = (
        select(ApiKey, User)
        .join(User, ApiKey.user_id == User.id)
        .order_by(ApiKey.id)
        .limit(limit + 1)
    )
    if user_id is not None:
        query = query.where(ApiKey.user_id == user_id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    if (after := decode_cursor(cursor)) is not None:
        query = query.where(ApiKey.id > after)
    rows = [(key, user) for key, user in (await session.execute(query)).tuples()]
    return page_of(rows, limit, rows[limit - 1][0].id if len(rows) > limit else None)


async def revoke_key(session: AsyncSession, key: ApiKey) -> None:
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        await session.flush()


def key_state(key: ApiKey, user: User, now: datetime) -> str | None:
    """Why this key cannot be used now, or None when it can."""
    if key.revoked_at is not None:
        return "the API key has been revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "the API key has expired"
    if user.disabled:
        return "the key's user is disabled"
    return None
