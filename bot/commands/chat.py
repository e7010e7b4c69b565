"""`infoguard chat` (console chat) and `infoguard ask` (answers for scripts and grading)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from bot.channels.console import chat, tolerate_bad_bytes
from bot.config import Settings
from bot.models import IncomingMessage
from bot.pii import redact
from bot.replies import render_plain
from bot.runtime import running_engine
from bot.text import readable

ASK_CHANNEL = "ask"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "chat",
        help="chat with the bot in the console",
        description="Chat on a terminal; with piped stdin, one message per line.",
    )
    p.set_defaults(func=_chat)
    p = sub.add_parser(
        "ask",
        help="answer questions and exit",
        description="Answer QUESTION, or every line of stdin, each as a new conversation.",
    )
    p.add_argument("question", nargs="?", help="the question; omit to read one per line from stdin")
    p.add_argument(
        "--json",
        action="store_true",
        help='one JSON object per line: {"question","answer","entry","score","fallback"}',
    )
    p.set_defaults(func=_ask)


def _chat(args: argparse.Namespace, settings: Settings) -> int:
    tolerate_bad_bytes(sys.stdin)
    with asyncio.Runner() as runner:
        opened = running_engine(settings)
        engine = runner.run(opened.__aenter__())
        try:
            chat(engine, runner.run)
        finally:
            runner.run(opened.__aexit__(None, None, None))
    return 0


def _ask(args: argparse.Namespace, settings: Settings) -> int:
    tolerate_bad_bytes(sys.stdin)
    lines = [args.question] if args.question else [line.rstrip("\n") for line in sys.stdin]
    questions = [readable(line) for line in lines]

    async def run() -> None:
        # Nothing a one-shot question needs outlives the process: keep storage in memory.
        async with running_engine(settings, database=":memory:") as engine:
            for number, question in enumerate(questions):
                message = IncomingMessage(ASK_CHANNEL, f"ask-{number}", question)
                outcome = await engine.respond(message)
                answer = "\n\n".join(render_plain(outcome.replies))
                if args.json:
                    row = {
                        # Redacted like everything else that leaves the engine's hands.
                        "question": redact(question),
                        "answer": answer,
                        "entry": outcome.entry_id,
                        "score": round(outcome.score, 4),
                        "fallback": outcome.fallback,
                    }
                    print(json.dumps(row, ensure_ascii=False), flush=False)
                else:
                    print(answer + "\n")
        sys.stdout.flush()

    asyncio.run(run())
    return 0
