"""What reflection takes for unique: only what makes a column's values unique on their own."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from servicebay.services.sql.schema import reflect


def test_a_partial_or_expression_unique_index_does_not_make_a_column_unique(
    tmp_path: Path,
) -> None:
    """Two soft-deleted rows may share an email: ordering by it needs the key as well."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'shop.db'}")
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TABLE customer (id INTEGER PRIMARY KEY, email TEXT NOT NULL, "
            "code TEXT NOT NULL UNIQUE, name TEXT NOT NULL, deleted_at TEXT)"
        )
        connection.exec_driver_sql(
            "CREATE UNIQUE INDEX live_email ON customer (email) WHERE deleted_at IS NULL"
        )
        connection.exec_driver_sql("CREATE UNIQUE INDEX lower_name ON customer (lower(name))")
        reflected = reflect(connection, ["customer"])
    engine.dispose()

    assert reflected.unique["customer"] == {"id", "code"}
