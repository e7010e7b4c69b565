"""The declared shape of every content file: knowledge entries, cases, lexicon, bot wording.

Pydantic models with unknown keys forbidden; `bot.content` turns their errors into
`file: entry id: field: problem` lines.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Identifier = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
ReportScenario = Literal[
    "fraud", "extortion", "leak", "doxxing", "spam", "app", "merchant", "sim_cards", "card_rental"
]
Intent = Literal["greeting", "help", "list_cases", "subscribe", "unsubscribe", "privacy", "report"]
CaseKind = Literal["刑事", "民事", "民事公益诉讼", "行政公益诉讼", "其他"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class LegalSource(Strict):
    """One legal basis: a law (or judicial interpretation) and an article of it."""

    law: Text
    article: Text
    note: Text | None = None

    def cite(self) -> str:
        law = self.law if "《" in self.law else f"《{self.law}》"
        return f"{law}{self.article}"


class Entry(Strict):
    """One knowledge entry: the questions it answers and the answer."""

    id: Identifier
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=24)]
    questions: list[Text] = Field(min_length=3)
    keywords: list[Text] = []
    answer: Text
    sources: list[LegalSource] = []
    related: list[Identifier] = []
    cases: list[Identifier] = []
    priority: int = Field(default=1, ge=1, le=3)
    report: ReportScenario | None = None
    intent: Intent | None = None

    @field_validator("answer")
    @classmethod
    def _plain_text(cls, answer: str) -> str:
        # WeChat shows text as typed: Markdown emphasis would appear as literal asterisks.
        if "**" in answer or "__" in answer:
            raise ValueError("no Markdown emphasis (** or __): WeChat shows it literally")
        return answer


class CaseSource(Strict):
    name: Text
    url: Annotated[str, StringConstraints(pattern=r"^https://")] | None = None


class Case(Strict):
    """One case explained (以案释法) article."""

    id: Identifier
    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40)]
    aliases: list[Text] = []
    """Short names people use for the case (人脸识别第一案, 指导性案例192号): found in chat."""
    questions: list[Text] = []
    """How people ask about the case in chat (杭州卖孩子信息那个案子判了几年): the matcher
    learns the case from these, its title, summary and aliases."""
    kind: CaseKind
    court: Text
    date: Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}(-\d{2})?$")]
    date_means: Literal["判决", "发布", "起诉", "答复"] | None = None
    """What the date is: the judgment, the publication as a typical case, the indictment, the
    reply letter. Shown after the date, so a trial court is never paired with an unlabelled
    publication date."""
    local: bool = False
    summary: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120)]
    facts: Text
    outcome: Text
    legal_point: Text
    articles: list[LegalSource] = Field(min_length=1)
    lesson: Text
    sources: list[CaseSource] = Field(min_length=1)
    tags: list[Text] = []
    related: list[Identifier] = []


class Lexicon(Strict):
    """Normalisation tables and decline exemplars for the matcher (knowledge/_lexicon.yaml)."""

    dialect: dict[Text, str] = {}
    variants: dict[Text, str] = {}
    synonyms: dict[Text, str] = {}
    typos: dict[Text, str] = {}
    stop_phrases: list[Text] = []
    stop_chars: str = ""
    urgent_patterns: list[Text] = []
    greetings: list[Text] = []
    out_of_scope: list[Text] = []

    @field_validator("urgent_patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for p in patterns:
            re.compile(p)
        return patterns

    def replacements(self) -> dict[str, str]:
        return {**self.variants, **self.typos, **self.synonyms, **self.dialect}


class BotTexts(Strict):
    """The bot's own wording (knowledge/_bot.yaml): everything it says that is not an entry."""

    welcome: Text
    fallback: Text
    clarify: Text
    did_you_mean: Text = "您是想问："
    """Heads the buttons offered when a message could mean two or three topics."""
    pii_warning: Text
    pii_warning_other: Text
    """The warning when the numbers are, by the words around them, someone else's (the
    scammer's phone or account): no "don't send your number"."""
    no_such_choice: Text
    """For a number that matches no option shown; the options (or the menu) follow."""
    related_heading: Text
    cases_heading: Text
    also_mentioned: Text
    subscribed: Text
    already_subscribed: Text
    unsubscribed: Text
    not_subscribed: Text
    no_more_cases: Text
    case_footer: Text
    report_offer: Text
    more_cases: Text


class MenuItem(Strict):
    label: Text
    payload: Text


class SmallTalk(Strict):
    """Phrases that are small talk (谢谢, 再见) and the short reply they get."""

    phrases: list[Text] = Field(min_length=1)
    reply: Text


class BotFile(Strict):
    """knowledge/_bot.yaml: the bot's wording, main menu and official-number whitelist."""

    texts: BotTexts
    menu: list[MenuItem]
    official_numbers: list[str]
    """The only phone numbers the bot may print: the whitelisted official channels."""
    smalltalk: list[SmallTalk] = []


class RedFlag(Strict):
    """One red flag of the "is this a scam?" check: the words that show it, and what it means."""

    id: Identifier
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=24)]
    weight: Literal["strong", "medium"]
    phrases: list[Text] = []
    patterns: list[Text] = []
    """Regular expressions, for signs that are a combination (验证码 … 发给我)."""
    explain: Text

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for p in patterns:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression {p!r}: {exc}") from exc
        return patterns

    @model_validator(mode="after")
    def _has_words(self) -> RedFlag:
        if not self.phrases and not self.patterns:
            raise ValueError("a flag needs phrases or patterns")
        return self


class GenuineSignal(Strict):
    """A sign of a genuine police warning (12381 SMS, 96110 call): said so, never flagged."""

    id: Identifier
    phrases: list[Text] = Field(min_length=1)
    explain: Text


class RedFlagTexts(Strict):
    likely: Text
    likely_verdict: Text
    single: Text
    single_verdict: Text
    none: Text
    verify: Text


class RedFlagFile(Strict):
    """knowledge/_red_flags.yaml: the red-flag table and the wording of the check's verdict."""

    check_entry: Identifier
    """The entry whose answer is the check ("这是不是诈骗")."""
    fraud_entries: list[Identifier] = []
    """Entries whose answer also lists the flags when a message shows two or more."""
    texts: RedFlagTexts
    flags: list[RedFlag] = Field(min_length=1)
    genuine: list[GenuineSignal] = []


def explain(err: ErrorDetails) -> str:
    """A validation error in the words an editor of the YAML needs."""
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "missing"
    if "input" in err and err["type"].endswith("_type"):
        return f"{err['msg']} (got {type(err['input']).__name__}: quote it)"
    return err["msg"]
