"""The scheduled push: each subscriber's next unseen case every few days, once per period
across all processes (the period is claimed in the store, under the push lease)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bot.models import CaseCard
from bot.push import PushEngine, PushOptions, PushReport
from bot.push_store import PushStore
from bot.sender import Sender

_LOGGER = logging.getLogger(__name__)

SCHEDULE_NAME = "cases"
MAX_SCHEDULER_SLEEP = 3600.0
"""The scheduler wakes at least hourly, so a period claimed by another process is noticed."""
SCHEDULER_RETRY_SECONDS = 600.0
BUSY_RETRY_SECONDS = 20.0
"""Another process holds the push lease: look again this much later. With the lease's 40 s,
a dead owner's push is taken over within a minute (at once when the owner was a process on
this machine: its restarted worker finds it gone)."""


async def run_scheduled_push(
    store: PushStore,
    cards: Sequence[CaseCard],
    senders: Sequence[Sender],
    *,
    interval_days: float,
    options: PushOptions | None = None,
    on_report: Callable[[PushReport], None] | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> None:
    """Push each subscriber's next unseen case every `interval_days`, until cancelled.

    Meant for `infoguard push --every` and as a background task of the server. The lease is
    taken first and the period claimed under it, so several processes (or restarts) push once
    per period between them, one at a time, and an interrupted round is finished at the next
    wake-up. Errors are logged and retried. Mind the platforms' quotas: WeChat lets a user
    receive 4 mass sends per calendar month.
    """
    engine = PushEngine(store, cards, options=options or PushOptions(), sleep=sleep)
    interval = interval_days * 86400.0
    try:
        await _scheduled_loop(store, engine, senders, interval, on_report, sleep)
    finally:
        await store.drain()


async def _scheduled_loop(
    store: PushStore,
    engine: PushEngine,
    senders: Sequence[Sender],
    interval: float,
    on_report: Callable[[PushReport], None] | None,
    sleep: Callable[[float], Awaitable[Any]],
) -> None:
    while True:
        try:
            report: PushReport | None = None
            async with engine.lease() as holder:
                if holder is not None:
                    _LOGGER.info("scheduled push: another process is pushing; waiting")
                    wait = BUSY_RETRY_SECONDS
                else:
                    if await store.claim_period(SCHEDULE_NAME, interval):
                        report = await engine.push(senders, new_round=True)
                    elif await store.has_unfinished_round():
                        report = await engine.push(senders, new_round=False)
                    wait = await store.next_due(SCHEDULE_NAME, interval) - store.now()
            if report is not None and on_report is not None:
                on_report(report)
        except Exception as exc:
            _LOGGER.error("scheduled push failed (%s); retrying later", type(exc).__name__)
            _LOGGER.debug("scheduled push failure", exc_info=True)
            wait = SCHEDULER_RETRY_SECONDS
        await sleep(min(max(wait, 1.0), MAX_SCHEDULER_SLEEP))
