"""The seam between the push engine and the channels: how a case reaches subscribers.

Platforms differ: Telegram sends one message per chat under rate limits; WeChat sends
unsolicited messages only by mass send to batches of 2 to 10,000 openids, with a unique
clientmsgid per batch that WeChat uses to drop a repeated batch. One protocol fits both: the
push engine hands a sender a batch of `min_batch` to `max_batch` recipients, a stable
`batch_key` and a `claim`, and gets one outcome per recipient back.

The claim is what keeps a crash's damage to the requests on the wire: a sender calls
`await claim(recipients)` as late as it can, after any waiting (rate limits, tokens) and just
before the HTTP call that delivers, and sends only to the recipients it returns. Claimed
recipients are recorded as pending in the ledger; after a crash, pending recipients are
re-sent under the same key (an idempotent sender) or recorded uncertain (any other).
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
    DEFERRED = "deferred"
    """Certainly not delivered, and not to be tried again in this push (a quota that resets
    later, a lone recipient that cannot be mass sent): the next push offers the case again."""
    FAILED = "failed"
    """A permanent error for this message (e.g. a bad request): recorded, not retried."""


@dataclass(frozen=True, slots=True)
class Result:
    status: Status
    retry_after: float | None = None
    detail: str = ""
    """A short error code or name for the ledger; never message text or personal data."""


class Claim(Protocol):
    """Given with each batch; the sender awaits it just before the HTTP call."""

    repeat: bool
    """True when this batch key may have been sent before (a batch resumed after a crash, or
    retried): a platform's "already sent under this key" then means delivered. False for a
    key never used: such an answer then means somebody else's send, not ours."""

    async def __call__(self, recipients: Sequence[str]) -> list[str]:
        """Record `recipients` as in flight; returns those the sender may send to (still
        subscribed, not served meanwhile). Outcomes count only for these."""
        ...


class Sender(Protocol):
    """Delivers case cards on one channel."""

    channel: str
    min_batch: int
    """Fewest recipients a send may have: 2 for WeChat mass send, else 1. Recipients who would
    be alone on their case are held back for a later push (never sent another way)."""
    max_batch: int
    """Recipients per `send` call: 1 for per-chat platforms, up to 10,000 for WeChat mass send."""
    idempotent: bool
    """True when resending the same `batch_key` cannot deliver twice (WeChat clientmsgid)."""

    async def send(
        self, card: CaseCard, recipients: Sequence[str], *, batch_key: str, claim: Claim
    ) -> dict[str, Result]:
        """Send `card` to the recipients `claim` returns; an outcome for each of them.

        `batch_key` (ASCII, at most 64 characters, e.g. for a WeChat clientmsgid) is unique
        per batch, and the same when the same recipients are sent again after a crash or a
        retry (part of a batch retried gets a new key). A sender may also have
        `async aclose()`; the push command awaits it when the push is over."""
        ...
