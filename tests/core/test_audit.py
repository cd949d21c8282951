"""The audit log: a hash chain that tells when it was changed, committed in groups.

Tampering is done as an attacker with write access to the database would: raw SQL,
after dropping the append-only triggers.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from servicebay.core import audit
from servicebay.core.audit import AuditRecord, AuditWriter, Verification
from servicebay.core.db import create_engine, session_factory
from servicebay.core.models import utcnow
from tests.core.core_support import drop_append_only_triggers, execute, migrated_engine


def record(number: int, **fields: Any) -> AuditRecord:
    return AuditRecord(
        action="user.create",
        outcome="allowed",
        actor="root@example.com",
        key_id="key_0123456789abcdef",
        resource=f"user:user{number}@example.com",
        status=201,
        method="POST",
        path="/api/v1/users",
        client="127.0.0.1",
        request_id=f"req-{number:08d}",
        detail={"number": number, "teams": ["marketing"], "note": "caf\u00e9 \u2713"},
        **fields,
    )


async def append_events(engine: AsyncEngine, count: int) -> None:
    """`count` events, one transaction each, as separate requests would commit them."""
    sessions = session_factory(engine)
    for number in range(1, count + 1):
        async with sessions() as session, session.begin():
            await audit.append(session, [record(number)])


async def verification(engine: AsyncEngine) -> Verification:
    async with session_factory(engine)() as session:
        return await audit.verify(session)


async def stored_seqs(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as connection:
        result = await connection.execute(text("SELECT seq FROM audit_events ORDER BY seq"))
        return [int(row[0]) for row in result]


def problem_seqs(report: Verification) -> list[int]:
    return [problem["seq"] for problem in report.problems]


def tampered(
    database_url: str, count: int, *statements: tuple[str, dict[str, Any]]
) -> Verification:
    """A log of `count` events, changed by `statements`, then verified."""

    async def scenario() -> Verification:
        engine = await migrated_engine(database_url)
        try:
            await append_events(engine, count)
            assert (await verification(engine)).ok
            await drop_append_only_triggers(engine)
            for statement, params in statements:
                await execute(engine, statement, **params)
            return await verification(engine)
        finally:
            await engine.dispose()

    return asyncio.run(scenario())


# --- the chain ----------------------------------------------------------------------------


def test_an_empty_log_verifies(database_url: str) -> None:
    report = tampered(database_url, 0)

    assert report == Verification(ok=True, checked=0, head=0, problems=[])


def test_an_untouched_chain_verifies(database_url: str) -> None:
    report = tampered(database_url, 12)

    assert report == Verification(ok=True, checked=12, head=12, problems=[])


def test_events_chain_to_the_one_before_them(database_url: str) -> None:
    async def scenario() -> list[tuple[int, str, str]]:
        engine = await migrated_engine(database_url)
        try:
            await append_events(engine, 3)
            async with engine.connect() as connection:
                rows = await connection.execute(
                    text("SELECT seq, prev_hash, hash FROM audit_events ORDER BY seq")
                )
                return [(int(seq), str(prev), str(own)) for seq, prev, own in rows]
        finally:
            await engine.dispose()

    rows = asyncio.run(scenario())

    assert [seq for seq, _, _ in rows] == [1, 2, 3]
    assert rows[0][1] == audit.GENESIS_HASH
    assert rows[1][1] == rows[0][2]
    assert rows[2][1] == rows[1][2]
    assert len({own for _, _, own in rows}) == 3


# --- tampering ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("actor", "mallory@example.com"),
        ("outcome", "denied"),
        ("status", 200),
        ("path", "/api/v1/users?api_key=[REDACTED]"),
        ("action", "user.read"),
        ("resource", None),
    ],
)
def test_an_edited_event_is_reported_at_its_seq(database_url: str, column: str, value: Any) -> None:
    report = tampered(
        database_url,
        10,
        (f"UPDATE audit_events SET {column} = :value WHERE seq = 5", {"value": value}),
    )

    assert not report.ok
    assert problem_seqs(report) == [5]
    assert "edited" in report.problems[0]["reason"]


def test_an_edited_detail_is_reported_at_its_seq(database_url: str) -> None:
    forged = '{"number": 5, "teams": ["admins"], "note": "caf\\u00e9 \\u2713"}'
    report = tampered(
        database_url,
        10,
        ("UPDATE audit_events SET detail = :value WHERE seq = 5", {"value": forged}),
    )

    assert problem_seqs(report) == [5]


def test_an_edited_timestamp_is_reported_at_its_seq(database_url: str) -> None:
    report = tampered(
        database_url, 10, ("UPDATE audit_events SET ts = :value WHERE seq = 5", {"value": utcnow()})
    )

    assert problem_seqs(report) == [5]


def test_an_edited_event_whose_hash_was_recomputed_breaks_the_link_to_the_next(
    database_url: str,
) -> None:
    async def scenario() -> Verification:
        engine = await migrated_engine(database_url)
        try:
            await append_events(engine, 10)
            await drop_append_only_triggers(engine)
            async with session_factory(engine)() as session, session.begin():
                (event_5,) = [e async for e in audit.scan(session) if e.seq == 5]
                event_5.actor = "mallory@example.com"
                fields = {name: getattr(event_5, name) for name in audit.CHAINED_FIELDS}
                event_5.hash = audit.event_hash(event_5.prev_hash, fields)
            return await verification(engine)
        finally:
            await engine.dispose()

    report = asyncio.run(scenario())

    assert problem_seqs(report) == [6]
    assert "prev_hash" in report.problems[0]["reason"]


def test_a_deleted_event_in_the_middle_is_reported_missing(database_url: str) -> None:
    report = tampered(database_url, 10, ("DELETE FROM audit_events WHERE seq = 5", {}))

    assert not report.ok
    assert report.checked == 9
    assert problem_seqs(report)[0] == 5
    assert "missing" in report.problems[0]["reason"]


def test_deleted_events_in_the_middle_are_reported_as_one_gap(database_url: str) -> None:
    report = tampered(database_url, 10, ("DELETE FROM audit_events WHERE seq IN (4, 5, 6)", {}))

    assert problem_seqs(report)[0] == 4
    assert "4 to 6" in report.problems[0]["reason"]


def test_a_deleted_tail_is_reported_where_the_log_now_ends(database_url: str) -> None:
    report = tampered(database_url, 10, ("DELETE FROM audit_events WHERE seq > 8", {}))

    assert not report.ok
    assert report.head == 10
    assert report.checked == 8
    assert problem_seqs(report) == [9]
    assert "head says 10" in report.problems[0]["reason"]


def test_a_log_emptied_entirely_is_reported(database_url: str) -> None:
    report = tampered(database_url, 10, ("DELETE FROM audit_events", {}))

    assert not report.ok
    assert problem_seqs(report) == [1]


FORGED_INSERT = """
    INSERT INTO audit_events (seq, ts, request_id, actor, key_id, action, resource, outcome,
        status, method, path, client, detail, prev_hash, hash)
    VALUES (:seq, :ts, :request_id, :actor, :key_id, :action, :resource, :outcome,
        :status, :method, :path, :client, :detail, :prev_hash, :hash)
