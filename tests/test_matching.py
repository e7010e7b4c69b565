"""The trained matcher through its public doors: the model cache, urgency, small talk, the
clarify, and `kb eval` (on the small knowledge base, which trains in seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bot.cli import main
from bot.content import load_content
from bot.engine import Engine
from bot.matching import Matcher, Thresholds
from bot.models import IncomingMessage


def build(dirs: tuple[Path, Path], cache: Path) -> Matcher:
    content = load_content(*dirs)
    return Matcher(Engine._matchable_entries(content), content.lexicon, cache_dir=cache)


def test_an_unchanged_knowledge_base_loads_its_model_and_an_edit_retrains(
    mini_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    first = build(mini_dirs, cache)
    models = sorted(cache.glob("model-*.npz"))
    assert len(models) == 1
    stamp = models[0].stat().st_mtime_ns
    again = build(mini_dirs, cache)
    assert again.model.meta["fingerprint"] == first.model.meta["fingerprint"]
    assert models[0].stat().st_mtime_ns == stamp  # loaded, not trained again
    path = mini_dirs[0] / "mini.yaml"
    entries = yaml.safe_load(path.read_text(encoding="utf-8"))
    entries["entries"][1]["questions"].append("有人打电话找我要短信里的数字")
    path.write_text(yaml.safe_dump(entries, allow_unicode=True), encoding="utf-8")
    edited = build(mini_dirs, cache)
    assert edited.model.meta["fingerprint"] != first.model.meta["fingerprint"]
    assert len(list(cache.glob("model-*.npz"))) == 2
    assert "有人打电话找我要短信里的数字" in (
        edited.model.held_out.texts if edited.model.held_out else ()
    )


def test_thresholds_come_from_cross_validation(mini_engine: Engine) -> None:
    matcher = mini_engine.matcher
    assert matcher.model.held_out is not None
    assert len(matcher.model.held_out.labels) == len(matcher.training[1])
    t = matcher.thresholds
    assert 0 < t.clarify <= t.answer < 1


async def test_money_lost_is_never_declined(
    mini_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # However unsure the model, a stated loss gets the urgent answer, 110 first.
    policy = mini_engine.matcher.policy
    monkeypatch.setattr(policy, "thresholds", Thresholds(answer=0.999, clarify=0.998))
    outcome = await mini_engine.respond(
        IncomingMessage("console", "u", "刚刚给一个陌生人转了5000块，现在联系不上了")
    )
    assert not outcome.fallback
    assert "110" in outcome.replies[0].text


@pytest.mark.parametrize("message", ["谢谢", "好的谢谢啦", "再见！", "OK", "謝謝你", "多谢晒"])
async def test_small_talk_gets_a_short_warm_reply(mini_engine: Engine, message: str) -> None:
    outcome = await mini_engine.respond(IncomingMessage("console", "u", message))
    assert outcome.entry_id == "smalltalk"
    assert not outcome.fallback
    assert "回答不了" not in outcome.replies[0].text


@pytest.mark.parametrize("message", ["hello", "Hi!", "早上好"])
async def test_a_greeting_gets_the_welcome(mini_engine: Engine, message: str) -> None:
    outcome = await mini_engine.respond(IncomingMessage("console", "u", message))
    assert outcome.entry_id == "greeting"
    assert outcome.replies[0].buttons  # the main menu


async def test_thanks_beside_a_few_words_is_still_thanks(mini_engine: Engine) -> None:
    outcome = await mini_engine.respond(IncomingMessage("console", "u", "谢谢你帮了大忙"))
    assert outcome.entry_id == "smalltalk"


async def test_a_polite_question_is_not_small_talk(mini_engine: Engine) -> None:
    outcome = await mini_engine.respond(IncomingMessage("console", "u", "好的，那验证码能给别人吗"))
    assert outcome.entry_id == "verification_code"
    outcome = await mini_engine.respond(IncomingMessage("console", "u2", "谢谢，验证码呢"))
    assert outcome.entry_id == "verification_code"


def test_kb_eval_reports_and_fails_under_its_budget(
    mini_dirs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    knowledge, cases = mini_dirs
    base = ["--knowledge", str(knowledge), "--cases", str(cases), "kb", "eval"]
    assert main([*base, "--min-right", "0", "--max-wrong", "1", "--min-declined", "0"]) == 0
    shown = capsys.readouterr().out
    assert "thresholds (chosen by 5-fold cross-validation" in shown
    assert "weakest entries" in shown and "most confused" in shown
    assert main([*base, "--min-right", "1.01"]) == 1
    assert "under budget" in capsys.readouterr().err


def test_kb_train_trains_once_and_then_finds_its_model(
    mini_dirs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    knowledge, cases = mini_dirs
    cache = tmp_path / "cache"
    monkeypatch.setenv("INFOGUARD_CACHE_DIR", str(cache))
    train = ["--knowledge", str(knowledge), "--cases", str(cases), "kb", "train"]
    assert main(train) == 0
    models = list(cache.glob("model-*.npz"))
    assert len(models) == 1
    stamp = models[0].stat().st_mtime_ns
    assert main(train) == 0
    assert models[0].stat().st_mtime_ns == stamp
