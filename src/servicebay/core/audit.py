"""The audit log: an append-only, hash-chained record, committed in groups.

Every gateway request waits for its event to be durable before answering. One
transaction per request would cap throughput at the disk's fsync rate, so a single
writer task commits whatever events are waiting as one batch: under load a batch
holds many requests' events, at rest it holds one and costs one commit.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, cast

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Insert,
    String,
    Table,
    bindparam,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from servicebay.core.models import ApiKey, AuditEvent, AuditHead, utcnow
from servicebay.core.pagination import Page, decode_cursor, invalid_cursor, page_of

log = logging.getLogger(__name__)

# The tables themselves, for Core statements on the hot path: the ORM's bulk machinery
# costs more than the statements do.
AUDIT_EVENTS = cast(Table, AuditEvent.__table__)
AUDIT_HEAD = cast(Table, AuditHead.__table__)
API_KEYS = cast(Table, ApiKey.__table__)

GENESIS_HASH = "0" * 64
LAST_USED_PRECISION = 60.0
"""Seconds: how stale an API key's `last_used_at` may be."""
Outcome = Literal["allowed", "denied", "error"]
OUTCOMES: tuple[Outcome, ...] = ("allowed", "denied", "error")


@dataclass
class AuditRecord:
    """What happened, before the chain gives it a place (`seq`) and a hash."""

    action: str
    outcome: Outcome
    actor: str | None = None
    key_id: str | None = None
    resource: str | None = None
    status: int | None = None
    method: str | None = None
    path: str | None = None
    client: str | None = None
    request_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    ts: datetime = field(default_factory=utcnow)


CHAINED_FIELDS = (
    "seq", "ts", "request_id", "actor", "key_id", "action", "resource",
    "outcome", "status", "method", "path", "client", "detail",
)  # fmt: skip


def event_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    """sha256(prev_hash + canonical JSON of the chained fields)."""
    canonical = {name: fields[name] for name in CHAINED_FIELDS}
    canonical["ts"] = fields["ts"].isoformat(timespec="microseconds")
    payload = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev_hash + payload).encode()).hexdigest()


_LENGTHS = {
    column.name: column.type.length
    for column in AuditEvent.__table__.columns
    if isinstance(column.type, String) and column.type.length
}


def storable(record: AuditRecord) -> dict[str, Any]:
    """The record's fields as every backend stores them: PostgreSQL refuses NUL characters
    and strings longer than their column, and one request's odd path must not fail the
    events batched with it. The hash covers exactly what is stored."""
    fields = {**vars(record), "detail": dict(record.detail)}
    for name, length in _LENGTHS.items():
        value = fields.get(name)
        if isinstance(value, str):
            fields[name] = value.replace("\x00", "\ufffd")[:length]
    return fields


@dataclass(frozen=True)
class ChainHead:
    """Where the chain ends: the last event's seq and hash."""

    seq: int
    hash: str


def chained(
    head: ChainHead, records: Sequence[AuditRecord]
) -> tuple[list[dict[str, Any]], ChainHead]:
    """The rows that continue the chain from `head`, and the chain's new head."""
    rows = []
    seq, prev_hash = head.seq, head.hash
    for record in records:
        seq += 1
        fields = {"seq": seq, **storable(record)}
        digest = event_hash(prev_hash, fields)
        rows.append({**fields, "prev_hash": prev_hash, "hash": digest})
        prev_hash = digest
    return rows, ChainHead(seq, prev_hash)


async def append(
    session: AsyncSession | AsyncConnection, records: Sequence[AuditRecord]
) -> ChainHead:
    """Chain and insert `records` in the caller's transaction; returns the new head.

    Writing the head row first (and reading it back in the same statement) takes its
    lock, which orders appends from every process and node on PostgreSQL, and takes
    SQLite's write lock before the head is read.
    """
    locked = await session.execute(
        update(AUDIT_HEAD)
        .where(AUDIT_HEAD.c.id == 1)
        .values(updated_at=utcnow())
        .returning(AUDIT_HEAD.c.seq, AUDIT_HEAD.c.hash)
    )
    rows, head = chained(ChainHead(*locked.one()), records)
    await session.execute(insert(AUDIT_EVENTS), rows)
    await session.execute(
        update(AUDIT_HEAD).where(AUDIT_HEAD.c.id == 1).values(seq=head.seq, hash=head.hash)
    )
    return head


_EVENT_COLUMNS = (*CHAINED_FIELDS, "prev_hash", "hash")