"""


def forged_event(seq: int, prev_hash: str, *, rehash: bool) -> dict[str, Any]:
    """An event as a forger who knows the hashing scheme (or not) would write it."""
    fields: dict[str, Any] = {
        "seq": seq,
        "ts": utcnow(),
        "request_id": "forged",
        "actor": "mallory@example.com",
        "key_id": None,
        "action": "grant.create",
        "resource": "service:payroll",
        "outcome": "allowed",
        "status": 201,
        "method": "POST",
        "path": "/api/v1/grants",
        "client": "10.0.0.66",
        "detail": {},
    }
    digest = audit.event_hash(prev_hash, fields) if rehash else "f" * 64
    return {**fields, "detail": "{}", "prev_hash": prev_hash, "hash": digest}


@pytest.mark.parametrize("rehash", [True, False], ids=["well-hashed", "badly-hashed"])
def test_a_forged_event_appended_after_the_head_is_reported_at_its_seq(
    database_url: str, rehash: bool
) -> None:
    async def scenario() -> Verification:
        engine = await migrated_engine(database_url)
        try:
            await append_events(engine, 10)
            async with engine.connect() as connection:
                tail = str(await connection.scalar(text("SELECT hash FROM audit_head")))
            await execute(engine, FORGED_INSERT, **forged_event(11, tail, rehash=rehash))
            return await verification(engine)
        finally:
            await engine.dispose()

    report = asyncio.run(scenario())

    assert not report.ok
    assert report.checked == 11
    assert set(problem_seqs(report)) == {11}


def forge_in_place_of(database_url: str, seq: int) -> Verification:
    """Replace event `seq` of ten by a forgery correctly hashed onto the event before it,
    as an attacker with database access would, then verify."""

    async def scenario() -> Verification:
        engine = await migrated_engine(database_url)
        try:
            await append_events(engine, 10)
            await drop_append_only_triggers(engine)
            async with engine.connect() as connection:
                previous = str(
                    await connection.scalar(
                        text("SELECT hash FROM audit_events WHERE seq = :seq"), {"seq": seq - 1}
                    )
                )
            await execute(engine, f"DELETE FROM audit_events WHERE seq = {seq}")
            await execute(engine, FORGED_INSERT, **forged_event(seq, previous, rehash=True))
            return await verification(engine)
        finally:
            await engine.dispose()

    return asyncio.run(scenario())


def test_a_forged_event_in_place_of_a_real_one_is_reported(database_url: str) -> None:
    report = forge_in_place_of(database_url, 5)

    assert not report.ok
    # The forgery hashes correctly onto event 4; the real event 6 no longer follows it.
    assert problem_seqs(report) == [6]


# --- group commit -------------------------------------------------------------------------


class CommitCounter:
    def __init__(self, engine: AsyncEngine) -> None:
        self.commits = 0
        event.listen(engine.sync_engine, "commit", self._count)

    def _count(self, _connection: Any) -> None:
        self.commits += 1


def test_concurrent_writes_share_commits_and_get_contiguous_seqs(database_url: str) -> None:
    writes = 200

    async def scenario() -> tuple[list[int], int, Verification]:
        engine = await migrated_engine(database_url)
        counter = CommitCounter(engine)
        writer = AuditWriter(engine, batch_max=500)
        await writer.start()
        try:
            seqs = await asyncio.gather(*(writer.write(record(n)) for n in range(writes)))
        finally:
            await writer.stop()
        try:
            return list(seqs), counter.commits, await verification(engine)
        finally:
            await engine.dispose()

    seqs, commits, report = asyncio.run(scenario())

    assert sorted(seqs) == list(range(1, writes + 1))
    assert commits <= writes // 10
    assert report.ok
    assert report.checked == writes


def test_a_batch_never_exceeds_its_maximum(sqlite_url: str) -> None:
    async def scenario() -> tuple[list[int], int]:
        engine = await migrated_engine(sqlite_url)
        counter = CommitCounter(engine)
        writer = AuditWriter(engine, batch_max=7)
        await writer.start()
        try:
            seqs = await asyncio.gather(*(writer.write(record(n)) for n in range(50)))
        finally:
            await writer.stop()
            await engine.dispose()
        return list(seqs), counter.commits

    seqs, commits = asyncio.run(scenario())

    assert sorted(seqs) == list(range(1, 51))
    assert commits >= 50 // 7 + 1


def test_sqlite_every_write_returns_only_once_its_row_is_readable_elsewhere(
    sqlite_url: str,
) -> None:
    path = make_url(sqlite_url).database
    assert path is not None

    async def scenario() -> list[int]:
        engine = await migrated_engine(sqlite_url)
        writer = AuditWriter(engine, batch_max=500)
        await writer.start()
        reader = sqlite3.connect(path)

        async def write_then_read(number: int) -> int:
            seq = await writer.write(record(number))
            # A separate, blocking connection, read before this task yields again: the
            # row must already be committed.
            found = reader.execute(
                "SELECT request_id FROM audit_events WHERE seq = ?", (seq,)
            ).fetchone()
            assert found == (f"req-{number:08d}",), (number, seq, found)
            return seq

        try:
            return list(await asyncio.gather(*(write_then_read(n) for n in range(200))))
        finally:
            reader.close()
            await writer.stop()
            await engine.dispose()

    assert sorted(asyncio.run(scenario())) == list(range(1, 201))


def test_postgresql_every_write_returns_only_once_its_row_is_readable_elsewhere(
    postgres_url: str,
) -> None:
    async def scenario() -> list[int]:
        engine = await migrated_engine(postgres_url)
        other = create_engine(postgres_url)
        writer = AuditWriter(engine, batch_max=500)
        await writer.start()
        async with other.connect() as reader:
            reading = asyncio.Lock()

            async def write_then_read(number: int) -> int:
                seq = await writer.write(record(number))
                async with reading:
                    found = await reader.scalar(
                        text("SELECT request_id FROM audit_events WHERE seq = :seq"), {"seq": seq}
                    )
                    await reader.rollback()  # a fresh snapshot for the next read
                assert found == f"req-{number:08d}", (number, seq, found)
                return seq

            try:
                return list(await asyncio.gather(*(write_then_read(n) for n in range(200))))
            finally:
                await writer.stop()
                await engine.dispose()
                await other.dispose()

    assert sorted(asyncio.run(scenario())) == list(range(1, 201))


def test_stopping_the_writer_commits_what_is_queued(sqlite_url: str) -> None:
    async def scenario() -> tuple[list[int], list[int]]:
        engine = await migrated_engine(sqlite_url)
        writer = AuditWriter(engine, batch_max=3)
        await writer.start()
        pending = [asyncio.create_task(writer.write(record(n))) for n in range(10)]
        await asyncio.sleep(0)  # every write is queued
        await writer.stop()
        try:
            return [task.result() for task in pending], await stored_seqs(engine)
        finally:
            await engine.dispose()

    results, stored = asyncio.run(scenario())

    assert sorted(results) == list(range(1, 11))
    assert stored == list(range(1, 11))


def test_a_stopped_writer_refuses_to_write(sqlite_url: str) -> None:
    async def scenario() -> None:
        engine = await migrated_engine(sqlite_url)
        writer = AuditWriter(engine, batch_max=10)
        try:
            with pytest.raises(RuntimeError, match="not running"):
                await writer.write(record(1))
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def test_two_writers_on_one_database_keep_one_unbroken_chain(database_url: str) -> None:
    """Two processes' writers (two engines) appending at once, on SQLite and PostgreSQL."""
    per_writer = 120

    async def scenario() -> tuple[list[int], list[int], Verification]:
        first_engine = await migrated_engine(database_url)
        second_engine = create_engine(database_url)
        first = AuditWriter(first_engine, batch_max=20)
        second = AuditWriter(second_engine, batch_max=20)
        await first.start()
        await second.start()
        try:
            seqs = await asyncio.gather(
                *(first.write(record(n)) for n in range(per_writer)),
                *(second.write(record(n + per_writer)) for n in range(per_writer)),
            )
        finally:
            await first.stop()
            await second.stop()
            await second_engine.dispose()
        try:
            return list(seqs), await stored_seqs(first_engine), await verification(first_engine)
        finally:
            await first_engine.dispose()

    seqs, stored, report = asyncio.run(scenario())

    assert sorted(seqs) == list(range(1, 2 * per_writer + 1))
    assert stored == sorted(seqs)
    assert report.ok, report.problems
    assert report.checked == report.head == 2 * per_writer


