"""WeChat's wire format, kept pure (no I/O): request signatures, defused XML, safe-mode
envelopes, and turning the engine's replies into the messages WeChat can carry.

wechatpy does the signing arithmetic, the AES envelope and the reply XML; this module adds
what wechatpy 1.8.18 lacks (see ../shared/research/wechat.md §2.3): a constant-time compare
and a timestamp window, a DTD/entity-free parse before wechatpy's own parser sees a byte, and
CDATA-safe text (wechatpy puts text into `<![CDATA[...]]>` unescaped, so `]]>` would end it).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from wechatpy import parse_message
from wechatpy.crypto import WeChatCrypto
from wechatpy.messages import BaseMessage
from wechatpy.replies import ArticlesReply, TextReply
from wechatpy.utils import WeChatSigner

from bot.models import Reply
from bot.replies import render_plain

TIMESTAMP_WINDOW_SECONDS = 300
"""A signed request older or newer than this is refused: a captured request cannot be
replayed later. WeChat's clock and ours agree within seconds."""
MAX_TEXT_BYTES = 2000
"""WeChat truncates or refuses texts over about 2048 UTF-8 bytes (research §1.5); longer
answers are split at paragraph breaks."""
CARD_OPTIONS_HEADING = "相关内容："

# Characters XML 1.0 forbids outright: they would make the whole reply unparseable.
_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class BadRequest(Exception):
    """A request that is not a well-formed, signed WeChat push: answered with a 4xx."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def sign(*parts: str) -> str:
    """WeChat's signature: SHA-1 of the sorted, concatenated parts (wechatpy's signer)."""
    signer = WeChatSigner()
    signer.add_data(*parts)
    return str(signer.signature)


def check_signature(token: str, query: dict[str, str], now: float, *extra: str) -> None:
    """Raise BadRequest unless `query` carries a fresh, valid signature over token, timestamp,
    nonce and `extra` (the Encrypt field for `msg_signature`)."""
    name = "msg_signature" if extra else "signature"
    given, timestamp, nonce = query.get(name), query.get("timestamp"), query.get("nonce")
    if not given or not timestamp or not nonce:
        raise BadRequest(400, f"missing {name}, timestamp or nonce")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise BadRequest(400, "timestamp is not a number") from None
    if abs(now - sent_at) > TIMESTAMP_WINDOW_SECONDS:
        raise BadRequest(403, "timestamp outside the accepted window")
    expected = sign(token, timestamp, nonce, *extra)
    # Constant time: the comparison must not tell an attacker how many characters matched.
    if not hmac.compare_digest(expected.encode(), given.lower().encode("utf-8", "replace")):
        raise BadRequest(403, f"bad {name}")


def parse_fields(body: bytes | str) -> dict[str, str]:
    """The children of a `<xml>` document as a dict, refusing any DTD or entity (XXE, billion
    laughs) before anything expands, and anything that is not WeChat's flat `<xml>` shape."""
    try:
        root = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (DefusedXmlException, ParseError, ValueError) as exc:
        raise BadRequest(400, f"unacceptable XML ({type(exc).__name__})") from None
    if root.tag != "xml":
        raise BadRequest(400, "root element is not <xml>")
    fields = {child.tag: (child.text or "") for child in root}
    if len(fields) != len(root):
        raise BadRequest(400, "a field appears twice")  # wechatpy would get a list
    return fields


def decrypt(
    cryptos: Sequence[WeChatCrypto],
    token: str,
    query: dict[str, str],
    envelope: dict[str, str],
    now: float,
) -> tuple[str, WeChatCrypto]:
    """The inner XML of a safe-mode (or compatible-mode) push, and the key that opened it, so
    the reply is sealed with the same key. The current key is tried first, then the previous."""
    encrypted = envelope.get("Encrypt")
    if not encrypted:
        raise BadRequest(400, "encrypted push without <Encrypt>")
    check_signature(token, query, now, encrypted)
    for crypto in cryptos:
        try:
            inner = crypto.decrypt_message(
                {"Encrypt": encrypted}, query["msg_signature"], query["timestamp"], query["nonce"]
            )
        except Exception:  # wrong key, bad padding, bad base64, wrong app id: try the next
            continue
        return str(inner), crypto
    raise BadRequest(400, "cannot decrypt the push")


def parse(xml: str, fields: dict[str, str]) -> BaseMessage:
    """wechatpy's message object for an already defused document (`fields` from
    `parse_fields`), with every field the webhook relies on checked now."""
    if not fields.get("MsgType") or not fields.get("FromUserName"):
        raise BadRequest(400, "missing MsgType or FromUserName")
    try:
        message = parse_message(xml)
        # wechatpy converts lazily: touch the numeric fields now, not halfway through an answer.
        _ = (message.id, message.time, message.type)
    except Exception as exc:
        raise BadRequest(400, f"not a WeChat message ({type(exc).__name__})") from None
    if not isinstance(message, BaseMessage) or not isinstance(message.source, str):
        raise BadRequest(400, "not a WeChat message")
    return message


