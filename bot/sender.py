"""The seam between the push engine and the channels: how a case reaches subscribers.

Platforms differ: Telegram sends one message per chat under rate limits; WeChat sends
unsolicited messages only by mass send to batches of up to 10,000 openids, with a unique
clientmsgid per batch that WeChat uses to drop a repeated batch. One protocol fits both: the
push engine hands a sender a batch of at most `max_batch` recipients and a stable
`batch_key`, and gets one outcome per recipient back.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.models import CaseCard


class Status(enum.Enum):
    SENT = "sent"
    UNREACHABLE = "unreachable"
    """Blocked the bot, unsubscribed, or outside the platform's window: do not retry."""
    RETRY = "retry"
    """A transient error: try again later (after `retry_after` seconds if given; a wait of
    many minutes defers the recipient to the next push). The retry reuses the batch key when
    the whole batch is retried. A sender that is not `idempotent` returns RETRY only when
    nothing was delivered (e.g. HTTP 429); when it cannot know (a timeout) it raises, and the
    push engine records the delivery as uncertain. Raising an `InfoGuardError` (a setting is
    wrong) stops the push and must mean that nothing of the batch went out."""
    FAILED = "failed"
    """A permanent error for this message (e.g. a bad request): recorded, not retried."""


@dataclass(frozen=True, slots=True)
class Result:
    status: Status
    retry_after: float | None = None
    detail: str = ""
    """A short error code or name for the ledger; never message text or personal data."""


class Sender(Protocol):
    """Delivers case cards on one channel."""

    channel: str
    max_batch: int
    """Recipients per `send` call: 1 for per-chat platforms, up to 10,000 for WeChat mass send."""
    idempotent: bool
    """True when resending the same `batch_key` cannot deliver twice (WeChat clientmsgid)."""

    async def send(
        self, card: CaseCard, recipients: Sequence[str], *, batch_key: str
    ) -> dict[str, Result]:
        """Send `card` to each recipient; return an outcome for every recipient.

        `batch_key` (ASCII, at most 64 characters, e.g. for a WeChat clientmsgid) is unique
        per batch, and the same when the same recipients are sent again after a crash or a
        retry (part of a batch retried gets a new key). A sender may also have
        `async aclose()`; the push command awaits it when the push is over."""
        ...