def test_writers_taking_turns_continue_each_others_chain(database_url: str) -> None:
    """Each writer's last known head is stale by its next turn: it must find the real one."""

    async def scenario() -> tuple[list[int], Verification]:
        first_engine = await migrated_engine(database_url)
        second_engine = create_engine(database_url)
        writers = [
            AuditWriter(first_engine, batch_max=20),
            AuditWriter(second_engine, batch_max=20),
        ]
        for writer in writers:
            await writer.start()
        try:
            seqs = [await writers[n % 2].write(record(n)) for n in range(6)]
        finally:
            for writer in writers:
                await writer.stop()
            await second_engine.dispose()
        try:
            return seqs, await verification(first_engine)
        finally:
            await first_engine.dispose()

    seqs, report = asyncio.run(scenario())

    assert seqs == [1, 2, 3, 4, 5, 6]
    assert report.ok, report.problems


def test_postgresql_a_writer_that_holds_the_head_commits_a_batch_in_one_statement(
    postgres_url: str,
) -> None:
    """The first batch locks the head in a transaction; later ones are one round trip."""

    async def scenario() -> tuple[list[str], Verification]:
        engine = await migrated_engine(postgres_url)
        statements: list[str] = []
        event.listen(
            engine.sync_engine,
            "before_cursor_execute",
            lambda _conn, _cursor, statement, *_: statements.append(statement.split()[0]),
        )
        writer = AuditWriter(engine, batch_max=500)
        await writer.start()
        try:
            await writer.write(record(1))
            statements.clear()
            await asyncio.gather(*(writer.write(record(n)) for n in range(2, 12)))
            await writer.write(AuditRecord("test.keyless", "allowed"))
        finally:
            await writer.stop()
        written = list(statements)
        try:
            return written, await verification(engine)
        finally:
            await engine.dispose()

    statements, report = asyncio.run(scenario())

    assert statements in (["WITH", "WITH"], ["WITH", "WITH", "WITH"])
    assert report.ok, report.problems
    assert report.checked == 12


