"""Small talk: 谢谢, 好的, 再见 get a short warm reply, and hello the welcome, not a refusal.

A message is small talk when nothing is left of it once its small-talk phrases, particles and
pronouns are taken away ("好的谢谢啦", "謝謝你" are; "谢谢，那验证码呢" is not), so a real
question that starts politely still reaches the matcher. A message that only opens or closes
with small talk beside a few words ("谢谢你帮了大忙") is small talk with a `rest`: the engine
replies to it as small talk only when the matcher finds no question in those words.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from bot.schema import SmallTalk
from bot.text import display_clean, to_simplified

_FILLER = re.compile("[啦呀啊哈哦噢喔了呢吧嘛哒滴的你您我们晒咗啲嘅喇咯嘞]+")
"""Particles (Cantonese ones too: 多谢晒) and pronouns: no question without other words."""
LOOSE_REST = 6
"""At most this many characters besides the small talk: more is a message of its own."""


@dataclass(frozen=True, slots=True)
class Chat:
    """A message found to be small talk."""

    reply: str | None
    """The small-talk reply, or None for a greeting (the welcome answers it)."""
    rest: str
    """The words beside the small talk: empty when the message is nothing else."""


class SmallTalkReplies:
    def __init__(
        self,
        table: Sequence[SmallTalk],
        greetings: Iterable[str] = (),
        normalize: Callable[[str], str] | None = None,
    ) -> None:
        """`normalize`: the matcher's normalisation (唔该 → 谢谢); by default width, case,
        punctuation and traditional characters only."""
        self._normalize = normalize or (lambda text: to_simplified(display_clean(text)))
        self._reply_of: dict[str, str | None] = {}
        for item in table:
            for phrase in item.phrases:
                self._reply_of.setdefault(self._normalize(phrase), item.reply)
        for greeting in greetings:
            self._reply_of.setdefault(self._normalize(greeting), None)
        keys = sorted(filter(None, self._reply_of), key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, keys))) if keys else None

    def find(self, text: str) -> Chat | None:
        """`text` as small talk: wholly (no `rest`), or loosely (it opens or closes with small
        talk beside a few other words, for the matcher to look at); else None."""
        if self._pattern is None:
            return None
        clean = self._normalize(text)
        found = self._pattern.findall(clean)
        if not found:
            return None
        rest = _FILLER.sub("", self._pattern.sub("", clean))
        reply = self._reply_of[found[0]]
        if not rest:
            return Chat(reply, "")
        if len(rest) > LOOSE_REST or not (clean.startswith(found[0]) or clean.endswith(found[-1])):
            return None
        return Chat(reply, rest)
