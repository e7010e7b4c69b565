"""The console channel: a chat on a terminal, or one message per line when stdin is piped."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from bot.models import CaseCard, IncomingMessage, Reply
from bot.replies import render_plain
from bot.sender import Claim, Result, Status
from bot.text import readable

if TYPE_CHECKING:
    from bot.engine import Engine

CHANNEL = "console"
PROMPT = "您> "
QUIT = {"/quit", "/exit", "exit", "quit"}


def chat(
    engine: Engine,
    run: Callable[[Coroutine[Any, Any, list[Reply]]], list[Reply]],
    *,
    user_id: str = "local",
    stdin: TextIO = sys.stdin,
    stdout: TextIO = sys.stdout,
) -> None:
    """Read messages until end of input; print the bot's replies after each.

    The loop is synchronous and `run` (an asyncio.Runner's) answers each message: waiting
    for a line outside the event loop, Ctrl-C raises KeyboardInterrupt at once, where inside
    asyncio's handler it would only cancel a task, unseen until the next line arrived.
    """
    interactive = stdin.isatty()
    if interactive:
        stdout.write("个人信息保护助手（输入 /quit 退出）\n")
    try:
        while True:
            if interactive:
                stdout.write(PROMPT)
                stdout.flush()
            line = stdin.readline()
            if not line:
                break
            text = readable(line).strip()
            if not text:
                continue
            if text in QUIT:
                break
            replies = run(engine.handle(IncomingMessage(CHANNEL, user_id, text)))
            for block in render_plain(replies):
                stdout.write(f"助手> {block}\n\n")
            stdout.flush()
    except KeyboardInterrupt:
        if interactive:
            stdout.write("\n")  # the shell's prompt starts on a line of its own
            stdout.flush()
        raise


def tolerate_bad_bytes(stream: TextIO) -> None:
    """Make `stream` decode invalid UTF-8 (GBK, say) as U+FFFD instead of failing."""
    if isinstance(stream, io.TextIOWrapper):
        stream.reconfigure(errors="replace")


class ConsoleSender:
    """Prints each card on stdout: pushes to console subscribers, e.g. for a demonstration."""

    channel = "console"
    min_batch = 1
    max_batch = 1
    idempotent = False

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out

    async def send(
        self, card: CaseCard, recipients: Sequence[str], *, batch_key: str, claim: Claim
    ) -> dict[str, Result]:
        out = self.out or sys.stdout
        recipients = await claim(recipients)
        for _ in recipients:
            link = f"\n阅读全文：{card.url}" if card.url else ""
            out.write(f"【以案释法】{card.title}\n{card.summary}{link}\n\n")
        out.flush()
        return {recipient: Result(Status.SENT) for recipient in recipients}
