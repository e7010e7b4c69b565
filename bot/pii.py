"""Finds and redacts personal data in text: ID numbers, mobile numbers, bank cards, e-mail.

Everything that is logged or stored passes through `redact` first, so a citizen who pastes
their ID number into the chat never finds it in our logs or database.

Numbers are found as people type them: with spaces or dashes between the groups
(`110101 19900307 8515`, `138-1234-5678`) and in full-width digits (`１３８…`). A number
that only looks like one counts too: an 18-character run ending in X or with a birth date
in it is an ID number even if its check digit is wrong, and any 16-19 digit run is a card
number even if it fails the Luhn test; the citizen deserves the warning either way, and
such a number is redacted like any other.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"

# One character for one, so offsets found in the folded text hold in the original:
# full-width digits and X, and the spaces and dashes people put between digit groups.
_FOLD = str.maketrans(
    {
        **{chr(0xFF10 + d): str(d) for d in range(10)},
        "Ｘ": "X",
        "ｘ": "x",
        "\u3000": " ",
        "\u00a0": " ",
        **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2212\ufe63\uff0d", "-"),
    }
)
_SEP = "[ -]?"
"""At most one space or dash between two digits."""
_ID_LIKE = re.compile(rf"(?<![0-9])[1-9](?:{_SEP}[0-9]){{16}}{_SEP}[0-9xX](?![0-9])")
_CARD_LIKE = re.compile(rf"(?<![0-9])[0-9](?:{_SEP}[0-9]){{15,18}}(?![0-9])")
_MOBILE = re.compile(rf"(?<![0-9])(?:\+?86{_SEP})?1[3-9][0-9](?:{_SEP}[0-9]){{8}}(?![0-9])")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_LEFTOVER = re.compile(rf"[0-9](?:{_SEP}[0-9]){{10,}}(?:{_SEP}[xX])?")
"""Any run of 11 or more digits left after the findings: masked too."""
_BIRTH_DATE = re.compile(r"(?:19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])")


def fold(text: str) -> str:
    """Full-width digits and X as ASCII, odd spaces and dashes as " " and "-"; same length."""
    return text.translate(_FOLD)


def is_resident_id(number: str) -> bool:
    """True for an 18-character resident ID number whose check digit is right (GB 11643)."""
    if len(number) != 18 or not number[:17].isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == number[17].upper()


def looks_like_resident_id(number: str) -> bool:
    """True for 18 characters shaped like an ID number: the check digit right, or an X at the
    end, or a birth date in the right place (a mistyped or made-up check digit)."""
    if len(number) != 18 or not number[:17].isdigit():
        return False
    return is_resident_id(number) or number[17] in "xX" or bool(_BIRTH_DATE.fullmatch(number[6:14]))


def passes_luhn(digits: str) -> bool:
    """True when the digits pass the Luhn check used by bank card numbers."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


@dataclass(frozen=True, slots=True)
class Finding:
    """One piece of personal data found in a text."""

    kind: str
    """"id_number", "mobile", "bank_card" or "email"."""
    start: int
    end: int


def _digits(run: str) -> str:
    return re.sub("[ -]", "", run)


def find_personal_data(text: str) -> list[Finding]:
    """Every ID number, mobile number, bank card number and e-mail address in the text,
    including ones typed with spaces, dashes or full-width digits, and look-alikes."""
    folded = fold(text)
    found: list[Finding] = []
    for m in _ID_LIKE.finditer(folded):
        if looks_like_resident_id(_digits(m.group(0))):
            found.append(Finding("id_number", m.start(), m.end()))
    # Cards before mobiles: a long run that contains a mobile-like stretch is one number.
    for m in _CARD_LIKE.finditer(folded):
        found.append(Finding("bank_card", m.start(), m.end()))
    for m in _MOBILE.finditer(folded):
        found.append(Finding("mobile", m.start(), m.end()))
    for m in _EMAIL.finditer(folded):
        found.append(Finding("email", m.start(), m.end()))
    return _without_overlaps(found)


def _without_overlaps(found: list[Finding]) -> list[Finding]:
    # An ID number can also look like a card; the first (most specific) finding wins.
    kept: list[Finding] = []
    for f in found:
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f.start)


# Words that say a number is someone else's: the caller, the sender, the account to pay.
_OTHERS = re.compile(
    "给我打|打给我|打电话给我|打来|打过来|来电|给我发|发来|发给我|短信|骗子|对方|陌生|"
    "这个号|这个电话|这个手机|该号码|自称|冒充|骚扰|诈骗电话|转账到|转到|汇到|打到|收款|"
    "他的|她的|他们的|加我"
)
# Words just before a number that say it is the writer's own.
_OWN = re.compile("我的|我手机|我电话|我号码|我身份证|我卡|我银行卡|我邮箱|本人|自己的")
_OWN_WINDOW = 8


def quoted_from_someone_else(text: str, findings: list[Finding]) -> bool:
    """True when every number found is, by the words around it, someone else's (the scammer
    who called, the account they asked for), not the writer's own. ID numbers always count
    as the writer's: nobody needs to quote another person's."""
    if not findings or any(f.kind == "id_number" for f in findings):
        return False
    if not _OTHERS.search(text):
        return False
    return not any(_OWN.search(text[max(0, f.start - _OWN_WINDOW) : f.start]) for f in findings)


_LEFTOVER_MASK = "[号码]"
_MASKS = {
    "id_number": "[身份证号]",
    "mobile": "[手机号]",
    "bank_card": "[银行卡号]",
    "email": "[邮箱]",
}


def strip_placeholders(text: str) -> str:
    """Redacted text without its placeholders: what the matcher should read."""
    return re.sub("|".join(map(re.escape, [*_MASKS.values(), _LEFTOVER_MASK])), "", text)


def redact(text: str, findings: list[Finding] | None = None) -> str:
    """The text with every piece of personal data replaced by a placeholder such as [手机号].

    Pass `findings` when `find_personal_data(text)` has already been called. Digits come
    back folded to ASCII (offsets are the same either way).
    """
    if findings is None:
        findings = find_personal_data(text)
    text = fold(text)
    for f in reversed(findings):
        text = text[: f.start] + _MASKS[f.kind] + text[f.end :]
    # Any long digit run left over (a 15-digit number, say) is masked too.
    return _LEFTOVER.sub(_LEFTOVER_MASK, text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts personal data from every record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(str(record.msg))
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in args)
        return True


def install_log_redaction() -> None:
    """Redact personal data from every log record, whoever logs it."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