def _postgres_append_at() -> Insert:
    """On PostgreSQL, a batch continued from a head the writer already knows, as one
    statement and one implicit transaction: the head moves and the events are inserted
    only if no other writer moved it first (the conditional UPDATE waits for, and then
    re-checks, a concurrent one). The events arrive as one array per column."""
    moved = (
        update(AUDIT_HEAD)
        .where(AUDIT_HEAD.c.id == 1, AUDIT_HEAD.c.seq == bindparam("expected_seq"))
        .values(seq=bindparam("head_seq"), hash=bindparam("head_hash"), updated_at=bindparam("now"))
        .returning(AUDIT_HEAD.c.id)
        .cte("moved")
    )
    events = (
        func.unnest(
            *(
                bindparam(f"each_{name}", type_=ARRAY(AUDIT_EVENTS.c[name].type))
                for name in _EVENT_COLUMNS
            )
        )
        .table_valued(*_EVENT_COLUMNS)
        .render_derived(name="events")
    )
    rows = select(*events.c).where(exists(select(moved.c.id)))
    return insert(AUDIT_EVENTS).from_select(list(_EVENT_COLUMNS), rows).add_cte(moved)


POSTGRES_APPEND_AT = _postgres_append_at()


async def append_at(
    connection: AsyncConnection, head: ChainHead, records: Sequence[AuditRecord]
) -> ChainHead | None:
    """`records` chained from `head` in one autocommitted statement (PostgreSQL); None,
    with nothing written, when the chain no longer ends at `head`."""
    rows, new_head = chained(head, records)
    parameters: dict[str, Any] = {
        f"each_{name}": [row[name] for row in rows] for name in _EVENT_COLUMNS
    }
    parameters |= {"expected_seq": head.seq, "head_seq": new_head.seq, "head_hash": new_head.hash}
    result = await connection.execute(POSTGRES_APPEND_AT, {**parameters, "now": utcnow()})
    return new_head if result.rowcount == len(rows) else None


@dataclass
class _Pending:
    record: AuditRecord
    done: asyncio.Future[int]


class AuditWriter:
    """Group commit: `write` returns once the event is committed with its batch."""

    def __init__(self, engine: AsyncEngine, *, batch_max: int) -> None:
        self._engine = engine
        # On PostgreSQL the writer keeps one Core connection between batches: no pool
        # checkout, no liveness ping, no ORM unit of work on the path every request waits
        # on. On SQLite it gives it back after each batch, ending its writer turn (`db`).
        self._connection: AsyncConnection | None = None
        self._postgres = engine.dialect.name == "postgresql"
        self._head: ChainHead | None = None
        """The head this writer last wrote (PostgreSQL), which is usually still the chain's."""
        self._batch_max = batch_max
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()  # None: stop
        self._task: asyncio.Task[None] | None = None
        self._stamped: dict[str, float] = {}

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        if self._task is None:
            return
        await self._queue.put(None)
        await self._task
        self._task = None
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def write(self, record: AuditRecord) -> int:
        if not self.running:
            raise RuntimeError("the audit writer is not running")
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(record, done))
        return await done

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            batch: list[_Pending] = []
            item = await self._queue.get()
            while item is not None:
                batch.append(item)
                if len(batch) >= self._batch_max or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            stopping = item is None
            if batch:
                await self._settle(batch)

    async def _settle(self, batch: list[_Pending]) -> None:
        try:
            head = await self._commit([pending.record for pending in batch])
        except Exception as error:  # one bad batch must not stop auditing
            if len(batch) > 1:
                # Retry one by one: an event that cannot be stored fails only its own write.
                log.warning(
                    "audit batch of %d events failed; committing them one by one", len(batch)
                )
                for pending in batch:
                    await self._settle([pending])
                return
            log.exception("audit event failed to commit")
            for pending in batch:
                if not pending.done.done():
                    pending.done.set_exception(error)
            return
        first = head.seq - len(batch) + 1
        for seq, pending in enumerate(batch, start=first):
            if not pending.done.done():
                pending.done.set_result(seq)

    async def _commit(self, records: list[AuditRecord]) -> ChainHead:
        used_keys = self._keys_to_stamp(records)
        connection = self._connection or await self._connect()
        self._connection = None
        try:
            if self._postgres:
                head = await self._append_postgres(connection, records)
                try:  # the events are committed: a failed stamp must not write them again
                    await self._stamp(connection, used_keys)
                except Exception:
                    log.warning("could not stamp last use on keys %s", sorted(used_keys))
            else:
                async with connection.begin():
                    head = await append(connection, records)
                    await self._stamp(connection, used_keys)
        except BaseException:
            await connection.invalidate()  # maybe broken: the next batch opens a new one
            await connection.close()
            raise
        if self._postgres:
            self._connection = connection
        else:  # back to the pool: that ends its turn as this process's writer (`db.py`)
            await connection.close()
        return head

    async def _append_postgres(
        self, connection: AsyncConnection, records: list[AuditRecord]
    ) -> ChainHead:
        """Usually one statement on the kept, autocommitting connection (`append_at`);
        the first batch, and one that finds the head moved by another writer, lock the
        head in a transaction of their own."""
        known, self._head = self._head, None
        head = await append_at(connection, known, records) if known else None
        if head is None:
            async with self._engine.begin() as locking:
                head = await append(locking, records)
        self._head = head
        return head

    async def _connect(self) -> AsyncConnection:
        connection = await self._engine.connect()
        if self._postgres:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
        return connection

    @staticmethod
    async def _stamp(connection: AsyncConnection, used_keys: set[str]) -> None:
        if used_keys:
            await connection.execute(
                update(API_KEYS).where(API_KEYS.c.id.in_(used_keys)).values(last_used_at=utcnow())
            )

    def _keys_to_stamp(self, records: list[AuditRecord]) -> set[str]:
        """Keys whose `last_used_at` this node has not stamped within the last minute:
        the time stays accurate to a minute without a write per request."""
        now = time.monotonic()
        due = {
            record.key_id
            for record in records
            if record.key_id
            and self._stamped.get(record.key_id, -LAST_USED_PRECISION) <= now - LAST_USED_PRECISION
        }
        for key_id in due:
            self._stamped[key_id] = now
        if len(self._stamped) > 100_000:
            self._stamped.clear()
        return due


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None
    resource: str | None = None
    action: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = []
        if self.actor is not None:
            conditions.append(AuditEvent.actor == self.actor)
        if self.resource is not None:
            conditions.append(AuditEvent.resource == self.resource)
        if self.action is not None:
            conditions.append(AuditEvent.action == self.action)
        if self.outcome is not None:
            conditions.append(AuditEvent.outcome == self.outcome)
        if self.since is not None:
            conditions.append(AuditEvent.ts >= self.since)
        if self.until is not None:
            conditions.append(AuditEvent.ts < self.until)
        return conditions


