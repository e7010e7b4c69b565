"""Seeded hostile inputs for the fuzz test (tests/test_fuzz.py) and the fuzz benchmark
(benchmarks/fuzz_benchmark.py): WeChat safe-mode pushes and Telegram webhook bodies.

Each case is built from a genuine input and then broken in one way: the inner XML mutated
and then encrypted and signed correctly (so it reaches our parser and the engine), the
ciphertext bit-flipped or replaced and re-signed (so it passes the signature and meets the
decryption), or the query or envelope garbled. Telegram bodies are genuine updates with
fields deleted or retyped, other JSON, or no JSON at all. A case is (label, query or
headers, body); the label says what was done, so a failure can be replayed from its seed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import time
from collections.abc import Iterator
from typing import Any

from wechatpy.crypto import WeChatCrypto

MAX_BODY = 60_000
"""Below the server's 64 KB limit: the cases test parsing, not the size check."""

_ALPHABET = (
    "abcXYZ019 <>/&;\"'=![]CDATA]]>\x00\x01\x08\x0b\x1f\x7f\u0085\u2028\ufeff\ufffe"
    "验证码身份证号报案退订订阅第三个一二三é😀\u202e"
)
_FIELDS = (
    "ToUserName",
    "FromUserName",
    "CreateTime",
    "MsgType",
    "Content",
    "MsgId",
    "Event",
    "EventKey",
    "Recognition",
    "MediaId",
    "PicUrl",
    "Location_X",
    "Location_Y",
    "Scale",
    "Label",
    "Url",
    "MsgID",
    "Status",
    "TotalCount",
)
_MSG_TYPES = (
    "text",
    "event",
    "image",
    "voice",
    "video",
    "shortvideo",
    "location",
    "link",
    "file",
    "",
    "TEXT",
    "miniprogrampage",
)
_EVENTS = (
    "subscribe",
    "unsubscribe",
    "CLICK",
    "VIEW",
    "SCAN",
    "LOCATION",
    "MASSSENDJOBFINISH",
    "TEMPLATESENDJOBFINISH",
    "",
    "click",
    "subscribe_scan",
)
_KEYS = ("#subscribe", "#unsubscribe", "#cases:1", "#cases:-1", "#cases:999999999999", "#case:")
_KEYS += ("#case:../../etc", "#entry:", "#entry:verification_code", "#report", "#report:fraud")
_KEYS += ("#flow:", "#flow:money:just_now", "#flow:resume", "#", "qrscene_1", "")
_TEXTS = ("验证码能告诉别人吗", "1", "三", "第九十九个", "0", "我要报案", "退订", "订阅", "110")
_TEXTS += ("13812345678给我打电话", "110101 19900307 8515", "#subscribe", "", " ", "\u200b")


def random_text(rng: random.Random, longest: int = 40) -> str:
    return "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, longest)))


def _junk_value(rng: random.Random) -> str:
    return rng.choice(
        [
            random_text(rng),
            str(rng.randint(-(10**20), 10**20)),
            "9" * rng.randint(1, 400),
            "",
            "<x>nested</x>",
            "<![CDATA[" + random_text(rng) + "]]>",
            "&amp;&lt;&#0;&#x1F600;",
            "x" * rng.randint(1000, 12_000),
            rng.choice(_TEXTS),
            rng.choice(_KEYS),
        ]
    )


def _field(name: str, value: str, rng: random.Random) -> str:
    if rng.random() < 0.5 and "]]>" not in value:
        return f"<{name}><![CDATA[{value}]]></{name}>"
    escaped = value.replace("&", "&amp;").replace("<", "&lt;")
    return f"<{name}>{escaped}</{name}>"


def genuine_inner(rng: random.Random, account: str, user: str) -> dict[str, str]:
    """The fields of a genuine push: a text, an event with a key, or another message."""
    now = str(int(time.time()))
    fields = {"ToUserName": account, "FromUserName": user, "CreateTime": now}
    kind = rng.choice(("text", "text", "event", "voice", "image", "location", "link"))
    fields["MsgType"] = kind
    if kind == "event":
        fields["Event"] = rng.choice(_EVENTS)
        fields["EventKey"] = rng.choice(_KEYS)
    else:
        fields["MsgId"] = str(rng.randint(1, 2**62))
        if kind == "text":
            fields["Content"] = rng.choice(_TEXTS)
        elif kind == "voice":
            fields["Recognition"] = rng.choice(_TEXTS)
    return fields


def _xml(fields: dict[str, str], rng: random.Random) -> str:
    return "<xml>" + "".join(_field(k, v, rng) for k, v in fields.items()) + "</xml>"


def mutate_fields(fields: dict[str, str], rng: random.Random) -> dict[str, str]:
    """Fields with some deleted, retyped or added; still one well-formed document."""
    fields = dict(fields)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        name = rng.choice(_FIELDS)
        if op < 0.25 and fields:
            fields.pop(rng.choice(list(fields)))
        elif op < 0.4:
            fields["MsgType"] = rng.choice(_MSG_TYPES)
        elif op < 0.5:
            fields["Event"] = rng.choice(_EVENTS)
            fields["MsgType"] = "event"
        else:
            fields[name] = _junk_value(rng)
    return fields


