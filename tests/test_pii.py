"""Personal data in a message is detected, never echoed, never logged, never stored."""

from __future__ import annotations

import logging
import sqlite3

from bot.engine import Engine
from bot.models import IncomingMessage
from bot.pii import find_personal_data, is_resident_id, passes_luhn, redact

VALID_ID = "11010519491231002X"
ID_WITH_BAD_CHECK = "110105194912310021"
MOBILE = "13912345678"
CARD = "6222021234567890128"


def test_resident_id_checksum() -> None:
    assert is_resident_id(VALID_ID)
    assert is_resident_id("530102199003071238")
    assert not is_resident_id(ID_WITH_BAD_CHECK)


def test_luhn() -> None:
    assert passes_luhn("4111111111111111")
    assert passes_luhn(CARD)
    assert not passes_luhn("4111111111111112")


def test_findings_by_kind() -> None:
    text = f"身份证{VALID_ID}，手机+86 {MOBILE}，卡号{CARD}，邮箱 li.si@example.com"
    kinds = [f.kind for f in find_personal_data(text)]
    assert kinds == ["id_number", "mobile", "bank_card", "email"]


def test_redact_removes_every_number() -> None:
    text = f"我的身份证{VALID_ID}和{ID_WITH_BAD_CHECK}，电话{MOBILE}，卡{CARD}"
    redacted = redact(text)
    for secret in (VALID_ID, ID_WITH_BAD_CHECK, MOBILE, CARD):
        assert secret not in redacted
    assert "[身份证号]" in redacted and "[手机号]" in redacted and "[银行卡号]" in redacted


def test_short_numbers_are_left_alone() -> None:
    assert redact("请拨打110或12321，2019年立案5件") == "请拨打110或12321，2019年立案5件"


async def test_engine_answers_warns_and_never_echoes(mini_engine: Engine, tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    message = IncomingMessage(
        "console", "u1", f"我手机{MOBILE}身份证{VALID_ID}，别人问我要验证码能给吗"
    )
    outcome = await mini_engine.respond(message)
    shown = "\n".join(r.text for r in outcome.replies)
    assert outcome.entry_id == "verification_code"
    assert "不要在聊天里发送" in shown
    assert MOBILE not in shown and VALID_ID not in shown
    assert MOBILE not in caplog.text and VALID_ID not in caplog.text
    await mini_engine.storage.close()  # type: ignore[attr-defined]
    raw = (tmp_path / "engine.sqlite3").read_bytes()
    wal = tmp_path / "engine.sqlite3-wal"
    raw += wal.read_bytes() if wal.exists() else b""
    for secret in (MOBILE, VALID_ID):
        assert secret.encode() not in raw
    rows = sqlite3.connect(tmp_path / "engine.sqlite3").execute("SELECT * FROM sessions").fetchall()
    assert all("验证码能给吗" not in str(row) for row in rows)


def test_numbers_typed_with_spaces_dashes_and_full_width_digits() -> None:
    typed = {
        "110101 19900307 8515": "id_number",
        "１１０１０１１９９００３０７８５１Ｘ": "id_number",
        "138-1234-5678": "mobile",
        "１３８１２３４５６７８": "mobile",
        "+86 139 1234 5678": "mobile",
        "6222 0212 3456 7890 128": "bank_card",
    }
    for text, kind in typed.items():
        assert [f.kind for f in find_personal_data(f"号码：{text}。")] == [kind], text
        assert not any(c.isdigit() for c in redact(text)), text


def test_look_alikes_that_fail_their_checks_are_still_found() -> None:
    assert [f.kind for f in find_personal_data("11010519900307851X")] == ["id_number"]
    assert [f.kind for f in find_personal_data(ID_WITH_BAD_CHECK)] == ["id_number"]
    assert not passes_luhn("6222021234567890123")
    assert [f.kind for f in find_personal_data("卡号6222021234567890123")] == ["bank_card"]
    assert find_personal_data("2019-2020年，第12321号") == []