def dedupe_key(message: BaseMessage) -> str:
    """What identifies one push across WeChat's retries: MsgId for messages, sender +
    CreateTime + event + key for events (research §1.2); hashed, so no openid is stored."""
    if message.type != "event" and message.id:
        key = f"msg:{message.id}"
    else:
        data = message._data
        parts = (message.source, message.time, data.get("Event"), data.get("EventKey"))
        key = "event:" + "|".join(field_text(p) for p in parts)
    return "wechat:" + hashlib.sha256(key.encode()).hexdigest()[:32]


def field_text(value: Any) -> str:
    """A message field as text; "" for a missing or nested one."""
    if value is None or isinstance(value, (dict, list)):
        return ""
    return str(value).strip()


def cdata_safe(text: str) -> str:
    """Text that cannot break out of wechatpy's `<![CDATA[...]]>`: each `]]>` is split across
    two CDATA sections (the reader still sees `]]>`), and XML-forbidden characters go."""
    return _XML_FORBIDDEN.sub("", text).replace("]]>", "]]]]><![CDATA[>")


@dataclass(frozen=True, slots=True)
class TextOut:
    """A text message, within WeChat's size limit."""

    text: str


@dataclass(frozen=True, slots=True)
class NewsOut:
    """A news card with one article (WeChat allows no more than one since 2018)."""

    title: str
    description: str
    url: str
    picture: str = ""


Outgoing = TextOut | NewsOut


def plan(replies: Sequence[Reply]) -> list[Outgoing]:
    """The engine's replies as WeChat messages, in sending order.

    A passive reply carries one message, so texts are joined. A reply with a case card that
    has a page becomes a news card pointing at the page; its buttons and the other replies
    follow as one text. Buttons are numbered by `render_plain` in the order the engine
    remembered them, so "1" still means the first.
    """
    card_reply = next((r for r in replies if r.card and r.card.url), None)
    if card_reply is None or card_reply.card is None or card_reply.card.url is None:
        return [TextOut(t) for t in split_text("\n\n".join(render_plain(replies)))]
    card = card_reply.card
    news = NewsOut(card.title, card.summary, card.url)
    rest = [
        (Reply(CARD_OPTIONS_HEADING, r.buttons) if r is card_reply else r)
        for r in replies
        if r is not card_reply or r.buttons
    ]
    text = "\n\n".join(render_plain(rest))
    return [news, *(TextOut(t) for t in split_text(text))]


def split_text(text: str, limit: int = MAX_TEXT_BYTES) -> list[str]:
    """`text` in pieces of at most `limit` UTF-8 bytes, broken at paragraphs, then lines."""
    text = text.strip()
    if not text:
        return []
    pieces: list[str] = []
    current = ""
    for separator, unit in _units(text, limit):
        candidate = f"{current}{separator}{unit}" if current else unit
        if len(candidate.encode()) <= limit:
            current = candidate
        else:
            pieces.append(current)
            current = unit
    pieces.append(current)
    return [p.strip() for p in pieces if p.strip()]


def _units(text: str, limit: int) -> list[tuple[str, str]]:
    """Paragraphs that fit, else their lines, else slices of a line; each with the separator
    that joined it to the one before."""
    units: list[tuple[str, str]] = []
    for paragraph in text.split("\n\n"):
        separator = "\n\n"
        if len(paragraph.encode()) <= limit:
            units.append((separator, paragraph))
            continue
        for line in paragraph.split("\n"):
            while len(line.encode()) > limit:
                cut = len(line.encode()[:limit].decode(errors="ignore"))
                units.append((separator, line[:cut]))
                separator, line = "", line[cut:]
            units.append((separator, line))
            separator = "\n"
    return units


def render(item: Outgoing, message: BaseMessage, timestamp: int) -> str:
    """A passive reply to `message` as WeChat's reply XML (From and To swapped)."""
    common = {
        "source": cdata_safe(str(message.target or "")),
        "target": cdata_safe(str(message.source or "")),
        "time": timestamp,
    }
    if isinstance(item, NewsOut):
        article = {
            "title": cdata_safe(item.title),
            "description": cdata_safe(item.description),
            "image": cdata_safe(item.picture),
            "url": cdata_safe(item.url),
        }
        return str(ArticlesReply(articles=[article], **common).render())
    return str(TextReply(content=cdata_safe(item.text), **common).render())


def seal(crypto: WeChatCrypto, reply_xml: str, nonce: str, timestamp: int) -> str:
    """The reply in safe mode: encrypted and signed with the key the push came with."""
    return str(crypto.encrypt_message(reply_xml, nonce, str(timestamp)))
