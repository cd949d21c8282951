"""Named credentials, sealed with the master key, readable only by what they are allowed for.

Nothing in this module returns a value to a person: `reveal` is for the platform's own
injection into a service or deployment on its allow-list.
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from servicebay.core.crypto import MasterKey
from servicebay.core.errors import Forbidden, InvalidInput, NotFound
from servicebay.core.grants import NAME
from servicebay.core.models import Secret, utcnow

SECRET_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")
ALLOW_ENTRY = re.compile(rf"^(?:(?:service|deployment):{NAME}|alerts)$")
"""Who may receive a secret: a service, a deployment, or the alerts (a Slack URL)."""
MAX_VALUE_BYTES = 64 * 1024


def validate_name(name: str) -> str:
    if not SECRET_NAME.fullmatch(name):  # fullmatch: `$` would let a final newline in
        raise InvalidInput(
            f"invalid secret name {name!r}: secrets become environment variables, so use "
            "UPPER_CASE letters, digits and '_' (e.g. SALESFORCE_API_KEY)",
            errors=[{"loc": ["path", "name"], "msg": "invalid secret name", "type": "value_error"}],
        )
    return name


def validate_allow(allow: list[str]) -> list[str]:
    bad = [entry for entry in allow if not ALLOW_ENTRY.fullmatch(entry)]
    if bad:
        raise InvalidInput(
            f"invalid allow-list entr{'y' if len(bad) == 1 else 'ies'} "
            f"{', '.join(map(repr, bad))}: use service:<name>, deployment:<name> or alerts",
            errors=[
                {"loc": ["body", "allow"], "msg": f"invalid entry {entry!r}", "type": "value_error"}
                for entry in bad
            ],
        )
    return sorted(set(allow))


async def put_secret(
    session: AsyncSession, master: MasterKey, *, name: str, value: str, allow: list[str] | None
) -> tuple[Secret, bool]:
    """Create or replace a secret's value; `allow=None` keeps an existing allow-list."""
    validate_name(name)
    encoded = value.encode()
    if not encoded:
        raise InvalidInput(
            "a secret's value may not be empty",
            errors=[{"loc": ["body", "value"], "msg": "empty value", "type": "value_error"}],
        )
    if len(encoded) > MAX_VALUE_BYTES:
        raise InvalidInput(
            f"a secret's value is limited to {MAX_VALUE_BYTES} bytes",
            errors=[{"loc": ["body", "value"], "msg": "value too long", "type": "value_error"}],
        )
    sealed = master.seal(encoded, context=f"secret:{name}")
    secret = await session.get(Secret, name)
    created = secret is None
    if secret is None:
        secret = Secret(name=name, ciphertext=sealed, key_id=master.key_id, allow=[])
        session.add(secret)
    else:
        secret.ciphertext, secret.key_id, secret.updated_at = sealed, master.key_id, utcnow()
    if allow is not None:
        secret.allow = validate_allow(allow)
    await session.flush()
    return secret, created


async def get_secret(session: AsyncSession, name: str) -> Secret:
    secret = await session.get(Secret, validate_name(name))
    if secret is None:
        raise NotFound(f"no secret named {name}")
    return secret


async def set_allow(session: AsyncSession, secret: Secret, allow: list[str]) -> Secret:
    secret.allow = validate_allow(allow)
    secret.updated_at = utcnow()
    await session.flush()
    return secret


async def list_secrets(session: AsyncSession) -> list[Secret]:
    return list(await session.scalars(select(Secret).order_by(Secret.name)))


async def delete_secret(session: AsyncSession, secret: Secret) -> None:
    await session.delete(secret)
    await session.flush()


async def reveal(session: AsyncSession, master: MasterKey, name: str, *, for_resource: str) -> str:
    """The value, for injection into `for_resource`, which must be on the allow-list."""
    secret = await get_secret(session, name)
    if for_resource not in secret.allow:
        raise Forbidden(f"secret {name} is not allowed for {for_resource}")
    return master.open(secret.ciphertext, context=f"secret:{name}").decode()
