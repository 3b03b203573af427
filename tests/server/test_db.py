"""The database layer's statements on their own: ``upsert`` on SQLite and the statement it
builds for PostgreSQL, and ``IN (...)`` lists cut into batches."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from server import db as tables
from server.db import Database

NAMESPACE = bytes(range(16))


def _object(object_id: bytes, kind: str, added_ns: int) -> dict[str, object]:
    return {"namespace_id": NAMESPACE, "object_id": object_id, "kind": kind, "added_ns": added_ns}


def _objects(database: Database) -> set[tuple[bytes, str, int]]:
    table = tables.namespace_objects
    with database.read() as connection:
        rows = connection.execute(sa.select(table.c.object_id, table.c.kind, table.c.added_ns))
        return {(bytes(row.object_id), row.kind, row.added_ns) for row in rows}


@pytest.mark.parametrize(
    ("refresh", "after"),
    [
        pytest.param([], {(b"a" * 32, "c", 1), (b"b" * 32, "t", 6)}, id="existing-row-kept"),
        pytest.param(
            ["added_ns"], {(b"a" * 32, "c", 5), (b"b" * 32, "t", 6)}, id="named-columns-set"
        ),
    ],
)
def test_upsert_adds_new_rows_and_keeps_or_refreshes_an_existing_one(
    database: Database, refresh: list[str], after: set[tuple[bytes, str, int]]
) -> None:
    with database.write() as connection:
        tables.upsert(connection, tables.namespace_objects, [_object(b"a" * 32, "c", 1)])
    with database.write() as connection:
        tables.upsert(
            connection,
            tables.namespace_objects,
            [_object(b"a" * 32, "t", 5), _object(b"b" * 32, "t", 6)],
            refresh=refresh,
        )
    assert _objects(database) == after


def test_upsert_of_no_rows_executes_nothing(database: Database) -> None:
    with database.write() as connection:
        tables.upsert(connection, tables.namespace_objects, [], refresh=["added_ns"])
    assert _objects(database) == set()


def test_upsert_statement_for_postgresql_targets_the_primary_key() -> None:
    dialect = sa.create_mock_engine("postgresql://", executor=None).dialect
    ignore = tables.upsert_statement("postgresql", tables.chunks).compile(dialect=dialect)
    refresh = tables.upsert_statement(
        "postgresql", tables.namespace_objects, refresh=["added_ns"]
    ).compile(dialect=dialect)
    assert str(ignore).endswith("ON CONFLICT (id) DO NOTHING")
    assert str(refresh).endswith(
        "ON CONFLICT (namespace_id, object_id) DO UPDATE SET added_ns = excluded.added_ns"
    )


def test_upsert_statement_refuses_a_dialect_it_was_not_written_for() -> None:
    with pytest.raises(NotImplementedError):
        tables.upsert_statement("mysql", tables.chunks)


def test_in_batches_cuts_values_in_order_into_lists_of_the_size() -> None:
    assert list(tables.in_batches(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(tables.in_batches(range(6), 3)) == [[0, 1, 2], [3, 4, 5]]
    assert list(tables.in_batches([], 3)) == []
    assert [len(batch) for batch in tables.in_batches(range(1001))] == [500, 500, 1]


def _chunk_id(number: int) -> bytes:
    return number.to_bytes(32, "big")


def test_select_in_over_more_ids_than_one_batch_returns_every_row_once(
    database: Database,
) -> None:
    stored = [_chunk_id(n) for n in range(2 * tables.IN_CLAUSE_IDS + 34)]
    rows = [
        {"id": chunk_id, "stored_bytes": 10, "plain_bytes": 1, "created_ns": 0}
        for chunk_id in stored
    ]
    with database.write() as connection:
        connection.execute(tables.chunks.insert(), rows)
    absent = [_chunk_id(10**6 + n) for n in range(100)]
    asked = [*reversed(stored), *absent, *stored[:700]]  # every stored id, some twice

    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    chunks = tables.chunks
    sa.event.listen(database.engine, "before_cursor_execute", count)
    try:
        with database.read() as connection:
            found = [
                bytes(row.id)
                for row in tables.select_in(connection, sa.select(chunks.c.id), chunks.c.id, asked)
            ]
            total = sum(
                int(row[0])
                for row in tables.select_in(
                    connection, sa.select(sa.func.sum(chunks.c.plain_bytes)), chunks.c.id, asked
                )
            )
    finally:
        sa.event.remove(database.engine, "before_cursor_execute", count)
    assert sorted(found) == stored
    assert total == len(stored)
    # 1134 distinct ids asked: three statements each, none with more ids than the bound.
    batched = [statement for statement in statements if "IN (" in statement]
    assert [statement.count("?") for statement in batched] == [500, 500, 134] * 2
