"""The `infoguard` command line: parses arguments, configures logging, reports errors."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bot.commands import chat, db, kb, push, serve, telegram, wechat
from bot.config import Settings
from bot.errors import ContentError, InfoGuardError
from bot.pii import install_log_redaction

COMMANDS = (chat, db, kb, push, serve, telegram, wechat)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infoguard",
        description="个人信息保护助手 InfoGuard: answers questions about protecting personal "
        "information, guides reports to the police, and pushes case articles.",
    )
    parser.add_argument(
        "--knowledge", type=Path, help="knowledge folder (env INFOGUARD_KNOWLEDGE_DIR)"
    )
    parser.add_argument("--cases", type=Path, help="cases folder (env INFOGUARD_CASES_DIR)")
    parser.add_argument("--database", type=Path, help="SQLite file (env INFOGUARD_DATABASE)")
    parser.add_argument("--debug", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    install_log_redaction()
    # aiosqlite logs SQL parameters (user ids, session state) at DEBUG.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)
    try:
        settings = Settings.from_env()
        given = {
            "knowledge_dir": args.knowledge,
            "cases_dir": args.cases,
            "database": args.database,
        }
        overrides: dict[str, object] = {k: v for k, v in given.items() if v}
        if args.database:  # an explicit SQLite file wins over INFOGUARD_DATABASE_URL
            overrides["database_url"] = ""
        settings = Settings(**{**settings.__dict__, **overrides})  # type: ignore[arg-type]
        code: int = args.func(args, settings)
        return code
    except ContentError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) found", file=sys.stderr)
        return 1
    except InfoGuardError as exc:
        print(f"infoguard: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`infoguard ask ... | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
