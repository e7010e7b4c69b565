"""`infoguard db copy`: the durable data of a SQLite file (subscribers and the push ledger:
deliveries, rounds, schedule) into PostgreSQL, for an office moving to a server database. The
push lease is not copied: it names a process on the old setup.

The copy goes table by table in key order, in batches. Each batch is inserted together with a
checkpoint (the last key copied, in `copy_progress`) in one transaction, so an interrupted copy
resumes after the last batch that landed, and running it again when it is done copies
nothing (a finished table's checkpoint says only "done"; `--restart` reads it all again).
Rows already in PostgreSQL are never overwritten (ON CONFLICT DO NOTHING): the copy cannot undo
what a bot already running on PostgreSQL recorded. Short-lived state (sessions, seen message
ids, cached tokens) is not copied: it is rebuilt within minutes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg

from bot.errors import ConfigError
from bot.storage.postgres import connect_pool, migrate

BATCH_ROWS = 5000
_DONE = '"done"'


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[str, ...]
    types: tuple[str, ...]
    """PostgreSQL array element types, for the unnest() insert."""
    key: tuple[str, ...]


TABLES = (
    Table(
        "subscribers",
        ("channel", "user_id", "subscribed_at"),
        ("text", "text", "float8"),
        ("channel", "user_id"),
    ),
    Table(
        "push_deliveries",
        (
            "channel",
            "user_id",
            "case_id",
            "status",
            "batch_key",
            "attempts",
            "detail",
            "round",
            "updated_at",
        ),
        ("text", "text", "text", "text", "text", "int4", "text", "int4", "float8"),
        ("channel", "user_id", "case_id"),
    ),
    Table("push_runs", ("round", "started_at"), ("int4", "float8"), ("round",)),
    Table(
        "push_run_channels",
        ("round", "channel", "finished_at"),
        ("int4", "text", "float8"),
        ("round", "channel"),
    ),
    Table("push_schedule", ("name", "started_at"), ("text", "float8"), ("name",)),
)


@dataclass(slots=True)
class TableCopy:
    table: str
    copied: int = 0
    """Rows read from SQLite in this run (rows PostgreSQL already had are counted too)."""
    source: int = 0
    destination: int = 0
    resumed: bool = False


Progress = Callable[[TableCopy], None]


async def copy_sqlite_to_postgres(
    sqlite_file: Path,
    postgres_url: str,
    *,
    batch: int = BATCH_ROWS,
    restart: bool = False,
    on_batch: Progress | None = None,
) -> list[TableCopy]:
    """Copy every durable table; per table, what was copied and the row counts on both sides
    (equal when nothing else writes meanwhile). `restart` forgets the checkpoints and reads
    the whole file again (still overwriting nothing)."""
    if not sqlite_file.is_file():
        raise ConfigError(f"no SQLite database at {sqlite_file}")
    source = await aiosqlite.connect(f"file:{sqlite_file}?mode=ro", uri=True)
    pool = await connect_pool(postgres_url, max_size=2)
    try:
        await migrate(pool)
        if restart:
            await pool.execute(
                "DELETE FROM copy_progress WHERE source = $1", str(sqlite_file.resolve())
            )
        results = []
        for table in TABLES:
            results.append(
                await _copy_table(source, pool, str(sqlite_file.resolve()), table, batch, on_batch)
            )
        return results
    finally:
        await pool.close()
        await source.close()


async def _copy_table(
    source: aiosqlite.Connection,
    pool: asyncpg.Pool,
    source_name: str,
    table: Table,
    batch: int,
    on_batch: Progress | None,
) -> TableCopy:
    result = TableCopy(table.name)
    exists = await source.execute_fetchall(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table.name,)
    )
    if not list(exists):  # e.g. no push ever ran: no ledger tables
        result.destination = await _count(pool, table)
        return result
    rows = await source.execute_fetchall(f"SELECT COUNT(*) FROM {table.name}")
    result.source = int(next(iter(rows))[0])
    checkpoint = await pool.fetchval(
        "SELECT last_key FROM copy_progress WHERE source = $1 AND table_name = $2",
        source_name,
        table.name,
    )
    if checkpoint == _DONE:
        result.destination = await _count(pool, table)
        return result
    last: list[Any] | None = json.loads(checkpoint) if checkpoint else None
    result.resumed = last is not None
    columns = ", ".join(table.columns)
    keys = ", ".join(table.key)
    marks = ", ".join("?" * len(table.key))
    arrays = ", ".join(f"${i + 1}::{kind}[]" for i, kind in enumerate(table.types))
    insert = (
        f"INSERT INTO {table.name} ({columns}) SELECT * FROM unnest({arrays}) "
        "ON CONFLICT DO NOTHING"
    )
    while True:
        after = f"WHERE ({keys}) > ({marks}) " if last is not None else ""
        chunk = list(
            await source.execute_fetchall(
                f"SELECT {columns} FROM {table.name} {after}ORDER BY {keys} LIMIT ?",
                (*(last or ()), batch),
            )
        )
        if not chunk:
            break
        key_index = [table.columns.index(k) for k in table.key]
        last = [chunk[-1][i] for i in key_index]
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(insert, *(list(column) for column in zip(*chunk, strict=True)))
            await conn.execute(
                "INSERT INTO copy_progress VALUES ($1, $2, $3) ON CONFLICT (source, table_name) "
                "DO UPDATE SET last_key = excluded.last_key",
                source_name,
                table.name,
                json.dumps(last, ensure_ascii=False),
            )
        result.copied += len(chunk)
        if on_batch is not None:
            on_batch(result)
        if len(chunk) < batch:
            break
    # The last key names a user: once the table is done, only "done" is kept.
    await pool.execute(
        "INSERT INTO copy_progress VALUES ($1, $2, $3) ON CONFLICT (source, table_name) "
        "DO UPDATE SET last_key = excluded.last_key",
        source_name,
        table.name,
        _DONE,
    )
    result.destination = await _count(pool, table)
    return result


async def _count(pool: asyncpg.Pool, table: Table) -> int:
    return int(await pool.fetchval(f"SELECT COUNT(*) FROM {table.name}"))
