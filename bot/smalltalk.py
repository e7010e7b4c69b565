"""Small talk: 谢谢, 好的, 再见 get a short warm reply, not a refusal.

A message counts as small talk only when nothing is left of it once its small-talk phrases and
particles are taken away ("好的谢谢啦" is, "谢谢，那验证码呢" is not), so a real question that
starts politely still reaches the matcher.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from bot.schema import SmallTalk
from bot.text import display_clean

_PARTICLES = re.compile("[啦呀啊哈哦噢喔了呢吧嘛哒滴的]+")


class SmallTalkReplies:
    def __init__(self, table: Sequence[SmallTalk]) -> None:
        self._reply_of: dict[str, str] = {}
        for item in table:
            for phrase in item.phrases:
                self._reply_of.setdefault(display_clean(phrase), item.reply)
        keys = sorted(filter(None, self._reply_of), key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, keys))) if keys else None

    def reply_to(self, text: str) -> str | None:
        """The reply when `text` is small talk, else None."""
        if self._pattern is None:
            return None
        clean = display_clean(text)
        found = self._pattern.findall(clean)
        if not found or _PARTICLES.sub("", self._pattern.sub("", clean)):
            return None
        return self._reply_of[found[0]]
