"""The running server pushes each subscriber's next unseen case on its schedule."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from bot.channels import registry
from bot.config import Settings
from bot.engine import Engine
from bot.models import CaseCard
from bot.sender import Claim, Result, Status
from bot.server import _push_on_schedule
from bot.storage import SqliteStorage


class FakeTelegram:
    channel = "telegram"
    min_batch = 1
    max_batch = 1
    idempotent = False

    def __init__(self) -> None:
        self.delivered: list[tuple[str, str]] = []
        self.arrived = asyncio.Event()
        self.closed = False

    async def send(
        self, card: CaseCard, recipients: Sequence[str], *, batch_key: str, claim: Claim
    ) -> dict[str, Result]:
        recipients = await claim(recipients)
        self.delivered += [(user, card.case_id) for user in recipients]
        self.arrived.set()
        return {user: Result(Status.SENT) for user in recipients}

    async def aclose(self) -> None:
        self.closed = True


async def test_server_pushes_on_schedule_and_closes_its_senders(
    mini_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "engine.sqlite3"  # the mini engine's own file
    await mini_engine.storage.subscribe("telegram", "42")
    await mini_engine.storage.subscribe("console", "local")  # never pushed by the server
    sender = FakeTelegram()
    monkeypatch.setitem(registry.SENDER_FACTORIES, "telegram", lambda settings, storage: sender)
    settings = replace(Settings(), database=database, push_interval_days=8)
    task = asyncio.create_task(_push_on_schedule(mini_engine, settings))
    await asyncio.wait_for(sender.arrived.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sender.delivered == [("42", "mini_case")]
    assert sender.closed
    storage = await SqliteStorage.open(database)
    try:
        assert await storage.is_subscribed("telegram", "42")
    finally:
        await storage.close()


async def test_schedule_off_means_no_push(mini_engine: Engine, tmp_path: Path) -> None:
    settings = replace(Settings(), database=tmp_path / "x.sqlite3", push_interval_days=0)
    await asyncio.wait_for(_push_on_schedule(mini_engine, settings), timeout=5)
