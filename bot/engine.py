"""The conversation engine: one incoming message in, typed replies out, for every channel.

It guards personal data, keeps per-user session state through `Storage`, routes button
payloads, runs the report guidance, and answers from the knowledge base through the matcher.
It never talks to a platform and never logs or stores what the user typed.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot import replies as payloads
from bot.choices import chosen_payload, no_such_choice
from bot.content import Content
from bot.matching import Match, Matcher
from bot.matching.batching import BatchedMatcher
from bot.matching.cases import CaseFinder
from bot.models import Button, IncomingMessage, Outcome, Reply
from bot.pii import find_personal_data, quoted_from_someone_else, redact, strip_placeholders
from bot.red_flags import RedFlags
from bot.replies import ReplyBuilder
from bot.report import FLOW, FlowStep, ReportGuide
from bot.schema import Entry
from bot.smalltalk import SmallTalkReplies
from bot.storage import Storage

_LOGGER = logging.getLogger(__name__)
CASE_PREFIX = "case:"
"""How an outcome names a case: "case:<id>"."""
CASE_ENTRY = "case_"
"""How the matcher knows a case: a pseudo-entry "case_<id>" trained on its title and names."""

SURE = 0.8
"""A matcher's answer this likely stands against a guess by words: beside small talk, a few
words ask a question of their own only when the matcher is this sure of them ("谢谢，验证码呢"
is 0.98 verification_code; "谢谢你帮了大忙" is 0.61 about), and a case named by its words
overrides only a less likely answer ("以后有新的案例能不能推送给我" is 0.99 subscribe)."""


def _no_url(case_id: str) -> str | None:
    return None


class Engine:
    """`await engine.handle(message)` returns the replies; `respond` adds what was understood."""

    def __init__(
        self,
        content: Content,
        storage: Storage,
        *,
        case_url: Callable[[str], str | None] = _no_url,
        matcher: Matcher | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        """`matcher` defaults to one trained on `content`, its model cached in `cache_dir`
        (default: `bot.config.default_cache_dir()`)."""
        self.content = content
        self.storage = storage
        self.matcher = matcher or Matcher(
            self._matchable_entries(content),
            content.lexicon,
            cache_dir=cache_dir,
        )
        self.build = ReplyBuilder(content, case_url)
        self.guide = ReportGuide(content)
        self.red_flags = RedFlags(content.red_flags)
        self.smalltalk = SmallTalkReplies(
            content.smalltalk, content.lexicon.greetings, self.matcher.prepare.normalize
        )
        self._batched = BatchedMatcher(self.matcher)
        self.case_finder = self.case_finder_for(content, self.matcher.prepare.normalize)

    @staticmethod
    def _matchable_entries(content: Content) -> list[Entry]:
        # A question about a specific case (人脸识别第一案是什么) finds it by its title.
        case_entries = [
            Entry.model_construct(
                id=CASE_ENTRY + case.id,
                title=case.title,
                questions=[case.title, case.summary, *case.aliases, *case.questions],
                keywords=[],
                priority=1,
                intent=None,
            )
            for case in content.cases.values()
        ]
        return [*content.entries.values(), *case_entries]

    @staticmethod
    def case_finder_for(content: Content, normalize: Callable[[str], str]) -> CaseFinder:
        """Finds a case by the words of its article that no other case and few questions use."""
        cases = content.cases.values()
        return CaseFinder(
            names={c.id: [c.title, *c.aliases] for c in cases},
            articles={c.id: [c.summary, c.facts, c.outcome, c.court, *c.tags] for c in cases},
            background=[q for e in content.entries.values() for q in [*e.questions, *e.keywords]],
            normalize=normalize,
            stop_chars=content.lexicon.stop_chars,
        )

    async def handle(self, message: IncomingMessage) -> list[Reply]:
        return (await self.respond(message)).replies

    async def respond(self, message: IncomingMessage) -> Outcome:
        """Answer one message; personal data in it is never echoed, logged or stored."""
        findings = find_personal_data(message.text)
        text = redact(message.text, findings).strip()
        stored = await self.storage.get_session(message.channel, message.user_id)
        session = stored or {}
        outcome = await self._route(message, text, session)
        if findings:
            # "13812345678给我打电话" quotes the scammer: "don't send your number" would not fit.
            other = quoted_from_someone_else(message.text, findings)
            texts = self.content.texts
            warning = Reply(texts.pii_warning_other if other else texts.pii_warning)
            outcome = dataclasses.replace(outcome, replies=[*outcome.replies, warning])
        await self._remember_options(
            message, session, outcome.replies, had_session=stored is not None
        )
        _LOGGER.info(
            "answered channel=%s entry=%s score=%.2f fallback=%s pii=%d",
            message.channel,
            outcome.entry_id,
            outcome.score,
            outcome.fallback,
            len(findings),
        )
        return outcome

    async def _route(self, message: IncomingMessage, text: str, session: dict[str, Any]) -> Outcome:
        payload = self._payload_for(text, session)
        if self.guide.is_emergency(text):
            session.pop("flow", None)
            return Outcome(self.guide.emergency(), "emergency", 1.0)
        if payload:
            return await self._on_payload(message, payload, session)
        # A number that picks no option shown (the report guidance asks its own again).
        unavailable = None if "flow" in session else self._no_such_choice(text, session)
        if unavailable is not None:
            return Outcome([unavailable], "no_such_choice", 1.0)
        if "flow" in session:
            step = self.guide.step(session["flow"], text)
            if not step.passthrough:
                return self._after_flow_step(step, session)
            answer = await self._answer(message, text, session)
            return dataclasses.replace(answer, replies=[*answer.replies, *step.replies])
        return await self._answer(message, text, session)

    @staticmethod
    def _payload_for(text: str, session: dict[str, Any]) -> str | None:
        if text.startswith("#"):
            return text
        return chosen_payload(text, session)

    def _no_such_choice(self, text: str, session: dict[str, Any]) -> Reply | None:
        return no_such_choice(text, session, self.content.texts.no_such_choice, self.content.menu)

    async def _on_payload(
        self, message: IncomingMessage, payload: str, session: dict[str, Any]
    ) -> Outcome:
        kind, _, arg = payload.partition(":")
        kind += ":" if arg else ""
        if kind == payloads.ENTRY and arg in self.content.entries:
            return await self._entry_outcome(message, self.content.entries[arg], 1.0, (), session)
        if kind == payloads.CASE and arg in self.content.cases:
            return Outcome([self.build.case_reply(self.content.cases[arg])], CASE_PREFIX + arg, 1.0)
        if kind == payloads.CASES_PAGE and arg.isdigit():
            return Outcome([self.build.case_list(int(arg))], "list_cases", 1.0)
        if kind in (payloads.REPORT, payloads.REPORT.rstrip(":")):
            return self._after_flow_step(self.guide.start(arg or None, ""), session)
        if payload == payloads.SUBSCRIBE:
            return await self._subscribe(message)
        if payload == payloads.UNSUBSCRIBE:
            return await self._unsubscribe(message)
        if "flow" in session or payload.startswith(FLOW):
            # A flow button after the flow expired gets "this has ended" and a restart button.
            step = self.guide.step(session.get("flow"), payload)
            return self._after_flow_step(step, session)
        return self._fallback(0.0)

    def _after_flow_step(self, step: FlowStep, session: dict[str, Any]) -> Outcome:
        if step.state is None:
            session.pop("flow", None)
        else:
            session["flow"] = step.state
        return Outcome(step.replies, "report", 1.0)

    async def _answer(
        self, message: IncomingMessage, text: str, session: dict[str, Any]
    ) -> Outcome:
        chatted = await self._small_talk(text)
        if chatted is not None:
            return chatted
        match = await self._batched.match(strip_placeholders(text))
        kind = match.decision.kind if match.decision is not None else "decline"
        if kind == "urgent":
            return Outcome(self.guide.emergency(), "emergency", match.score)
        case_id = self._case_of(match.entry_id)
        if not self._urgent(match.entry_id) and (case_id or match.score < SURE):
            # A question that names a case (193号指导案例, 柯某案) by what is its own alone:
            # surer than a model that is unsure, or that picked a case among a dozen alike.
            case_id = self.case_finder.find(text) or case_id
        if case_id:
            case = self.content.cases[case_id]
            return Outcome([self.build.case_reply(case)], CASE_PREFIX + case_id, match.score)
        if match.entry_id is None and not self.matcher.content_of(text):
            return Outcome([self._welcome()], "greeting", 1.0)
        # A pasted scam SMS is rarely worded like any question: declined, or taken for an
        # everyday topic (12381's warning for spam), it still gets the scam check.
        checked = None
        if self._ordinary(match.entry_id):
            checked = self.red_flags.rescue(text, declined=match.entry_id is None)
        if checked in self.content.entries:
            entry = self.content.entries[checked]
            return await self._entry_outcome(message, entry, match.score, (), session, text)
        if match.entry_id is None:
            return self._clarify(match) if kind == "clarify" else self._fallback(match.score)
        entry = self.content.entries[match.entry_id]
        also = tuple(e for e in match.also if e in self.content.entries)
        return await self._entry_outcome(message, entry, match.score, also, session, text=text)

    def _urgent(self, entry_id: str | None) -> bool:
        entry = self.content.entries.get(entry_id or "")
        return entry is not None and entry.priority > 1

    async def _small_talk(self, text: str) -> Outcome | None:
        """The reply to small talk (the welcome to a greeting), or None: a question."""
        chat = self.smalltalk.find(text)
        if chat is None:
            return None
        if chat.rest:
            # "谢谢你帮了大忙": small talk, unless the words beside it ask something.
            aside = await self._batched.match(chat.rest)
            kind = aside.decision.kind if aside.decision is not None else "decline"
            if kind == "urgent" or (aside.entry_id is not None and aside.score >= SURE):
                return None
        if chat.reply is None:
            return Outcome([self._welcome()], "greeting", 1.0)
        return Outcome([Reply(chat.reply)], "smalltalk", 1.0)

    def _ordinary(self, entry_id: str | None) -> bool:
        """No answer, or an everyday topic: not urgent, not a fraud type, not the check."""
        if entry_id is None:
            return True
        entry = self.content.entries.get(entry_id)
        table = self.content.red_flags
        special = {table.check_entry, *table.fraud_entries} if table is not None else set()
        return entry is not None and entry.priority == 1 and entry_id not in special

    def _case_of(self, entry_id: str | None) -> str | None:
        """The case a matched pseudo-entry stands for, if it is one."""
        if entry_id is None or not entry_id.startswith(CASE_ENTRY):
            return None
        case_id = entry_id.removeprefix(CASE_ENTRY)
        return case_id if case_id in self.content.cases else None

    def _clarify(self, match: Match) -> Outcome:
        """ "您是想问：" with the likeliest entries (or cases) as buttons; not an answer."""
        assert match.decision is not None
        buttons = []
        for option in match.decision.options:
            case_id = self._case_of(option)
            if case_id:
                case = self.content.cases[case_id]
                buttons.append(Button(case.title, payloads.CASE + case_id))
            elif option in self.content.entries:
                buttons.append(Button(self.content.entries[option].title, payloads.ENTRY + option))
        if not buttons:
            return self._fallback(match.score)
        reply = Reply(self.content.texts.did_you_mean, tuple(buttons))
        return Outcome([reply], None, match.score, True, "clarify")

    async def _entry_outcome(
        self,
        message: IncomingMessage,
        entry: Entry,
        score: float,
        also: tuple[str, ...],
        session: dict[str, Any],
        text: str = "",
    ) -> Outcome:
        if entry.intent == "subscribe":
            return await self._subscribe(message)
        if entry.intent == "unsubscribe":
            return await self._unsubscribe(message)
        if entry.intent == "report":
            # The first message may already say what happened: the guide skips those questions.
            step = self.guide.start(None, text)
            return self._after_flow_step(step, session)
        if entry.intent == "greeting":
            return Outcome([self._welcome()], entry.id, score)
        # Its report button carries the choices the message made clear (option ids, no text).
        reply = self.guide.carry_choices(self.build.answer(entry, also=also), text)
        # "这是不是诈骗" (or a fraud type with several signs): the red flags the message shows.
        reply = self.red_flags.annotate(entry.id, reply, text)
        if entry.intent == "list_cases":
            cases = self.build.case_list(1)
            reply = Reply(f"{reply.text}\n\n{cases.text}", cases.buttons)
        return Outcome([reply], entry.id, score)

    async def welcome(self, message: IncomingMessage) -> list[Reply]:
        """The greeting with the main menu, for a channel's own start event (a WeChat follow);
        the menu's numbers are remembered like any other buttons. `message.text` is ignored."""
        session = await self.storage.get_session(message.channel, message.user_id) or {}
        replies = [self._welcome()]
        await self._remember_options(message, session, replies)
        return replies

    def _welcome(self) -> Reply:
        texts = self.content.texts
        return Reply(texts.welcome, self.content.menu)

    def _fallback(self, score: float) -> Outcome:
        """Decline honestly, saying what the bot can do, with the main menu."""
        texts = self.content.texts
        return Outcome([Reply(texts.fallback, self.content.menu)], None, score, True, "decline")

    async def _subscribe(self, message: IncomingMessage) -> Outcome:
        new = await self.storage.subscribe(message.channel, message.user_id)
        texts = self.content.texts
        text = texts.subscribed if new else texts.already_subscribed
        return Outcome([Reply(text, (Button("退订", payloads.UNSUBSCRIBE),))], "subscribe", 1.0)

    async def _unsubscribe(self, message: IncomingMessage) -> Outcome:
        was = await self.storage.forget_user(message.channel, message.user_id)
        texts = self.content.texts
        return Outcome(
            [Reply(texts.unsubscribed if was else texts.not_subscribed)], "unsubscribe", 1.0
        )

    async def _remember_options(
        self,
        message: IncomingMessage,
        session: dict[str, Any],
        replies: list[Reply],
        *,
        had_session: bool = True,
    ) -> None:
        """Keep the payloads of the last buttons shown, so "2" means the second one."""
        options = [b.payload for r in replies for b in r.buttons]
        if options:
            session["options"] = options
            session["labels"] = [b.label for r in replies for b in r.buttons]  # to show again
        elif "options" in session and "flow" not in session:
            session.pop("options")
            session.pop("labels", None)
        if session:
            await self.storage.put_session(message.channel, message.user_id, session)
        elif had_session:
            await self.storage.delete_session(message.channel, message.user_id)