def test_postgresql_a_failed_key_stamp_does_not_write_a_committed_batch_again(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch's single statement has committed when the stamp of `last_used_at` runs:
    that stamp failing must not send the events through the retry a second time."""
    failures = iter([RuntimeError("lock timeout on api_keys")])
    stamp = AuditWriter._stamp

    async def flaky(connection: Any, used_keys: set[str]) -> None:
        if used_keys and (failure := next(failures, None)) is not None:
            raise failure
        await stamp(connection, used_keys)

    monkeypatch.setattr(AuditWriter, "_stamp", staticmethod(flaky))

    async def scenario() -> tuple[list[int], list[int], Verification]:
        engine = await migrated_engine(postgres_url)
        writer = AuditWriter(engine, batch_max=500)
        await writer.start()
        try:
            await writer.write(AuditRecord("test.keyless", "allowed"))  # the writer holds the head
            seqs = await asyncio.gather(*(writer.write(record(n)) for n in range(3)))
        finally:
            await writer.stop()
        try:
            return list(seqs), await stored_seqs(engine), await verification(engine)
        finally:
            await engine.dispose()

    seqs, stored, report = asyncio.run(scenario())

    assert sorted(seqs) == [2, 3, 4]
    assert stored == [1, 2, 3, 4]
    assert report.ok, report.problems


def test_a_forged_last_event_in_place_of_the_real_one_is_reported_at_its_seq(
    database_url: str,
) -> None:
    report = forge_in_place_of(database_url, 10)

    assert not report.ok
    assert problem_seqs(report) == [10]


# --- events the database could refuse -----------------------------------------------------


def test_an_event_with_oversized_fields_or_nul_characters_is_stored_and_verifies(
    database_url: str,
) -> None:
    odd = AuditRecord(
        action="GET unmatched",
        outcome="allowed",
        actor="a" * 400 + "@example.com",
        method="X" * 40,
        path="/" + "a" * 3000 + "\x00" + "?q=\x00",
        client="\x00" * 100,
        resource="user:\x00",
        request_id="r" * 100,
        detail={"reason": "nul \x00 inside", "\x00": "key"},
        status=404,
    )

    async def scenario() -> tuple[list[int], Verification, tuple[Any, ...]]:
        engine = await migrated_engine(database_url)
        writer = AuditWriter(engine, batch_max=500)
        await writer.start()
        try:
            seqs = await asyncio.gather(writer.write(odd), writer.write(record(2)))
            async with engine.connect() as connection:
                stored = (
                    await connection.execute(
                        text("SELECT path, method, actor FROM audit_events WHERE seq = :seq"),
                        {"seq": seqs[0]},
                    )
                ).one()
            return list(seqs), await verification(engine), tuple(stored)
        finally:
            await writer.stop()
            await engine.dispose()

    seqs, report, (path, method, actor) = asyncio.run(scenario())

    assert sorted(seqs) == [1, 2]
    assert report.ok, report.problems
    assert path.startswith("/aaa")
    assert len(path) == 2000
    assert "\x00" not in path
    assert len(method) == 16
    assert len(actor) == 320


def test_an_event_that_cannot_be_recorded_fails_only_its_own_write(database_url: str) -> None:
    unrecordable = AuditRecord("test.broken", "allowed", detail={"value": object()})

    async def scenario() -> tuple[list[Any], Verification]:
        engine = await migrated_engine(database_url)
        writer = AuditWriter(engine, batch_max=500)
        await writer.start()
        try:
            results = await asyncio.gather(
                *(writer.write(record(n)) for n in range(10)),
                writer.write(unrecordable),
                *(writer.write(record(n)) for n in range(10, 20)),
                return_exceptions=True,
            )
            later = await writer.write(record(99))
            return [*results, later], await verification(engine)
        finally:
            await writer.stop()
            await engine.dispose()

    results, report = asyncio.run(scenario())

    failures = [result for result in results if isinstance(result, BaseException)]
    assert len(failures) == 1
    assert isinstance(failures[0], TypeError)
    assert sorted(r for r in results if isinstance(r, int)) == list(range(1, 22))
    assert report.ok
