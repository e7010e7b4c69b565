"""Finds and redacts personal data in text: ID numbers, mobile numbers, bank cards, e-mail.

Everything that is logged or stored passes through `redact` first, so a citizen who pastes
their ID number into the chat never finds it in our logs or database.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"

# Runs of digits (with an optional trailing X for ID numbers), not glued to other digits.
_DIGIT_RUN = re.compile(r"(?<![0-9])(?:[0-9][ -]?){10,22}[0-9xX]?(?![0-9])")
_MOBILE = re.compile(r"(?<![0-9])(?:\+?86[ -]?)?1[3-9][0-9](?:[ -]?[0-9]){8}(?![0-9])")
_ID_NUMBER = re.compile(r"(?<![0-9])[1-9][0-9]{16}[0-9xX](?![0-9])")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


def is_resident_id(number: str) -> bool:
    """True for an 18-character resident ID number whose check digit is right (GB 11643)."""
    if len(number) != 18 or not number[:17].isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == number[17].upper()


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


def find_personal_data(text: str) -> list[Finding]:
    """Every ID number, mobile number, bank card number and e-mail address in the text."""
    found: list[Finding] = []
    for m in _ID_NUMBER.finditer(text):
        if is_resident_id(m.group(0)):
            found.append(Finding("id_number", m.start(), m.end()))
    for m in _MOBILE.finditer(text):
        found.append(Finding("mobile", m.start(), m.end()))
    for m in _DIGIT_RUN.finditer(text):
        digits = re.sub(r"[ -]", "", m.group(0))
        if 16 <= len(digits) <= 19 and digits.isdigit() and passes_luhn(digits):
            found.append(Finding("bank_card", m.start(), m.end()))
    for m in _EMAIL.finditer(text):
        found.append(Finding("email", m.start(), m.end()))
    return _without_overlaps(found)


def _without_overlaps(found: list[Finding]) -> list[Finding]:
    # An ID number can also pass Luhn; the first (most specific) finding wins.
    kept: list[Finding] = []
    for f in found:
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f.start)


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

    Pass `findings` when `find_personal_data(text)` has already been called.
    """
    if findings is None:
        findings = find_personal_data(text)
    for f in reversed(findings):
        text = text[: f.start] + _MASKS[f.kind] + text[f.end :]
    # Any long digit run left over (an ID with a wrong check digit, say) is masked too.
    return re.sub(r"[0-9]{11,}", _LEFTOVER_MASK, text)


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
