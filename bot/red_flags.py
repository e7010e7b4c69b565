"""The "is this a scam?" check: which red flags a message shows, and what the bot says about them.

It reads the red-flag table of knowledge/_red_flags.yaml (from ../shared/research/scams.md §2)
and is pure: text in, flags and wording out. Its verdict rests on combinations, never on one
word (a real bank SMS mentions 验证码 too), and it says honestly that it cannot be certain.
What it writes comes only from the table: it never repeats a number or link from the message.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import Enum

from bot.models import Reply
from bot.schema import GenuineSignal, RedFlag, RedFlagFile
from bot.text import to_simplified

_SPACES = re.compile(r"\s+")
_WEB_ADDRESS = re.compile(r"https?://|www\.|[a-z0-9-]+\.[a-z]{2,6}(?![a-z0-9])")
STRONG_SCORE = 2
MEDIUM_SCORE = 1
LIKELY_MIN_FLAGS = 2
LIKELY_MIN_SCORE = 3
"""Two flags with one strong, or three medium ones: "高度疑似诈骗" (scams.md §2.1)."""
MAX_LISTED = 4
"""The reply names at most this many flags, strongest first: one phone screen."""


class Level(Enum):
    NONE = "none"
    SINGLE = "single"
    """One sign, or two weak ones: worth a closer look, not a verdict."""
    LIKELY = "likely"


@dataclass(frozen=True, slots=True)
class Check:
    """The flags a message shows, strongest first, and the genuine warning signs in it."""

    flags: tuple[RedFlag, ...]
    genuine: tuple[GenuineSignal, ...] = ()

    @property
    def score(self) -> int:
        return sum(STRONG_SCORE if f.weight == "strong" else MEDIUM_SCORE for f in self.flags)

    @property
    def level(self) -> Level:
        if len(self.flags) >= LIKELY_MIN_FLAGS and self.score >= LIKELY_MIN_SCORE:
            return Level.LIKELY
        return Level.SINGLE if self.flags else Level.NONE


def _normalise(text: str) -> str:
    # Width, case, traditional characters and spaces, as people type them; punctuation stays,
    # because a pattern such as "验证码.{0,12}发给" spans it.
    return _SPACES.sub("", to_simplified(unicodedata.normalize("NFKC", text).lower()))


def _one_pattern(flag: RedFlag) -> re.Pattern[str]:
    parts = [
        *(re.escape(_normalise(p)) for p in flag.phrases),
        *(f"(?:{p})" for p in flag.patterns),
    ]
    return re.compile("|".join(parts) or "(?!)")


class RedFlags:
    """Finds red flags in a message and adds them to the answer of the check or a fraud type."""

    def __init__(self, table: RedFlagFile | None) -> None:
        self.table = table
        # One pattern per flag (its phrases and patterns together): every message is checked.
        self._signs = [(flag, _one_pattern(flag)) for flag in (table.flags if table else [])]
        self._genuine = [
            (g, [_normalise(p) for p in g.phrases]) for g in (table.genuine if table else [])
        ]

    def check(self, text: str) -> Check:
        if self.table is None:
            return Check(())
        message = _normalise(text)
        found = [flag for flag, sign in self._signs if sign.search(message)]
        found.sort(key=lambda f: f.weight != "strong")  # stable: table order within a weight
        genuine = tuple(g for g, phrases in self._genuine if any(p in message for p in phrases))
        return Check(tuple(found), genuine)

    def applies(self, entry_id: str, check: Check) -> bool:
        """The check's own entry always lists what it found; a fraud type only on a combination."""
        if self.table is None:
            return False
        if entry_id == self.table.check_entry:
            return True
        return entry_id in self.table.fraud_entries and check.level is Level.LIKELY

    def rescue(self, text: str, *, declined: bool = True) -> str | None:
        """The check's entry for a message that shows a combination of red flags, or, when the
        matcher declined it, a genuine 12381 warning or a red flag beside a web address: a
        pasted SMS is rarely worded like any question, yet deserves the check. (A message the
        matcher did answer that merely names a genuine line, 96110是啥电话, keeps its answer.)"""
        if self.table is None:
            return None
        check = self.check(text)
        if check.level is Level.LIKELY:
            return self.table.check_entry
        if declined and (check.genuine or (check.flags and _WEB_ADDRESS.search(_normalise(text)))):
            # A declined message that carries a web address and a sign is a pasted one.
            return self.table.check_entry
        return None

    def describe(self, check: Check, *, verify: bool = True) -> str:
        """The verdict in the bot's words: the flags found, how sure it is, how to verify."""
        assert self.table is not None
        texts = self.table.texts
        if check.level is Level.NONE:
            lines = [texts.none]
        else:
            heading = texts.likely if check.level is Level.LIKELY else texts.single
            verdict = texts.likely_verdict if check.level is Level.LIKELY else texts.single_verdict
            shown = check.flags[:MAX_LISTED]
            items = [f"{i}. {f.name}：{f.explain}" for i, f in enumerate(shown, 1)]
            lines = [heading, *items, "", verdict]
        for g in check.genuine:
            lines += ["", g.explain]
        if verify:
            lines += ["", texts.verify]
        return "\n".join(lines)

    def annotate(self, entry_id: str, reply: Reply, text: str) -> Reply:
        """The reply, led by the red flags the message shows when they matter for this entry.

        For the check's own entry with nothing pasted (just "这是不是诈骗"), the answer stands
        alone: it already says how to verify.
        """
        check = self.check(text)
        if not self.applies(entry_id, check):
            return reply
        assert self.table is not None
        if entry_id == self.table.check_entry and not check.flags and not check.genuine:
            return reply
        if entry_id == self.table.check_entry:
            # The check's verdict replaces its generic answer: the same advice, made specific.
            return Reply(self.describe(check), reply.buttons, reply.card)
        # A fraud type's answer already says what to do: the flags lead it, briefly.
        flags = self.describe(check, verify=False)
        return Reply(f"{flags}\n\n{reply.text}", reply.buttons, reply.card)
