"""`infoguard push`: push case articles to subscribers, once or on a schedule, with a progress
bar on stderr and a summary on stdout. Senders come from `bot.channels.registry`."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from bot.channels.registry import SENDER_FACTORIES, build_senders
from bot.config import Settings
from bot.errors import InfoGuardError
from bot.models import CaseCard
from bot.push import PushCounts, PushOptions, PushReport, push_cases, push_order
from bot.runtime import load, open_configured_storage, open_push_store
from bot.schedule import run_scheduled_push
from bot.sender import Claim, Result, Sender

_BATCH_SIZES = {"wechat": (2, 10_000)}
"""(min_batch, max_batch) of channels that batch, so a dry run counts lone recipients held."""


class _PlanOnly:
    """Stands for a channel in a dry run: nothing is ever sent through it."""

    idempotent = False

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.min_batch, self.max_batch = _BATCH_SIZES.get(channel, (1, 1))

    async def send(
        self, card: CaseCard, recipients: Sequence[str], *, batch_key: str, claim: Claim
    ) -> dict[str, Result]:
        raise AssertionError("a dry run sends nothing")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "push",
        help="push case articles to subscribers",
        description="Push CASE_ID to every subscriber who has not had it; without CASE_ID, "
        "each subscriber gets the next case they have not had (oldest first). Nobody gets the "
        "same case twice. Re-running an interrupted push finishes it; running it again after "
        "it finished pushes the next case.",
    )
    p.add_argument("case_id", nargs="?", metavar="CASE_ID", help="the case to push")
    p.add_argument(
        "--channel",
        action="append",
        metavar="NAME",
        help=f"push on this channel only; repeatable (known: {', '.join(SENDER_FACTORIES)})",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="count who would get what; send and record nothing"
    )
    p.add_argument(
        "--every",
        type=float,
        nargs="?",
        const=0.0,
        metavar="DAYS",
        help="keep running and push the next unseen case every DAYS days "
        "(default INFOGUARD_PUSH_INTERVAL_DAYS)",
    )
    p.add_argument(
        "--concurrency", type=int, default=PushOptions().concurrency, help="batches in flight"
    )
    p.set_defaults(func=_push)


def _push(args: argparse.Namespace, settings: Settings) -> int:
    unknown = sorted(set(args.channel or ()) - set(SENDER_FACTORIES))
    if unknown:
        raise InfoGuardError(
            f"unknown channel {', '.join(unknown)}; known: {', '.join(SENDER_FACTORIES)}"
        )
    if args.every is not None and (args.case_id or args.dry_run):
        raise InfoGuardError("--every pushes the next unseen case: give no CASE_ID or --dry-run")
    if args.concurrency < 1:
        raise InfoGuardError("--concurrency must be at least 1")
    cards = push_order(load(settings), settings.case_url)
    options = PushOptions(concurrency=args.concurrency)
    return asyncio.run(_run(args, settings, cards, options))


async def _run(
    args: argparse.Namespace, settings: Settings, cards: list[CaseCard], options: PushOptions
) -> int:
    storage = await open_configured_storage(settings)
    store = await open_push_store(storage)
    senders: list[Sender] = []
    try:
        names = args.channel or list(SENDER_FACTORIES)
        if args.dry_run:
            senders = [_PlanOnly(name) for name in names]
        else:
            senders = build_senders(settings, storage, names, explicit=bool(args.channel))
        if args.every is not None:
            days = args.every or settings.push_interval_days
            print(f"pushing every {days:g} days on {', '.join(s.channel for s in senders)}")
            await run_scheduled_push(
                store, cards, senders, interval_days=days, options=options, on_report=_summary
            )
            return 0
        bar = ProgressBar(sys.stderr)
        report = await push_cases(
            store,
            cards,
            senders,
            case_id=args.case_id,
            dry_run=args.dry_run,
            options=options,
            on_progress=bar.update,
        )
        bar.finish(report)
        _summary(report)
        return 1 if report.busy else 0
    finally:
        for sender in senders:
            close = getattr(sender, "aclose", None)
            if close is not None:
                await close()
        await storage.close()


def _summary(report: PushReport, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    what = f"case {report.case_id}" if report.case_id else "next unseen case"
    lines = [f"push ({what}){' — dry run, nothing sent' if report.dry_run else ''}"]
    if report.busy:
        lines.append(f"  nothing pushed: another process is pushing ({report.busy}); try later")
        out.write("\n".join(lines) + "\n")
        out.flush()
        return
    for channel, counts in report.channels.items():
        lines.append(f"  {channel}: {_counts(counts, report.dry_run)}")
    lines.append(f"  total: {_counts(report.totals, report.dry_run)}")
    out.write("\n".join(lines) + "\n")
    out.flush()


def _counts(counts: PushCounts, dry_run: bool) -> str:
    if dry_run:
        held = f", held (alone on their case) {counts.held}" if counts.held else ""
        return (
            f"would send {counts.sent}, skipped {counts.skipped} of {counts.total} subscribers, "
            f"in flight from an interrupted push {counts.in_flight}{held}"
        )
    text = (
        f"sent {counts.sent}, skipped {counts.skipped}, unreachable {counts.unreachable}, "
        f"failed {counts.failed}, uncertain {counts.uncertain}"
    )
    if counts.deferred:
        text += f", deferred to the next push {counts.deferred}"
    if counts.held:
        text += f", held (alone on their case) {counts.held}"
    return text + (f" (resumed {counts.resumed})" if counts.resumed else "")


class ProgressBar:
    """A plain-text bar: redrawn in place on a terminal, a line per 10 % otherwise."""

    WIDTH = 30
    INTERVAL = 0.1

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._last_draw = 0.0
        self._last_tenth = -1

    def update(self, report: PushReport) -> None:
        counts = report.totals
        fraction = min(1.0, counts.done / counts.total) if counts.total else 1.0
        if self.tty:
            now = time.monotonic()
            if now - self._last_draw < self.INTERVAL:
                return
            self._last_draw = now
            self.out.write("\r" + self._line(counts, fraction))
        else:
            tenth = int(fraction * 10)
            if tenth == self._last_tenth:
                return
            self._last_tenth = tenth
            self.out.write(self._line(counts, fraction) + "\n")
        self.out.flush()

    def finish(self, report: PushReport) -> None:
        counts = report.totals
        fraction = min(1.0, counts.done / counts.total) if counts.total else 1.0
        if self.tty:
            self.out.write("\r" + self._line(counts, fraction) + "\n")
        elif int(fraction * 10) != self._last_tenth:
            self.out.write(self._line(counts, fraction) + "\n")
        self.out.flush()

    def _line(self, counts: PushCounts, fraction: float) -> str:
        filled = int(fraction * self.WIDTH)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        return (
            f"push [{bar}] {fraction:4.0%} {counts.done}/{counts.total}  sent {counts.sent}  "
            f"skipped {counts.skipped}  unreachable {counts.unreachable}  failed {counts.failed}"
        )
