"""Shared fixtures: a small content folder built from the real shared files plus tiny entries."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from bot.content import Content, load_content
from bot.engine import Engine
from bot.matching import Matcher
from bot.storage import SqliteStorage

ROOT = Path(__file__).resolve().parent.parent
MINI = Path(__file__).resolve().parent / "data" / "mini"
MINI_EXEMPLARS = 40


@pytest.fixture(autouse=True, scope="session")
def model_cache() -> Path:
    """One folder of trained matchers for the whole run and the commands it starts, kept
    between runs on this checkout (`scripts/test` points `kb eval` at it too). The bundled
    knowledge base is trained here, once, before any test or subprocess needs it."""
    folder = Path(
        os.environ.setdefault("INFOGUARD_CACHE_DIR", str(ROOT / ".cache" / "test-models"))
    )
    content = load_content(ROOT / "knowledge", ROOT / "cases_explained")
    Matcher(Engine._matchable_entries(content), content.lexicon, cache_dir=folder)
    return folder


@pytest.fixture
def mini_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the mini knowledge base (real _bot.yaml and _lexicon.yaml) and its cases."""
    knowledge = tmp_path / "knowledge"
    cases = tmp_path / "cases"
    shutil.copytree(MINI / "knowledge", knowledge)
    shutil.copytree(MINI / "cases", cases)
    for name in ("_bot.yaml", "_lexicon.yaml", "bot.yaml"):
        shutil.copy(ROOT / "knowledge" / name, knowledge / name)
    # Three tiny entries next to hundreds of out-of-scope exemplars would be a knowledge base
    # that declines everything: keep the exemplars in proportion.
    lexicon = knowledge / "_lexicon.yaml"
    raw = yaml.safe_load(lexicon.read_text(encoding="utf-8"))
    raw["out_of_scope"] = raw["out_of_scope"][:MINI_EXEMPLARS]
    lexicon.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return knowledge, cases


@pytest.fixture
def mini_content(mini_dirs: tuple[Path, Path]) -> Content:
    return load_content(*mini_dirs)


@pytest.fixture
async def mini_engine(mini_content: Content, tmp_path: Path) -> AsyncIterator[Engine]:
    storage = await SqliteStorage.open(tmp_path / "engine.sqlite3")
    yield Engine(mini_content, storage, case_url=lambda c: f"https://bot.example/cases/{c}")
    await storage.close()
