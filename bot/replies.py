"""Builds the bot's replies from content: entry answers with their legal basis, case cards,
case lists, and the plain-text rendering of buttons for channels that have none."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bot.content import Content, legal_basis
from bot.models import Button, CaseCard, Reply
from bot.schema import Case, Entry

CASES_PER_PAGE = 5
MAX_BUTTONS = 6

# Payloads that buttons carry; typed by users only if they press the button (or answer "1").
ENTRY = "#entry:"
CASE = "#case:"
CASES_PAGE = "#cases:"
REPORT = "#report:"
SUBSCRIBE = "#subscribe"
UNSUBSCRIBE = "#unsubscribe"


class ReplyBuilder:
    """Turns entries and cases into `Reply` values; knows nothing about any platform."""

    def __init__(self, content: Content, case_url: Callable[[str], str | None]) -> None:
        self.content = content
        self.case_url = case_url

    def citation(self, entry: Entry) -> str:
        line = legal_basis(entry)
        return f"\n\n{line}" if line else ""

    def answer(self, entry: Entry, *, also: Sequence[str] = ()) -> Reply:
        """An entry's answer, its legal basis, and buttons for what to read or do next."""
        texts = self.content.texts
        buttons: list[Button] = []
        if entry.report:
            buttons.append(Button(texts.report_offer, REPORT + entry.report))
        for entry_id in [*also, *entry.related]:
            other = self.content.entries.get(entry_id)
            if other and other.id != entry.id and not other.intent:
                buttons.append(Button(other.title, ENTRY + other.id))
        for case_id in entry.cases:
            case = self.content.cases[case_id]
            buttons.append(Button(f"案例：{case.title}", CASE + case.id))
        buttons = list(dict.fromkeys(buttons))[:MAX_BUTTONS]
        text = entry.answer.strip() + self.citation(entry)
        if also:
            titles = "、".join(
                self.content.entries[e].title for e in also if e in self.content.entries
            )
            text += f"\n\n{texts.also_mentioned}{titles}"
        return Reply(text, tuple(buttons))

    def case_card(self, case: Case) -> CaseCard:
        return CaseCard(case.id, case.title, case.summary.strip(), self.case_url(case.id))

    def case_reply(self, case: Case) -> Reply:
        """A case in chat: the summary, the legal point and lesson, and a card to the full page."""
        label = "（地方案例）" if case.local else ""
        articles = "；".join(dict.fromkeys(a.cite() for a in case.articles))
        sources = "；".join(s.name for s in case.sources)
        text = (
            f"【以案释法】{case.title}{label}\n"
            f"{case.court}｜{case.date}{case.date_means or ''}｜{case.kind}\n\n"
            f"{case.summary.strip()}\n\n法律要点：{case.legal_point.strip()}\n\n"
            f"提醒您：{case.lesson.strip()}\n\n适用法条：{articles}\n来源：{sources}"
        )
        buttons = tuple(
            Button(self.content.entries[e].title, ENTRY + e)
            for e in case.related[:3]
            if e in self.content.entries
        )
        return Reply(text, buttons, self.case_card(case))

    def case_list(self, page: int = 1, *, case_ids: Sequence[str] | None = None) -> Reply:
        """One page of the case list, newest first, with buttons to open each case."""
        ids = list(case_ids) if case_ids is not None else self.cases_newest_first()
        pages = max(1, -(-len(ids) // CASES_PER_PAGE))
        page = min(max(page, 1), pages)
        shown = ids[(page - 1) * CASES_PER_PAGE : page * CASES_PER_PAGE]
        lines = [f"{self.content.texts.cases_heading}（第{page}/{pages}页）"]
        buttons = [Button(self.content.cases[c].title, CASE + c) for c in shown]
        if page < pages:
            buttons.append(Button(self.content.texts.more_cases, f"{CASES_PAGE}{page + 1}"))
        return Reply("\n".join(lines), tuple(buttons))

    def cases_newest_first(self) -> list[str]:
        return sorted(self.content.cases, key=lambda c: self.content.cases[c].date, reverse=True)


def render_plain(replies: Sequence[Reply]) -> list[str]:
    """Replies as plain texts: buttons become numbered lines the user can answer with "1".

    Numbers run on across the replies, matching the order in which the engine remembers them.
    """
    texts: list[str] = []
    number = 0
    for reply in replies:
        parts = [reply.text]
        if reply.card and reply.card.url:
            parts.append(f"阅读全文：{reply.card.url}")
        if reply.buttons:
            lines = [f"{number + i}. {b.label}" for i, b in enumerate(reply.buttons, 1)]
            number += len(reply.buttons)
            parts.append("\n".join(lines) + "\n（回复数字即可选择）")
        texts.append("\n\n".join(parts))
    return texts
