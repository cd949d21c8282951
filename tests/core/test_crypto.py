"""The master key, secrets sealed at rest, and API keys stored only as hashes."""

from __future__ import annotations

import asyncio
import base64
import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from servicebay.core import identity, secret_store
from servicebay.core.crypto import (
    API_KEY_PREFIX,
    MasterKey,
    generate_master_key,
    hash_api_key,
    is_well_formed_api_key,
    load_master_key,
    new_api_key,
    write_master_key,
)
from servicebay.core.db import create_engine, session_factory
from servicebay.core.errors import ConfigurationError, Forbidden, InvalidInput
from servicebay.core.instance import init_instance
from servicebay.core.settings import Settings
from tests.core.core_support import execute, migrated_engine


@contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


# --- the master key file ------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077])
def test_the_master_key_file_is_created_readable_by_its_owner_only(
    tmp_path: Path, mask: int
) -> None:
    path = tmp_path / "master.key"

    with umask(mask):
        write_master_key(path, generate_master_key())

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_existing_master_key_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    first = generate_master_key()
    write_master_key(path, first)
    before = path.read_bytes()

    with pytest.raises(FileExistsError):
        write_master_key(path, generate_master_key())

    assert path.read_bytes() == before
    assert load_master_key(env_value=None, path=path) == first


def test_a_written_master_key_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    key = generate_master_key()
    write_master_key(path, key)

    assert load_master_key(env_value=None, path=path) == key


def test_the_environment_master_key_wins_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    write_master_key(path, generate_master_key())
    from_env = generate_master_key()

    assert load_master_key(env_value=from_env.encode(), path=path) == from_env


