"""Numbered choices: what counts as the user picking the n-th option shown ("3", "３", "三",
"第三个", "选2"), and the answer when there is no such option.

Channels without buttons show options as numbered lines; the engine remembers their payloads
(and labels) in the session. A number that matches no option must not fall through to the
matcher as free text, where "3" found the 3.15 case and "6" a random one: it gets "there is
no such option" and the options again, or the main menu when none are on offer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from bot.models import Button, Reply
from bot.text import display_clean

MAX_CHOICE = 99
"""Longer numbers are not choices: "110" or "12321" is a question about that number."""

_DIGITS = {c: i for i, c in enumerate("零一二三四五六七八九")} | {"两": 2}
_CHOICE = re.compile(
    r"(?:我?选(?:择)?)?(第)?([0-9]{1,2}|[零一二两三四五六七八九十]{1,3})(?(1)(?:个|项|条|种)?)"
)


def _chinese_number(numeral: str) -> int | None:
    """一 to 九十九 in Chinese numerals (十, 十二, 二十, 二十三); None for anything else."""
    tens, ten, ones = numeral.partition("十")
    if not ten:
        return _DIGITS.get(numeral) if len(numeral) == 1 else None
    if len(tens) > 1 or len(ones) > 1 or "两" in ones:
        return None
    high = _DIGITS.get(tens, -1) if tens else 1
    low = _DIGITS.get(ones, -1) if ones else 0
    return None if high < 1 or low < 0 else high * 10 + low


def choice_number(text: str) -> int | None:
    """The number the whole message picks ("3", "３", "三", "第三个", "选第2项"), or None when
    the message is anything else."""
    m = _CHOICE.fullmatch(display_clean(text))
    if m is None:
        return None
    numeral = m.group(2)
    number = int(numeral) if numeral.isdigit() else _chinese_number(numeral)
    return number if number is not None and number <= MAX_CHOICE else None


def chosen_payload(text: str, session: dict[str, Any]) -> str | None:
    """The payload of the option the message picks, if it picks one that was shown."""
    number = choice_number(text)
    options = session.get("options") or []
    if number is not None and 1 <= number <= len(options):
        return str(options[number - 1])
    return None


def remembered_buttons(session: dict[str, Any]) -> tuple[Button, ...]:
    """The buttons last shown, rebuilt from the session (empty if their labels are unknown)."""
    options = session.get("options") or []
    labels = session.get("labels") or []
    if not options or len(labels) != len(options):
        return ()
    return tuple(
        Button(str(label), str(payload)) for label, payload in zip(labels, options, strict=True)
    )


def no_such_choice(
    text: str, session: dict[str, Any], message: str, menu: Sequence[Button]
) -> Reply | None:
    """For a number that picks no option shown: `message` with the options again (or the main
    menu when there are none). None when the message is not a bare number."""
    if choice_number(text) is None:
        return None
    return Reply(message, remembered_buttons(session) or tuple(menu))
