"""`infoguard push` end to end: dry run, a real push through a fake channel registered in the
command's sender registry, the console channel, the summary and the progress bar, and errors."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from bot.cli import main
from bot.commands import push as push_command
from bot.config import Settings
from bot.ledger import SqlitePushStore
from bot.models import CaseCard
from bot.sender import Claim, Result, Status
from bot.storage import SqliteStorage

CHANNEL = "fake"


class RecordingSender:
    """A fake channel: records what it delivers; users named "blocked…" have blocked the bot."""

    channel = CHANNEL
    min_batch = 1
    max_batch = 2
    idempotent = True

    def __init__(self) -> None:
        self.delivered: list[tuple[str, str]] = []
        self.closed = False

    async def send(
        self, card: CaseCard, recipients: Sequence[str], *, batch_key: str, claim: Claim
    ) -> dict[str, Result]:
        results: dict[str, Result] = {}
        for user in await claim(recipients):
            if user.startswith("blocked"):
                results[user] = Result(Status.UNREACHABLE, detail="forbidden")
            else:
                self.delivered.append((user, card.case_id))
                results[user] = Result(Status.SENT)
        return results

    async def aclose(self) -> None:
        self.closed = True


@pytest.fixture
def workspace(mini_dirs: tuple[Path, Path], tmp_path: Path) -> list[str]:
    """The mini content with three cases, and the CLI options that point at it."""
    knowledge, cases = mini_dirs
    template = (cases / "mini_case.yaml").read_text(encoding="utf-8")
    for case_id, date in (("mini_older", "2020-01-05"), ("mini_newer", "2024-03")):
        text = template.replace("id: mini_case", f"id: {case_id}")
        text = text.replace('date: "2022-12-26"', f'date: "{date}"')
        (cases / f"{case_id}.yaml").write_text(text, encoding="utf-8")
    return [
        "--knowledge",
        str(knowledge),
        "--cases",
        str(cases),
        "--database",
        str(database(tmp_path)),
    ]


def database(tmp_path: Path) -> Path:
    return tmp_path / "data" / "infoguard.sqlite3"


@pytest.fixture
def sender(monkeypatch: pytest.MonkeyPatch) -> RecordingSender:
    built = RecordingSender()

    def factory(settings: Settings, storage: SqliteStorage) -> RecordingSender:
        return built

    monkeypatch.setitem(push_command.SENDER_FACTORIES, CHANNEL, factory)
    return built


def subscribe(path: Path, channel: str, *users: str) -> None:
    async def run() -> None:
        storage = await SqliteStorage.open(path)
        for user in users:
            await storage.subscribe(channel, user)
        await storage.close()

    asyncio.run(run())


def deliveries_recorded(path: Path) -> int:
    async def run() -> int:
        storage = await SqliteStorage.open(path)
        ledger = await SqlitePushStore.open(storage)
        async with ledger.db.execute("SELECT COUNT(*) FROM push_deliveries") as cur:
            row = await cur.fetchone()
        await storage.close()
        return int(row[0]) if row else 0

    return asyncio.run(run())


def test_dry_run_counts_and_records_nothing(
    workspace: list[str],
    sender: RecordingSender,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    subscribe(database(tmp_path), CHANNEL, "a", "b", "c")
    subscribe(database(tmp_path), "console", "local")
    assert main([*workspace, "push", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run" in out
    assert "fake: would send 3, skipped 0 of 3 subscribers" in out
    assert "console: would send 1" in out
    assert "【以案释法】" not in out  # the console card was not printed either
    assert sender.delivered == []
    assert deliveries_recorded(database(tmp_path)) == 0


def test_push_through_a_registered_sender_then_rerun(
    workspace: list[str],
    sender: RecordingSender,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    subscribe(database(tmp_path), CHANNEL, "a", "b", "blocked1")
    assert main([*workspace, "push", "--channel", CHANNEL]) == 0
    captured = capsys.readouterr()
    assert "push (next unseen case)" in captured.out
    assert "fake: sent 2, skipped 0, unreachable 1, failed 0, uncertain 0" in captured.out
    assert "push [" in captured.err and "100%" in captured.err
    assert sorted(sender.delivered) == [("a", "mini_older"), ("b", "mini_older")]
    assert sender.closed

    assert main([*workspace, "push", "mini_older", "--channel", CHANNEL]) == 0
    assert "fake: sent 0, skipped 2, unreachable 0" in capsys.readouterr().out
    assert main([*workspace, "push", "--channel", CHANNEL]) == 0  # the next round
    assert "fake: sent 2," in capsys.readouterr().out
    assert sorted(sender.delivered[2:]) == [("a", "mini_case"), ("b", "mini_case")]


def test_console_channel_prints_the_card(
    workspace: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    subscribe(database(tmp_path), "console", "local")
    assert main([*workspace, "push", "mini_newer", "--channel", "console"]) == 0
    out = capsys.readouterr().out
    assert "【以案释法】验证码也是个人信息" in out
    assert "console: sent 1" in out


def test_errors_exit_1_with_a_message(
    workspace: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*workspace, "push", "no_such_case", "--channel", "console"]) == 1
    assert "no case with id 'no_such_case'" in capsys.readouterr().err
    assert main([*workspace, "push", "--channel", "carrier_pigeon"]) == 1
    assert "unknown channel carrier_pigeon" in capsys.readouterr().err
    assert main([*workspace, "push", "mini_case", "--every", "7"]) == 1
    assert "--every" in capsys.readouterr().err


def test_an_unconfigured_channel_is_refused_when_asked_for(
    workspace: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(push_command.SENDER_FACTORIES, "quiet", lambda settings, storage: None)
    assert main([*workspace, "push", "--channel", "quiet"]) == 1
    assert "channel quiet is not configured" in capsys.readouterr().err


def test_the_bundled_entry_point_runs(tmp_path: Path, workspace: list[str]) -> None:
    """The installed `infoguard` script, as cron or an operator would run it."""
    script = shutil.which("infoguard", path=str(Path(sys.executable).parent))
    assert script is not None
    done = subprocess.run(
        [script, *workspace, "push", "--dry-run", "--channel", "console"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "console: would send 0" in done.stdout


def test_a_push_while_another_process_pushes_sends_nothing_and_says_so(
    workspace: list[str],
    sender: RecordingSender,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    subscribe(database(tmp_path), CHANNEL, "a", "b")

    async def held_elsewhere() -> None:
        storage = await SqliteStorage.open(database(tmp_path))
        store = await SqlitePushStore.open(storage)
        assert await store.take_lease("elsewhere:1/77/beef", 600.0)
        await storage.close()

    asyncio.run(held_elsewhere())
    assert main([*workspace, "push", "--channel", CHANNEL]) == 1
    assert "another process is pushing (elsewhere:1/77/beef)" in capsys.readouterr().out
    assert sender.delivered == []
    assert deliveries_recorded(database(tmp_path)) == 0