def test_a_missing_master_key_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as missing:
        load_master_key(env_value=None, path=tmp_path / "master.key")

    assert "BAY_MASTER_KEY" in missing.value.message
    assert "bay init" in missing.value.message


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not base64 at all!",
        base64.urlsafe_b64encode(b"k" * 16).decode(),
        base64.urlsafe_b64encode(b"k" * 33).decode(),
    ],
)
def test_a_master_key_that_is_not_32_bytes_of_base64_is_refused(text: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        MasterKey.decode(text, origin="BAY_MASTER_KEY")

    assert "BAY_MASTER_KEY" in refused.value.message
    if text:
        assert text not in refused.value.message


# --- sealing ------------------------------------------------------------------------------

PLAINTEXT = b"postgresql://app:hunter2-plaintext@db.internal/sales"


def test_a_sealed_value_opens_with_the_same_key_and_name() -> None:
    key = generate_master_key()
    sealed = key.seal(PLAINTEXT, context="secret:SALES_DB")

    assert PLAINTEXT not in sealed
    assert key.open(sealed, context="secret:SALES_DB") == PLAINTEXT


def test_sealing_twice_gives_different_ciphertexts() -> None:
    key = generate_master_key()

    assert key.seal(PLAINTEXT, context="secret:A") != key.seal(PLAINTEXT, context="secret:A")


def test_a_wrong_master_key_fails_to_open_without_revealing_anything() -> None:
    sealed = generate_master_key().seal(PLAINTEXT, context="secret:SALES_DB")

    with pytest.raises(ConfigurationError) as refused:
        generate_master_key().open(sealed, context="secret:SALES_DB")

    assert "another master key" in refused.value.message
    assert "hunter2" not in str(refused.value)


def test_a_ciphertext_sealed_for_one_name_fails_to_open_as_another() -> None:
    key = generate_master_key()
    sealed = key.seal(PLAINTEXT, context="secret:SALES_DB")

    with pytest.raises(ConfigurationError) as refused:
        key.open(sealed, context="secret:OTHER")

    assert "hunter2" not in str(refused.value)


def test_a_tampered_ciphertext_fails_to_open() -> None:
    key = generate_master_key()
    sealed = bytearray(key.seal(PLAINTEXT, context="secret:A"))
    sealed[-1] ^= 0x01

    with pytest.raises(ConfigurationError):
        key.open(bytes(sealed), context="secret:A")


@pytest.mark.parametrize("length", [0, 1, 11, 12, 27])
def test_a_truncated_ciphertext_fails_to_open_as_a_configuration_error(length: int) -> None:
    key = generate_master_key()
    sealed = key.seal(PLAINTEXT, context="secret:A")

    with pytest.raises(ConfigurationError):
        key.open(sealed[:length], context="secret:A")


def test_the_key_id_names_the_key_without_revealing_it() -> None:
    key = generate_master_key()

    assert key.key_id == MasterKey(key.material).key_id
    assert key.key_id != generate_master_key().key_id
    assert key.key_id not in key.encode()
    assert key.material.hex()[:16] != key.key_id


# --- secrets in the database --------------------------------------------------------------


def test_a_secret_moved_onto_another_name_fails_to_open(sqlite_url: str) -> None:
    master = generate_master_key()

    async def scenario() -> None:
        engine = await migrated_engine(sqlite_url)
        sessions = session_factory(engine)
        try:
            async with sessions() as session, session.begin():
                for name, value in (("SALES_DB", "sales-plaintext"), ("CRM", "crm-plaintext")):
                    await secret_store.put_secret(
                        session, master, name=name, value=value, allow=["service:sql"]
                    )
            await execute(
                engine,
                "UPDATE secrets SET ciphertext = "
                "(SELECT ciphertext FROM secrets WHERE name = 'SALES_DB') WHERE name = 'CRM'",
            )
            async with sessions() as session:
                with pytest.raises(ConfigurationError) as refused:
                    await secret_store.reveal(session, master, "CRM", for_resource="service:sql")
                assert "plaintext" not in str(refused.value)
                revealed = await secret_store.reveal(
                    session, master, "SALES_DB", for_resource="service:sql"
                )
                assert revealed == "sales-plaintext"
        finally:
            await engine.dispose()

    asyncio.run(scenario())


def test_a_secret_is_revealed_only_for_what_its_allow_list_names(sqlite_url: str) -> None:
    master = generate_master_key()

    async def scenario() -> None:
        engine = await migrated_engine(sqlite_url)
        sessions = session_factory(engine)
        try:
            async with sessions() as session, session.begin():
                await secret_store.put_secret(
                    session, master, name="SF_TOKEN", value="t0ken", allow=["service:salesforce"]
                )
            async with sessions() as session:
                assert (
                    await secret_store.reveal(
                        session, master, "SF_TOKEN", for_resource="service:salesforce"
                    )
                    == "t0ken"
                )
                with pytest.raises(Forbidden) as refused:
                    await secret_store.reveal(
                        session, master, "SF_TOKEN", for_resource="service:slack"
                    )
                assert "t0ken" not in str(refused.value)
        finally:
            await engine.dispose()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "name", ["", "lower", "SALES DB", "SALES-DB", "1SALES", "SALES_DB\n", "SALES\x00", "A" * 129]
)
def test_a_secret_name_that_cannot_be_an_environment_variable_is_refused(name: str) -> None:
    with pytest.raises(InvalidInput):
        secret_store.validate_name(name)


@pytest.mark.parametrize(
    "entry", ["service:", "service:Sales", "user:ann@example.com", "service:sql\n", "*"]
)
def test_an_allow_list_entry_must_name_a_service_or_deployment(entry: str) -> None:
    with pytest.raises(InvalidInput):
        secret_store.validate_allow([entry])


# --- API keys -----------------------------------------------------------------------------


def test_new_api_keys_are_well_formed_and_distinct() -> None:
    keys = {new_api_key() for _ in range(100)}

    assert len(keys) == 100
    assert all(key.startswith(API_KEY_PREFIX) for key in keys)
    assert all(is_well_formed_api_key(key) for key in keys)


