"""`infoguard db migrate` and `infoguard db copy` on real SQLite and PostgreSQL: versioned
schemas, an unmigrated server database refused with the fix named, and a SQLite → PostgreSQL
copy that keeps subscribers and the ledger intact, resumes after an interruption and copies
nothing twice."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from bot.cli import main
from bot.errors import ConfigError
from bot.ledger import SqlitePushStore
from bot.storage import SqliteStorage, migrate_database, open_storage
from bot.storage.copy import TABLES, TableCopy, copy_sqlite_to_postgres
from bot.storage.postgres import POSTGRES_MIGRATIONS

LATEST = POSTGRES_MIGRATIONS[-1].version


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., Ran]:
    """`infoguard ARGS` in this process (a sync test: the command runs its own event loop)."""

    def run(*args: str, **env: str) -> Ran:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        code = main(list(args))
        out = capsys.readouterr()
        return Ran(code, out.out, out.err)

    return run


async def test_a_sqlite_file_from_before_versions_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as old:
        old.executescript(
            "CREATE TABLE subscribers (channel TEXT NOT NULL, user_id TEXT NOT NULL, "
            "subscribed_at REAL NOT NULL, PRIMARY KEY (channel, user_id));"
            "INSERT INTO subscribers VALUES ('wechat', 'kept', 1.0);"
        )
    storage = await SqliteStorage.open(path)
    try:
        assert await storage.schema_version() == 1
        assert await storage.is_subscribed("wechat", "kept")
        assert await storage.migrate() == []
    finally:
        await storage.close()


def test_an_unmigrated_postgres_is_refused_until_db_migrate(
    postgres_url: str, cli: Callable[..., Ran]
) -> None:
    with pytest.raises(ConfigError, match="run `infoguard db migrate` first"):
        asyncio.run(open_storage(postgres_url))
    first = cli("db", "migrate", INFOGUARD_DATABASE_URL=postgres_url)
    assert first.returncode == 0, first.stderr
    versions = ", ".join(str(m.version) for m in POSTGRES_MIGRATIONS)
    assert f"schema version {LATEST} (applied {versions})" in first.stdout
    again = cli("db", "migrate", INFOGUARD_DATABASE_URL=postgres_url)
    assert f"schema version {LATEST} (nothing to apply)" in again.stdout

    async def opens() -> None:
        storage = await open_storage(postgres_url)
        await storage.close()

    asyncio.run(opens())


async def test_concurrent_migrations_apply_each_version_once(postgres_url: str) -> None:
    results = await asyncio.gather(*(migrate_database(postgres_url) for _ in range(3)))
    applied = sorted(v for versions, _ in results for v in versions)
    assert applied == [m.version for m in POSTGRES_MIGRATIONS]
    assert {version for _, version in results} == {LATEST}
    conn = await asyncpg.connect(postgres_url)
    try:
        rows = await conn.fetch("SELECT version FROM schema_version ORDER BY version")
    finally:
        await conn.close()
    assert [r[0] for r in rows] == applied


async def test_a_newer_schema_than_the_code_is_refused(migrated_postgres_url: str) -> None:
    conn = await asyncpg.connect(migrated_postgres_url)
    try:
        await conn.execute("INSERT INTO schema_version VALUES (999, 'future', 0)")
    finally:
        await conn.close()
    with pytest.raises(ConfigError, match="upgrade infoguard"):
        await open_storage(migrated_postgres_url)


async def make_sqlite_office(path: Path) -> None:
    """A SQLite file as a bot leaves it: subscribers, a round, a schedule, deliveries."""
    storage = await SqliteStorage.open(path)
    try:
        for n in range(23):
            await storage.subscribe("wechat", f"oUser{n:03d}")
        for n in range(4):
            await storage.subscribe("telegram", str(1000 + n))
        ledger = await SqlitePushStore.open(storage)
        round_id = await ledger.open_round(["wechat", "telegram"])
        await ledger.claim_period("cases", 86400)
        users = [f"oUser{n:03d}" for n in range(10)]
        assert await ledger.claim("wechat", "case_a", users, "batch-1", round_id) == users
        await ledger.settle(
            "wechat", "case_a", "batch-1", [(u, "sent", "") for u in users[:8]], attempts=1
        )
        await ledger.claim("telegram", "case_b", ["1000"], "batch-2", None)
        await ledger.drain()
    finally:
        await storage.close()


def sqlite_rows(path: Path, table: str) -> list[tuple[object, ...]]:
    columns = ", ".join(next(t for t in TABLES if t.name == table).columns)
    with sqlite3.connect(path) as db:
        return sorted(db.execute(f"SELECT {columns} FROM {table}").fetchall())


async def postgres_rows(url: str, table: str) -> list[tuple[object, ...]]:
    columns = ", ".join(next(t for t in TABLES if t.name == table).columns)
    conn = await asyncpg.connect(url)
    try:
        return sorted(tuple(r) for r in await conn.fetch(f"SELECT {columns} FROM {table}"))
    finally:
        await conn.close()


class Interrupt(Exception):
    pass


async def test_copy_keeps_everything_resumes_and_is_idempotent(
    tmp_path: Path, postgres_url: str
) -> None:
    path = tmp_path / "office.sqlite3"
    await make_sqlite_office(path)
    batches: list[tuple[str, int]] = []

    def stop_after_two(progress: TableCopy) -> None:
        batches.append((progress.table, progress.copied))
        if len(batches) == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        await copy_sqlite_to_postgres(path, postgres_url, batch=5, on_batch=stop_after_two)
    assert len(await postgres_rows(postgres_url, "subscribers")) == 10

    resumed = await copy_sqlite_to_postgres(path, postgres_url, batch=5)
    by_table = {r.table: r for r in resumed}
    assert by_table["subscribers"].resumed and by_table["subscribers"].copied == 27 - 10
    for table in TABLES:
        assert await postgres_rows(postgres_url, table.name) == sqlite_rows(path, table.name)
        assert by_table[table.name].source == by_table[table.name].destination
    assert by_table["push_deliveries"].destination == 11

    again = await copy_sqlite_to_postgres(path, postgres_url, batch=5)
    assert [r.copied for r in again] == [0] * len(TABLES)
    conn = await asyncpg.connect(postgres_url)
    try:
        checkpoints = {r[0] for r in await conn.fetch("SELECT last_key FROM copy_progress")}
    finally:
        await conn.close()
    assert checkpoints == {'"done"'}  # no user id is kept once the copy is done
    restarted = await copy_sqlite_to_postgres(path, postgres_url, batch=5, restart=True)
    assert restarted[0].copied == 27
    for table in TABLES:
        assert await postgres_rows(postgres_url, table.name) == sqlite_rows(path, table.name)


def test_copied_data_serves_the_bot_on_postgres(
    tmp_path: Path, postgres_url: str, cli: Callable[..., Ran]
) -> None:
    path = tmp_path / "office.sqlite3"
    asyncio.run(make_sqlite_office(path))
    result = cli("db", "copy", "--from", str(path), "--to", postgres_url)
    assert result.returncode == 0, result.stderr
    assert "subscribers: read 27; 27 in SQLite, 27 in PostgreSQL" in result.stdout
    assert "push_deliveries: read 11; 11 in SQLite, 11 in PostgreSQL" in result.stdout

    async def check() -> None:
        storage = await open_storage(postgres_url)
        try:
            assert await storage.count_subscribers("wechat") == 23
            assert await storage.forget_user("wechat", "oUser000") is True
        finally:
            await storage.close()
        remaining = await postgres_rows(postgres_url, "push_deliveries")
        assert len(remaining) == 10 and all(row[1] != "oUser000" for row in remaining)

    asyncio.run(check())


def test_copy_needs_a_postgres_target(tmp_path: Path, cli: Callable[..., Ran]) -> None:
    result = cli("db", "copy", "--from", str(tmp_path / "x.sqlite3"), INFOGUARD_DATABASE_URL="")
    assert result.returncode == 1
    assert "needs a PostgreSQL target" in result.stderr
