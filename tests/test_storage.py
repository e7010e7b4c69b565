"""The SQLite file itself: private to its owner, and deleted rows overwritten."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from bot.storage import SqliteStorage


async def test_the_database_file_is_created_private_and_deletes_securely(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # a usual umask would leave a new file world-readable
    try:
        path = tmp_path / "new" / "infoguard.sqlite3"
        storage = await SqliteStorage.open(path)
        try:
            await storage.subscribe("wechat", "oSecretOpenid")
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
            for side in ("-wal", "-shm"):
                side_file = path.with_name(path.name + side)
                if side_file.exists():
                    assert stat.S_IMODE(side_file.stat().st_mode) & 0o077 == 0
            rows = await storage.db.execute_fetchall("PRAGMA secure_delete")
            assert next(iter(rows))[0] == 1
        finally:
            await storage.close()
    finally:
        os.umask(old_umask)


async def test_an_existing_world_readable_file_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    path.touch(mode=0o644)
    path.chmod(0o644)
    storage = await SqliteStorage.open(path)
    await storage.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