@pytest.mark.parametrize(
    "candidate",
    [
        "",
        "bay_",
        "bay_" + "A" * 42,
        "bay_" + "A" * 44,
        "BAY_" + "A" * 43,
        "bat_" + "A" * 43,
        "A" * 47,
        "bay_" + "A" * 42 + "+",
        "bay_" + "A" * 42 + "/",
        "bay_" + "A" * 42 + "=",
        "bay_" + "A" * 42 + " ",
        "bay_" + "A" * 42 + "\n",
        "bay_" + "A" * 42 + "\x00",
        "bay_" + "A" * 42 + "\u00e9",
        " bay_" + "A" * 43,
    ],
)
def test_a_string_not_shaped_like_an_api_key_is_not_well_formed(candidate: str) -> None:
    assert not is_well_formed_api_key(candidate)


def test_api_keys_are_hashed_to_a_digest_that_does_not_contain_them() -> None:
    key = new_api_key()
    digest = hash_api_key(key)

    assert digest == hash_api_key(key)
    assert len(digest) == 64
    assert int(digest, 16) >= 0
    assert key[len(API_KEY_PREFIX) :] not in digest
    assert digest != hash_api_key(new_api_key())


def _every_stored_value(database: Path) -> list[tuple[str, str, object]]:
    """(table, column, value) for every cell of every table of a SQLite file."""
    cells: list[tuple[str, str, object]] = []
    with sqlite3.connect(database) as connection:
        tables = [
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        for table in tables:
            cursor = connection.execute(f'SELECT * FROM "{table}"')
            columns = [description[0] for description in cursor.description]
            for row in cursor:
                cells += [
                    (table, column, value) for column, value in zip(columns, row, strict=True)
                ]
    return cells


def _contains(value: object, needle: str) -> bool:
    if isinstance(value, bytes):
        return needle.encode() in value
    return needle in str(value)


def test_the_database_holds_neither_raw_keys_nor_secret_values(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = Settings(home=home, database_url=None, master_key=None)
    secret_values = ["sv-SALESFORCE-9f3b2c", "sv-DATABASE-77aa01ee", "sv-slack-xoxb-123456"]

    async def scenario() -> list[str]:
        created = await init_instance(settings, admin_email="root@example.com", admin_name="Root")
        master = load_master_key(env_value=None, path=settings.master_key_path)
        engine = create_engine(settings.resolved_database_url)
        sessions = session_factory(engine)
        raw_keys = [created.api_key]
        try:
            async with sessions() as session, session.begin():
                ann = await identity.create_user(
                    session, email="ann@example.com", name="Ann", teams=["marketing"], admin=False
                )
                for lifetime in (None, timedelta(days=30)):
                    issued = await identity.create_key(
                        session, ann, name="laptop", lifetime=lifetime
                    )
                    raw_keys.append(issued.secret)
                for number, value in enumerate(secret_values):
                    await secret_store.put_secret(
                        session, master, name=f"SECRET_{number}", value=value, allow=[]
                    )
                await secret_store.put_secret(
                    session, master, name="SECRET_0", value=secret_values[0], allow=["service:x"]
                )
            async with sessions() as session:
                stored = await secret_store.get_secret(session, "SECRET_1")
                assert master.open(stored.ciphertext, context="secret:SECRET_1") == (
                    secret_values[1].encode()
                )
        finally:
            await engine.dispose()
        return raw_keys

    raw_keys = asyncio.run(scenario())

    database = home / "servicebay.db"
    cells = _every_stored_value(database)
    assert {table for table, _, _ in cells} >= {"users", "api_keys", "secrets", "audit_events"}
    needles = [*raw_keys, *(key[len(API_KEY_PREFIX) :] for key in raw_keys), *secret_values]
    for table, column, value in cells:
        for needle in needles:
            assert not _contains(value, needle), f"{table}.{column} holds {needle[:8]}..."
    stored_hashes = {value for table, column, value in cells if column == "key_hash"}
    assert stored_hashes == {hash_api_key(key) for key in raw_keys}
    ciphertexts = [value for table, column, value in cells if column == "ciphertext"]
    assert len(ciphertexts) == len(secret_values)
    for path in home.iterdir():  # the database file itself, its WAL, the master key
        content = path.read_bytes()
        for needle in needles:
            assert needle.encode() not in content, f"{path.name} holds {needle[:8]}..."