async def query(
    session: AsyncSession, where: AuditFilter, *, limit: int, cursor: str | None
) -> Page[AuditEvent]:
    """Newest first."""
    statement = (
        select(AuditEvent)
        .where(*where.conditions())
        .order_by(AuditEvent.seq.desc())
        .limit(limit + 1)
    )
    if (before := decode_cursor(cursor)) is not None:
        if not (before.isascii() and before.isdigit() and len(before) <= 18):
            raise invalid_cursor()
        statement = statement.where(AuditEvent.seq < int(before))
    events = list(await session.scalars(statement))
    return page_of(events, limit, str(events[limit - 1].seq) if len(events) > limit else None)


async def scan(
    session: AsyncSession, where: AuditFilter = AuditFilter(), *, chunk: int = 1000
) -> AsyncIterator[AuditEvent]:
    """Oldest first, in chunks, so an export or a verification never holds the whole log."""
    after = 0
    while True:
        statement = (
            select(AuditEvent)
            .where(AuditEvent.seq > after, *where.conditions())
            .order_by(AuditEvent.seq)
            .limit(chunk)
        )
        events = list(await session.scalars(statement))
        for event in events:
            yield event
        if len(events) < chunk:
            return
        after = events[-1].seq
        session.expunge_all()


@dataclass
class Verification:
    ok: bool = True
    checked: int = 0
    head: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)

    def flag(self, seq: int, reason: str) -> None:
        self.ok = False
        if len(self.problems) < 100:
            self.problems.append({"seq": seq, "reason": reason})


async def verify(session: AsyncSession) -> Verification:
    """Recompute the chain: an edited, removed, inserted or cut-off event is reported."""
    head = (await session.execute(select(AuditHead).where(AuditHead.id == 1))).scalar_one()
    report = Verification(head=head.seq)
    expected_seq, prev_hash = 1, GENESIS_HASH
    async for event in scan(session):
        report.checked += 1
        if event.seq != expected_seq:
            report.flag(expected_seq, f"events {expected_seq} to {event.seq - 1} are missing")
        if event.prev_hash != prev_hash:
            report.flag(event.seq, "prev_hash does not match the event before it")
        fields = {name: getattr(event, name) for name in CHAINED_FIELDS}
        if event_hash(event.prev_hash, fields) != event.hash:
            report.flag(event.seq, "the event's content does not match its hash (edited)")
        expected_seq, prev_hash = event.seq + 1, event.hash
    last = expected_seq - 1
    if last > head.seq:  # name the first event the log's writers never appended
        report.flag(
            head.seq + 1, f"the log goes on to {last} but its head says {head.seq} (inserted)"
        )
    elif last < head.seq:
        report.flag(expected_seq, f"the log ends at {last} but its head says {head.seq}")
    elif prev_hash != head.hash:
        report.flag(last, "the last event's hash does not match the head's (replaced)")
    return report