def mutate_text(xml: str, rng: random.Random) -> str:
    """The document with characters flipped, spans cut or repeated, tags inserted."""
    chars = list(xml)
    for _ in range(rng.randint(1, 6)):
        if not chars:
            break
        at = rng.randrange(len(chars))
        op = rng.random()
        if op < 0.3:
            chars[at] = rng.choice(_ALPHABET)
        elif op < 0.5:
            del chars[at : at + rng.randint(1, 30)]
        elif op < 0.65:
            chars[at:at] = chars[at : at + rng.randint(1, 60)]
        elif op < 0.8:
            chars[at:at] = list(rng.choice(("<a>", "</xml>", "<xml>", "<!--", "<?x?>", "]]>")))
        else:
            del chars[at:]
    return "".join(chars)


def sign(*parts: str) -> str:
    """WeChat's signature, computed here independently of the code under test."""
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


class WeChatFuzzer:
    """Safe-mode pushes for one account: `cases(n)` yields n (label, query, body)."""

    def __init__(self, seed: int, token: str, aes_key: str, app_id: str, account: str) -> None:
        self.rng = random.Random(seed)
        self.token = token
        self.crypto = WeChatCrypto(token, aes_key, app_id)
        self.account = account

    def user(self) -> str:
        return "oFuzz" + "".join(self.rng.choice("abcdef0123456789") for _ in range(22))

    def seal(self, inner: str, nonce: str, stamp: str) -> str:
        """The Encrypt field of a genuine envelope around `inner`."""
        sealed = self.crypto.encrypt_message(inner, nonce, stamp)
        start = sealed.index("<Encrypt><![CDATA[") + len("<Encrypt><![CDATA[")
        return sealed[start : sealed.index("]]></Encrypt>")]

    def push(self, encrypted: str, stamp: str, nonce: str) -> tuple[dict[str, str], bytes]:
        query = {
            "signature": sign(self.token, stamp, nonce),
            "timestamp": stamp,
            "nonce": nonce,
            "encrypt_type": "aes",
            "msg_signature": sign(self.token, stamp, nonce, encrypted),
        }
        body = f"<xml><ToUserName>{self.account}</ToUserName><Encrypt><![CDATA[{encrypted}]]>"
        return query, (body + "</Encrypt></xml>").encode()

    def genuine(self, text: str, user: str) -> tuple[dict[str, str], bytes]:
        stamp, nonce = str(int(time.time())), "genuine"
        fields = {
            "ToUserName": self.account,
            "FromUserName": user,
            "CreateTime": stamp,
            "MsgType": "text",
            "Content": text,
            "MsgId": str(self.rng.randint(1, 2**62)),
        }
        return self.push(self.seal(_xml(fields, self.rng), nonce, stamp), stamp, nonce)

    def cases(self, count: int) -> Iterator[tuple[str, dict[str, str], bytes]]:
        rng = self.rng
        makers = (
            (0.35, self._inner_fields),
            (0.25, self._inner_text),
            (0.15, self._flipped_ciphertext),
            (0.1, self._junk_ciphertext),
            (0.1, self._junk_query),
            (0.05, self._junk_body),
        )
        for _ in range(count):
            pick, total = rng.random(), 0.0
            make = makers[-1][1]
            for weight, maker in makers:
                total += weight
                if pick < total:
                    make = maker
                    break
            label, query, body = make()
            if len(body) <= MAX_BODY:
                yield label, query, body

    def _fresh(self) -> tuple[str, str]:
        return str(int(time.time())), "n" + str(self.rng.randint(0, 10**9))

    def _inner_fields(self) -> tuple[str, dict[str, str], bytes]:
        stamp, nonce = self._fresh()
        fields = mutate_fields(genuine_inner(self.rng, self.account, self.user()), self.rng)
        return (
            "inner-fields",
            *self.push(self.seal(_xml(fields, self.rng), nonce, stamp), stamp, nonce),
        )

    def _inner_text(self) -> tuple[str, dict[str, str], bytes]:
        stamp, nonce = self._fresh()
        xml = mutate_text(
            _xml(genuine_inner(self.rng, self.account, self.user()), self.rng), self.rng
        )
        return "inner-text", *self.push(self.seal(xml, nonce, stamp), stamp, nonce)

    def _flipped_ciphertext(self) -> tuple[str, dict[str, str], bytes]:
        stamp, nonce = self._fresh()
        inner = _xml(genuine_inner(self.rng, self.account, self.user()), self.rng)
        raw = bytearray(base64.b64decode(self.seal(inner, nonce, stamp)))
        for _ in range(self.rng.randint(1, 3)):
            at = self.rng.randrange(len(raw))
            raw[at] ^= 1 << self.rng.randrange(8)
        return "bit-flip", *self.push(base64.b64encode(bytes(raw)).decode(), stamp, nonce)

    def _junk_ciphertext(self) -> tuple[str, dict[str, str], bytes]:
        stamp, nonce = self._fresh()
        rng = self.rng
        encrypted = rng.choice(
            [
                base64.b64encode(
                    rng.randbytes(rng.choice((0, 1, 15, 16, 31, 32, 48, 400)))
                ).decode(),
                random_text(rng).replace("]]>", ""),
                "A" * rng.randint(1, 100),
                "====",
            ]
        )
        return "junk-ciphertext", *self.push(encrypted, stamp, nonce)

    def _junk_query(self) -> tuple[str, dict[str, str], bytes]:
        stamp, nonce = self._fresh()
        inner = _xml(genuine_inner(self.rng, self.account, self.user()), self.rng)
        query, body = self.push(self.seal(inner, nonce, stamp), stamp, nonce)
        key = self.rng.choice(list(query))
        if self.rng.random() < 0.5:
            del query[key]
        else:
            query[key] = _junk_value(self.rng)[:200]
        return f"junk-query-{key}", query, body

    def _junk_body(self) -> tuple[str, dict[str, str], bytes]:
        stamp, nonce = self._fresh()
        query, _ = self.push("x", stamp, nonce)
        return "junk-body", query, self.rng.randbytes(self.rng.randint(1, 2000))


