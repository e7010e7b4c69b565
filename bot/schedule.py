"""The scheduled push: each subscriber's next unseen case every few days, once per period
across all processes (the period is claimed in the ledger)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bot.ledger import Ledger
from bot.models import CaseCard
from bot.push import PushEngine, PushOptions, PushReport
from bot.sender import Sender
from bot.storage import SqliteStorage

_LOGGER = logging.getLogger(__name__)

SCHEDULE_NAME = "cases"
MAX_SCHEDULER_SLEEP = 3600.0
"""The scheduler wakes at least hourly, so a period claimed by another process is noticed."""
SCHEDULER_RETRY_SECONDS = 600.0


async def run_scheduled_push(
    storage: SqliteStorage,
    cards: Sequence[CaseCard],
    senders: Sequence[Sender],
    *,
    interval_days: float,
    options: PushOptions | None = None,
    on_report: Callable[[PushReport], None] | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    clock: Callable[[], float] = time.time,
) -> None:
    """Push each subscriber's next unseen case every `interval_days`, until cancelled.

    Meant for `infoguard push --every` and as a background task of the server. The period is
    claimed in the ledger, so several processes (or restarts) push once per period between them,
    and an interrupted round is finished at the next wake-up. Errors are logged and retried.
    Mind the platforms' quotas: WeChat lets a user receive 4 mass sends per calendar month.
    """
    ledger = await Ledger.open(storage, clock=clock)
    engine = PushEngine(storage, ledger, cards, options=options or PushOptions(), sleep=sleep)
    interval = interval_days * 86400.0
    try:
        await _scheduled_loop(ledger, engine, senders, interval, on_report, sleep)
    finally:
        await ledger.drain()


async def _scheduled_loop(
    ledger: Ledger,
    engine: PushEngine,
    senders: Sequence[Sender],
    interval: float,
    on_report: Callable[[PushReport], None] | None,
    sleep: Callable[[float], Awaitable[Any]],
) -> None:
    while True:
        try:
            report: PushReport | None = None
            if await ledger.claim_period(SCHEDULE_NAME, interval):
                report = await engine.push(senders, new_round=True)
            elif await ledger.has_unfinished_round():
                report = await engine.push(senders, new_round=False)
            if report is not None and on_report is not None:
                on_report(report)
            wait = await ledger.next_due(SCHEDULE_NAME, interval) - ledger.clock()
        except Exception as exc:
            _LOGGER.error("scheduled push failed (%s); retrying later", type(exc).__name__)
            _LOGGER.debug("scheduled push failure", exc_info=True)
            wait = SCHEDULER_RETRY_SECONDS
        await sleep(min(max(wait, 1.0), MAX_SCHEDULER_SLEEP))
