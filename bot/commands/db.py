"""`infoguard db migrate` (bring the configured database's schema up to date) and
`infoguard db copy` (subscribers and the push ledger from a SQLite file into PostgreSQL)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from bot.config import Settings
from bot.errors import ConfigError
from bot.storage import backend_of, copy_to_postgres, migrate_database, redact_url


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = sub.add_parser("db", help="migrate the database schema or copy SQLite to PostgreSQL")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="{migrate,copy}")
    p = db_sub.add_parser(
        "migrate",
        help="apply the schema migrations the database lacks",
        description="Bring the database of INFOGUARD_DATABASE_URL (or the SQLite file) up to "
        "this version's schema; safe to run again, and from several machines at once.",
    )
    p.set_defaults(func=_migrate)
    p = db_sub.add_parser(
        "copy",
        help="copy subscribers and the push ledger from SQLite into PostgreSQL",
        description="Copy the SQLite file (--from, default INFOGUARD_DATABASE) into the "
        "PostgreSQL database (--to, default INFOGUARD_DATABASE_URL), migrating it first. "
        "Resumable: an interrupted copy goes on where it stopped; rows PostgreSQL already has "
        "are kept. Stop the bot first, so that the file does not change meanwhile.",
    )
    p.add_argument("--from", dest="source", type=Path, help="the SQLite file")
    p.add_argument("--to", dest="target", help="the postgresql:// URL")
    p.add_argument(
        "--restart", action="store_true", help="read the whole file again, ignoring checkpoints"
    )
    p.set_defaults(func=_copy)


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    url = settings.storage_url()
    applied, version = asyncio.run(migrate_database(url))
    done = f"applied {', '.join(map(str, applied))}" if applied else "nothing to apply"
    print(f"{redact_url(url)}: schema version {version} ({done})")
    return 0


def _copy(args: argparse.Namespace, settings: Settings) -> int:
    source: Path = args.source or settings.database
    target: str = args.target or settings.database_url
    if not target or backend_of(target) != "postgres":
        raise ConfigError("db copy needs a PostgreSQL target: --to or INFOGUARD_DATABASE_URL")

    def progress(done: object) -> None:
        print(f"  {getattr(done, 'table', '')}: {getattr(done, 'copied', 0)} rows", file=sys.stderr)

    results = asyncio.run(copy_to_postgres(source, target, restart=args.restart, on_batch=progress))
    print(f"copied {source} -> {redact_url(target)}")
    mismatch = False
    for result in results:
        resumed = " (resumed)" if result.resumed else ""
        print(
            f"  {result.table}: read {result.copied}{resumed}; {result.source} in SQLite, "
            f"{result.destination} in PostgreSQL"
        )
        mismatch = mismatch or result.destination < result.source
    if mismatch:
        print("PostgreSQL has fewer rows than SQLite: run the copy again", file=sys.stderr)
    return 1 if mismatch else 0
