"""Shared fixtures: a small content folder built from the real shared files plus tiny entries,
and isolated places on the real PostgreSQL and Redis test servers."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

import pytest
import yaml

from bot.content import Content, load_content
from bot.engine import Engine
from bot.matching import Matcher
from bot.storage import SqliteStorage, Storage, open_storage

ROOT = Path(__file__).resolve().parent.parent
MINI = Path(__file__).resolve().parent / "data" / "mini"
MINI_EXEMPLARS = 40


@pytest.fixture(autouse=True, scope="session")
def model_cache() -> Path:
    """One folder of trained matchers for the whole run and the commands it starts, kept
    between runs on this checkout (`scripts/test` points `kb eval` at it too). The bundled
    knowledge base is trained here, once, before any test or subprocess needs it."""
    folder = Path(
        os.environ.setdefault("INFOGUARD_CACHE_DIR", str(ROOT / ".cache" / "test-models"))
    )
    content = load_content(ROOT / "knowledge", ROOT / "cases_explained")
    Matcher(Engine._matchable_entries(content), content.lexicon, cache_dir=folder)
    return folder


@pytest.fixture
def mini_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the mini knowledge base (real _bot.yaml and _lexicon.yaml) and its cases."""
    knowledge = tmp_path / "knowledge"
    cases = tmp_path / "cases"
    shutil.copytree(MINI / "knowledge", knowledge)
    shutil.copytree(MINI / "cases", cases)
    for name in ("_bot.yaml", "_lexicon.yaml", "bot.yaml"):
        shutil.copy(ROOT / "knowledge" / name, knowledge / name)
    # Three tiny entries next to hundreds of out-of-scope exemplars would be a knowledge base
    # that declines everything: keep the exemplars in proportion.
    lexicon = knowledge / "_lexicon.yaml"
    raw = yaml.safe_load(lexicon.read_text(encoding="utf-8"))
    raw["out_of_scope"] = raw["out_of_scope"][:MINI_EXEMPLARS]
    lexicon.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return knowledge, cases


@pytest.fixture
def mini_content(mini_dirs: tuple[Path, Path]) -> Content:
    return load_content(*mini_dirs)


@pytest.fixture
async def mini_engine(mini_content: Content, tmp_path: Path) -> AsyncIterator[Engine]:
    storage = await SqliteStorage.open(tmp_path / "engine.sqlite3")
    yield Engine(mini_content, storage, case_url=lambda c: f"https://bot.example/cases/{c}")
    await storage.close()


# Real PostgreSQL and Redis servers, started by `scripts/test-services` (.ci/run does it).


@dataclass(frozen=True)
class RedisTarget:
    url: str
    prefix: str
    """Every key of one test starts with this, so tests never see each other's keys."""


def service_url(variable: str) -> str:
    """The URL of a test server; in CI a missing one fails the test instead of skipping it."""
    url = os.environ.get(variable, "")
    if url:
        return url
    message = (
        f"{variable} is not set: start the test servers with "
        '`eval "$(scripts/test-services start)"` (needs Debian\'s postgresql and redis-server; '
        "`scripts/test-services start --install` installs them as root)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = "&".join(filter(None, [parts.query, urlencode(params)]))
    return urlunsplit(parts._replace(query=query))


@asynccontextmanager
async def postgres_schema(*, migrated: bool = False) -> AsyncIterator[str]:
    """A PostgreSQL URL whose tables live in a new, empty schema of their own (dropped after),
    so tests run in isolation on one server; asyncpg passes `search_path` to the server."""
    import asyncpg

    base = service_url("INFOGUARD_TEST_DATABASE_URL")
    schema = f"test_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(base)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        url = with_query(base, search_path=schema)
        if migrated:
            from bot.storage.postgres import connect_pool, migrate

            pool = await connect_pool(url)
            try:
                await migrate(pool)
            finally:
                await pool.close()
        yield url
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()


@asynccontextmanager
async def redis_namespace() -> AsyncIterator[RedisTarget]:
    """The test Redis with a key prefix of this test's own; its keys are deleted after."""
    import redis.asyncio as aioredis

    target = RedisTarget(service_url("INFOGUARD_TEST_REDIS_URL"), f"test:{uuid.uuid4().hex[:16]}:")
    try:
        yield target
    finally:
        client = aioredis.Redis.from_url(target.url)
        try:
            keys = [key async for key in client.scan_iter(match=target.prefix + "*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    async with postgres_schema() as url:
        yield url


@pytest.fixture
async def migrated_postgres_url() -> AsyncIterator[str]:
    async with postgres_schema(migrated=True) as url:
        yield url


@pytest.fixture
async def redis_target() -> AsyncIterator[RedisTarget]:
    async with redis_namespace() as target:
        yield target


PUSH_BACKENDS = ["sqlite", "postgres"]


@asynccontextmanager
async def push_database_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """A database for the push tests: a SQLite file, or a migrated PostgreSQL schema."""
    if backend == "sqlite":
        yield f"sqlite://{tmp_path / 'push.sqlite3'}"
        return
    async with postgres_schema(migrated=True) as url:
        yield url


@asynccontextmanager
async def push_database(backend: str, tmp_path: Path) -> AsyncIterator[Storage]:
    """A storage on `push_database_url`, closed after."""
    async with push_database_url(backend, tmp_path) as url:
        storage = await open_storage(url)
        try:
            yield storage
        finally:
            await storage.close()
