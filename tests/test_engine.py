"""Engine transcripts: greeting, answers with citations, numbered choices, cases, subscriptions."""

from __future__ import annotations

import pytest

from bot.engine import Engine
from bot.matching import Thresholds
from bot.models import IncomingMessage, Reply
from bot.replies import render_plain


async def say(engine: Engine, text: str, user: str = "u1") -> list[Reply]:
    return await engine.handle(IncomingMessage("console", user, text))


def shown(replies: list[Reply]) -> str:
    return "\n".join(render_plain(replies))


async def test_greeting_shows_the_menu(mini_engine: Engine) -> None:
    replies = await say(mini_engine, "你好！")
    assert "个人信息保护助手" in replies[0].text
    assert [b.payload for b in replies[0].buttons][:2] == ["#report", "#cases:1"]


async def test_answer_cites_the_law_and_offers_related(mini_engine: Engine) -> None:
    replies = await say(mini_engine, "客服让我报一下眼证码，能给吗？")
    text = shown(replies)
    assert "任何人问都不要给" in text
    assert "法律依据：《个人信息保护法》第四条" in text
    assert any(b.payload == "#case:mini_case" for b in replies[0].buttons)


async def test_numbered_choice_opens_the_case(mini_engine: Engine) -> None:
    replies = await say(mini_engine, "验证码")
    number = [b.payload for b in replies[0].buttons].index("#case:mini_case") + 1
    opened = await say(mini_engine, str(number))
    assert opened[0].card is not None
    assert opened[0].card.url == "https://bot.example/cases/mini_case"
    assert "验证码属于公民个人信息" in opened[0].text


async def test_numbers_mean_nothing_without_options(mini_engine: Engine) -> None:
    replies = await say(mini_engine, "3", user="fresh")
    # Not free text (it found the 3.15 case): there is no such option; here is the menu.
    assert replies[0].text == mini_engine.content.texts.no_such_choice
    assert replies[0].buttons == mini_engine.content.menu


async def test_out_of_scope_is_declined_with_topics(mini_engine: Engine) -> None:
    engine_outcome = await mini_engine.respond(IncomingMessage("console", "u", "明天股票会涨吗"))
    assert engine_outcome.fallback
    assert engine_outcome.entry_id is None
    assert len(engine_outcome.replies[0].buttons) >= 2


async def test_case_list_and_paging(mini_engine: Engine) -> None:
    replies = await say(mini_engine, "有没有典型案例")
    assert any(b.payload == "#case:mini_case" for b in replies[0].buttons)
    assert "以案释法" in replies[0].text


async def test_subscribe_and_unsubscribe(mini_engine: Engine) -> None:
    storage = mini_engine.storage
    assert "订阅成功" in shown(await say(mini_engine, "订阅"))
    assert await storage.is_subscribed("console", "u1")
    assert "已经订阅" in shown(await say(mini_engine, "我要订阅案例推送"))
    assert "已为您退订" in shown(await say(mini_engine, "退订"))
    assert not await storage.is_subscribed("console", "u1")
    assert "没有订阅" in shown(await say(mini_engine, "取消订阅"))


async def test_urgent_need_wins_in_a_long_message(mini_engine: Engine) -> None:
    outcome = await mini_engine.respond(
        IncomingMessage(
            "console",
            "u1",
            "我平时挺注意保护个人信息的，可今天还是被骗了，刚刚被骗转账了两万块，钱转给骗子了，怎么办",
        )
    )
    assert outcome.entry_id == "fraud_now"
    assert "110" in outcome.replies[0].text


async def test_sessions_are_per_user_and_channel(mini_engine: Engine) -> None:
    await say(mini_engine, "验证码", user="a")
    other = await mini_engine.handle(IncomingMessage("telegram", "a", "1"))
    assert other[0].text == mini_engine.content.texts.no_such_choice  # no options there


async def test_an_unsure_match_asks_which_topic_was_meant(
    mini_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Demand more confidence than the message earns: the bot must not answer, but ask with the
    # likeliest topic first instead of refusing.
    policy = mini_engine.matcher.policy
    monkeypatch.setattr(policy, "thresholds", Thresholds(answer=0.999, clarify=0.01))
    outcome = await mini_engine.respond(IncomingMessage("console", "u", "被骗子骗了好多钱"))
    assert outcome.fallback
    assert outcome.decision == "clarify"
    payloads = [b.payload for b in outcome.replies[0].buttons]
    assert payloads[0] == "#entry:fraud_now"
    assert outcome.replies[0].text.startswith("您是想问")


async def test_far_off_topic_gets_the_menu(mini_engine: Engine) -> None:
    outcome = await mini_engine.respond(IncomingMessage("console", "u", "推荐一部好看的电影"))
    assert outcome.fallback
    assert outcome.replies[0].buttons == mini_engine.content.menu


async def test_a_question_about_a_case_opens_the_case(mini_engine: Engine) -> None:
    outcome = await mini_engine.respond(
        IncomingMessage("console", "u", "验证码也是个人信息那个案子是怎么判的")
    )
    assert outcome.entry_id == "case:mini_case"
    assert outcome.replies[0].card is not None
