"""Who is calling, and may they: cached lookups that every node re-reads within seconds.

A key or grant change made on one node reaches the others when their cache entries
expire (`auth_cache_seconds`, at most 4 s); the node that made it forgets at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicebay.core.crypto import hash_api_key, is_well_formed_api_key
from servicebay.core.errors import NotAuthenticated
from servicebay.core.grants import Decision, GrantRule, Subject, decide, load_rules
from servicebay.core.identity import key_state
from servicebay.core.models import ApiKey, User, utcnow


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the user behind a key, as of the last lookup."""

    user_id: str
    email: str
    name: str
    teams: tuple[str, ...]
    admin: bool
    key_id: str

    @property
    def subject(self) -> Subject:
        return Subject(f"user:{self.email}", self.teams, self.admin)


@dataclass(frozen=True)
class _KeyEntry:
    principal: Principal | None
    refusal: str | None
    expires_at: datetime | None


class Authenticator:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], *, ttl: float, max_entries: int = 10_000
    ) -> None:
        self._sessions = sessions
        self._ttl = ttl
        self._max_entries = max_entries
        self._cache: OrderedDict[str, tuple[float, _KeyEntry]] = OrderedDict()
        self._loading: dict[str, asyncio.Future[_KeyEntry]] = {}
        self._generation = 0
        """Bumped by `forget`: a lookup begun before it must not refill the cache."""

    async def authenticate(self, raw_key: str) -> Principal:
        if not is_well_formed_api_key(raw_key):
            raise NotAuthenticated(
                "the API key is malformed: keys look like bay_ and 43 characters"
            )
        digest = hash_api_key(raw_key)
        entry = self._cached(digest) or await self._load_once(digest)
        if entry.refusal is not None:
            raise NotAuthenticated(entry.refusal)
        if entry.expires_at is not None and entry.expires_at <= utcnow():
            raise NotAuthenticated("the API key has expired")
        assert entry.principal is not None
        return entry.principal

    def forget(self, raw_key: str | None = None) -> None:
        """Drop every cached lookup (this node just changed a key or a user), or only that
        of `raw_key` (just revoked: a run's key at its end)."""
        self._generation += 1
        if raw_key is None:
            self._cache.clear()
            self._loading.clear()
        else:
            digest = hash_api_key(raw_key)
            self._cache.pop(digest, None)
            self._loading.pop(digest, None)

    async def _load_once(self, digest: str) -> _KeyEntry:
        """One database lookup per key at a time: when an entry expires under load, the
        requests that find it stale wait for one query instead of each sending their own."""
        pending = self._loading.get(digest)
        if pending is None:
            pending = asyncio.ensure_future(self._load(digest))
            self._loading[digest] = pending
            pending.add_done_callback(lambda done: self._finished(digest, done))
        return await asyncio.shield(pending)

    def _finished(self, digest: str, done: asyncio.Future[_KeyEntry]) -> None:
        if self._loading.get(digest) is done:
            del self._loading[digest]

    def _cached(self, digest: str) -> _KeyEntry | None:
        hit = self._cache.get(digest)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    async def _load(self, digest: str) -> _KeyEntry:
        generation = self._generation
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(ApiKey, User)
                    .join(User, ApiKey.user_id == User.id)
                    .where(ApiKey.key_hash == digest)
                )
            ).first()
        if row is None:
            entry = _KeyEntry(None, "the API key is not known to this instance", None)
        else:
            key, user = row
            refusal = key_state(key, user, utcnow())
            principal = Principal(
                user.id, user.email, user.name, tuple(user.teams), user.admin, key.id
            )
            entry = _KeyEntry(None if refusal else principal, refusal, key.expires_at)
        if generation != self._generation:
            return entry  # forgotten while it loaded: answer this caller, cache nothing
        self._cache[digest] = (time.monotonic() + self._ttl, entry)
        self._cache.move_to_end(digest)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)
        return entry


class Authorizer:
    """Decides with a snapshot of every grant, re-read when it is older than the TTL."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, ttl: float) -> None:
        self._sessions = sessions
        self._ttl = ttl
        self._rules: list[GrantRule] = []
        self._fresh_until = 0.0
        self._lock = asyncio.Lock()

    async def decide(self, subject: Subject, resource: str, action: str) -> Decision:
        return decide(await self._current_rules(), subject, resource, action)

    def forget(self) -> None:
        self._fresh_until = 0.0

    async def _current_rules(self) -> list[GrantRule]:
        if time.monotonic() < self._fresh_until:
            return self._rules
        async with self._lock:
            if time.monotonic() >= self._fresh_until:
                async with self._sessions() as session:
                    self._rules = await load_rules(session)
                self._fresh_until = time.monotonic() + self._ttl
        return self._rules