class TelegramFuzzer:
    """Telegram webhook bodies: `cases(n)` yields n (label, headers, body)."""

    def __init__(self, seed: int, secret: str, header: str, chat_ids: tuple[int, ...]) -> None:
        self.rng = random.Random(seed)
        self.secret = secret
        self.header = header
        self.chat_ids = chat_ids

    def genuine(self, chat_id: int, text: str, update_id: int) -> dict[str, Any]:
        user = {"id": chat_id, "is_bot": False, "first_name": "测试"}
        message = {
            "message_id": self.rng.randint(1, 10**6),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private", "first_name": "测试"},
            "from": user,
            "text": text,
        }
        if text.startswith("/"):
            message["entities"] = [
                {"type": "bot_command", "offset": 0, "length": len(text.split()[0])}
            ]
        return {"update_id": update_id, "message": message}

    def _update(self) -> dict[str, Any]:
        rng = self.rng
        chat = rng.choice(self.chat_ids)
        update = self.genuine(
            chat, rng.choice((*_TEXTS, "/start", "/help", "/cases")), rng.randint(1, 10**9)
        )
        kind = rng.random()
        if kind < 0.25:
            message = update.pop("message")
            update["callback_query"] = {
                "id": str(rng.randint(1, 10**9)),
                "from": message["from"],
                "chat_instance": "ci",
                "data": rng.choice(_KEYS) + random_text(rng, 5),
                "message": {**message, "from": {"id": 1, "is_bot": True, "first_name": "b"}},
            }
        elif kind < 0.35:
            message = update.pop("message")
            member = {"user": {"id": 1, "is_bot": True, "first_name": "b"}, "status": "member"}
            update["my_chat_member"] = {
                "chat": message["chat"],
                "from": message["from"],
                "date": message["date"],
                "old_chat_member": member,
                # A block is "kicked" with until_date 0; "??" is a status PTB does not know.
                "new_chat_member": {
                    **member,
                    "status": rng.choice(("kicked", "left", "member", "??")),
                    "until_date": 0,
                },
            }
        elif kind < 0.4:
            update["edited_message"] = update.pop("message")
        return update

    def _retype(self, value: Any, depth: int = 0) -> Any:
        rng = self.rng
        if isinstance(value, dict) and value and depth < 4 and rng.random() < 0.7:
            key = rng.choice(list(value))
            op = rng.random()
            if op < 0.3:
                value.pop(key)
            else:
                value[key] = self._retype(value[key], depth + 1)
            return value
        return rng.choice(
            [
                None,
                True,
                -1,
                0,
                2**70,
                3.5,
                "",
                random_text(rng),
                "\ud800" + random_text(rng, 5),
                [],
                {},
                [value],
                {"id": "x"},
            ]
        )

    def cases(self, count: int) -> Iterator[tuple[str, dict[str, str], bytes]]:
        rng = self.rng
        for _ in range(count):
            headers = {self.header: self.secret, "Content-Type": "application/json"}
            pick = rng.random()
            if pick < 0.6:
                update = self._update()
                for _ in range(rng.randint(1, 3)):
                    update = self._retype(update)
                label = "retyped-update"
                body = json.dumps(update, ensure_ascii=rng.random() < 0.5).encode(
                    "utf-8", "surrogatepass"
                )
            elif pick < 0.7:
                label, body = "genuine-update", json.dumps(self._update()).encode()
            elif pick < 0.8:
                label = "other-json"
                body = json.dumps(
                    rng.choice([[], 1, "x", None, {"update_id": "x"}, [1] * 50])
                ).encode()
            elif pick < 0.87:
                label = "deep-json"
                depth = rng.choice((100, 1000, 20_000))
                body = ("[" * depth + "]" * depth).encode()
            elif pick < 0.95:
                label, body = "not-json", rng.randbytes(rng.randint(0, 500))
            else:
                label = "bad-secret"
                headers[self.header] = rng.choice(("", self.secret + "x", "x" * 300, " "))
                body = json.dumps(self._update()).encode()
            yield label, headers, body
