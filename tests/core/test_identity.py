"""Users and their keys: e-mails are unique whatever their case, keys say why they fail."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import event

from servicebay.core import identity
from servicebay.core.access import Authenticator
from servicebay.core.db import session_factory
from servicebay.core.errors import Conflict, InvalidInput, NotAuthenticated
from servicebay.core.models import utcnow
from tests.core.core_support import migrated_engine


@pytest.mark.parametrize("team", ["marketing", "data_science", "eu.sales", "team-7", "7up"])
def test_team_names_in_their_accepted_forms(team: str) -> None:
    assert identity.validate_teams([team]) == [team]


@pytest.mark.parametrize(
    "team", ["", "Marketing", "market ing", "_x", "-x", "a/b", "x\n", "x\x00", "a" * 64]
)
def test_team_names_that_could_confuse_a_grant_are_refused(team: str) -> None:
    with pytest.raises(InvalidInput):
        identity.validate_teams(["marketing", team])


def test_an_email_is_unique_whatever_its_case(sqlite_url: str) -> None:
    async def scenario() -> None:
        engine = await migrated_engine(sqlite_url)
        try:
            async with session_factory(engine)() as session, session.begin():
                await identity.create_user(
                    session, email="Ann@Example.com", name="Ann", teams=[], admin=False
                )
                with pytest.raises(Conflict):
                    await identity.create_user(
                        session, email=" ann@example.COM", name="Ann 2", teams=[], admin=False
                    )
                assert (await identity.get_user(session, "ANN@example.com")).name == "Ann"
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def test_keys_stop_working_when_revoked_expired_or_their_user_disabled(sqlite_url: str) -> None:
    async def scenario() -> None:
        engine = await migrated_engine(sqlite_url)
        sessions = session_factory(engine)
        try:
            async with sessions() as session, session.begin():
                ann = await identity.create_user(
                    session, email="ann@example.com", name="Ann", teams=[], admin=False
                )
                revoked = await identity.create_key(session, ann, name="r", lifetime=None)
                expired = await identity.create_key(
                    session, ann, name="e", lifetime=timedelta(days=1)
                )
                working = await identity.create_key(session, ann, name="w", lifetime=None)
                await identity.revoke_key(session, revoked.record)
                expired.record.expires_at = utcnow() - timedelta(seconds=1)
            authenticator = Authenticator(sessions, ttl=0)

            assert (await authenticator.authenticate(working.secret)).email == "ann@example.com"
            with pytest.raises(NotAuthenticated, match="revoked"):
                await authenticator.authenticate(revoked.secret)
            with pytest.raises(NotAuthenticated, match="expired"):
                await authenticator.authenticate(expired.secret)
            unknown = working.secret[:-1] + ("B" if working.secret.endswith("A") else "A")
            with pytest.raises(NotAuthenticated, match="not known"):
                await authenticator.authenticate(unknown)
            with pytest.raises(NotAuthenticated, match="malformed"):
                await authenticator.authenticate(working.secret + "x")

            async with sessions() as session, session.begin():
                user = await identity.get_user(session, "ann@example.com")
                await identity.update_user(session, user, disabled=True)
                with pytest.raises(Conflict):
                    await identity.create_key(session, user, name="new", lifetime=None)
            with pytest.raises(NotAuthenticated, match="disabled"):
                await authenticator.authenticate(working.secret)
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def test_a_key_is_looked_up_once_however_many_requests_find_it_uncached(
    sqlite_url: str,
) -> None:
    async def scenario() -> None:
        engine = await migrated_engine(sqlite_url)
        sessions = session_factory(engine)
        lookups: list[str] = []

        def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
            if "FROM api_keys" in statement:
                lookups.append(statement)

        try:
            async with sessions() as session, session.begin():
                ann = await identity.create_user(
                    session, email="ann@example.com", name="Ann", teams=[], admin=False
                )
                key = await identity.create_key(session, ann, name="k", lifetime=None)
            event.listen(engine.sync_engine, "before_cursor_execute", count)
            authenticator = Authenticator(sessions, ttl=60)

            principals = await asyncio.gather(
                *(authenticator.authenticate(key.secret) for _ in range(50))
            )

            assert {principal.email for principal in principals} == {"ann@example.com"}
            assert len(lookups) == 1
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def test_forgetting_makes_the_next_request_see_a_revocation_at_once(sqlite_url: str) -> None:
    async def scenario() -> None:
        engine = await migrated_engine(sqlite_url)
        sessions = session_factory(engine)
        try:
            async with sessions() as session, session.begin():
                ann = await identity.create_user(
                    session, email="ann@example.com", name="Ann", teams=[], admin=False
                )
                key = await identity.create_key(session, ann, name="k", lifetime=None)
            authenticator = Authenticator(sessions, ttl=60)
            assert (await authenticator.authenticate(key.secret)).email == "ann@example.com"

            async with sessions() as session, session.begin():
                record, _ = await identity.get_key(session, key.record.id)
                await identity.revoke_key(session, record)
            authenticator.forget()

            with pytest.raises(NotAuthenticated, match="revoked"):
                await authenticator.authenticate(key.secret)
        finally:
            await engine.dispose()

    asyncio.run(scenario())
