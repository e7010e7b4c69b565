"""The WeChat API client, push sender and menu command against the fake WeChat API on
127.0.0.1: the shared token and its single refresh, the retry policy by error code, timeouts,
menu creation, and mass send by openid batches."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from claims import Granted
from fake_wechat_api import APP_ID, SECRET, FakeWeChatAPI, Fault

from bot.channels.wechat import build_sender
from bot.channels.wechat_api import WeChatAPI, WeChatAPIError, clientmsgid_for
from bot.commands.wechat import DEFAULT_MENU, load_menu
from bot.config import Settings
from bot.content import Content, load_content
from bot.errors import ConfigError
from bot.models import CaseCard
from bot.sender import Status
from bot.storage import SqliteStorage

ROOT = Path(__file__).resolve().parent.parent
SEND = "message/custom/send"
MASS = "message/mass/send"
CARD = CaseCard(
    "mini_case",
    "验证码也是个人信息",
    "一个用于测试的案例摘要。",
    "https://bot.example/cases/mini_case",
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeWeChatAPI]:
    server = FakeWeChatAPI()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    store = await SqliteStorage.open(tmp_path / "api.sqlite3")
    yield store
    await store.close()


@pytest.fixture
async def api(fake: FakeWeChatAPI, storage: SqliteStorage) -> AsyncIterator[WeChatAPI]:
    async with client(fake, storage) as c:
        yield c


def client(fake: FakeWeChatAPI, storage: SqliteStorage, **kw: float) -> WeChatAPI:
    options = {"timeout": 0.5, "backoff": 0.01, **kw}
    return WeChatAPI(APP_ID, SECRET, storage, base_url=fake.base_url, **options)  # type: ignore[arg-type]


def settings_for(fake: FakeWeChatAPI) -> Settings:
    return Settings(wechat_app_id=APP_ID, wechat_secret=SECRET, wechat_api_base=fake.base_url)


# -- the access token ---------------------------------------------------------------------------


async def test_token_is_fetched_once_and_shared_through_storage(
    fake: FakeWeChatAPI, storage: SqliteStorage
) -> None:
    async with client(fake, storage) as one, client(fake, storage) as other:
        await asyncio.gather(*(one.send_text("oA", f"提醒{i}") for i in range(5)))
        await other.send_text("oB", "请勿向陌生人透露验证码")
    assert fake.token_fetches() == 1
    assert {c.token for c in fake.calls_to(SEND)} == {"TOKEN_1"}
    assert fake.calls_to(SEND)[-1].body["text"]["content"] == "请勿向陌生人透露验证码"
    assert fake.calls_to("stable_token")[0].body["force_refresh"] is False


@pytest.mark.parametrize("errcode", [40001, 40014, 42001])
async def test_rejected_token_is_refreshed_once(
    fake: FakeWeChatAPI, api: WeChatAPI, errcode: int
) -> None:
    fake.fail(SEND, Fault(errcode=errcode))
    await api.send_text("oA", "你好")
    assert len(fake.calls_to(SEND)) == 2
    assert [c.body["force_refresh"] for c in fake.calls_to("stable_token")] == [False, True]


async def test_token_rejected_for_good_stops_after_one_refresh(
    fake: FakeWeChatAPI, api: WeChatAPI
) -> None:
    fake.fail_always(SEND, Fault(errcode=40001))
    with pytest.raises(WeChatAPIError) as caught:
        await api.send_text("oA", "你好")
    assert caught.value.errcode == 40001
    assert len(fake.calls_to(SEND)) == 2
    assert fake.token_fetches() == 2


async def test_refresh_by_another_worker_is_reused(
    fake: FakeWeChatAPI, storage: SqliteStorage
) -> None:
    async with client(fake, storage) as one, client(fake, storage) as other:
        await one.send_text("oA", "你好")
        fake.token = None  # WeChat forgets TOKEN_1: both workers will be refused once
        fake.fail(SEND, Fault(errcode=40001), Fault(errcode=40001))
        await asyncio.gather(one.send_text("oA", "一"), other.send_text("oB", "二"))
    # One forced refresh; the second worker found the new token in storage.
    assert [c.body["force_refresh"] for c in fake.calls_to("stable_token")] == [False, True]


async def test_bad_secret_is_an_error_not_a_loop(
    fake: FakeWeChatAPI, storage: SqliteStorage
) -> None:
    async with WeChatAPI(APP_ID, "wrong", storage, base_url=fake.base_url) as api:
        with pytest.raises(WeChatAPIError) as caught:
            await api.send_text("oA", "你好")
    assert caught.value.errcode == 40125
    assert fake.token_fetches() == 1 and fake.calls_to(SEND) == []


# -- the retry policy ---------------------------------------------------------------------------


@pytest.mark.parametrize("errcode", [45015, 45047, 43004, 45009, 48001])
async def test_outcomes_are_not_retried(fake: FakeWeChatAPI, api: WeChatAPI, errcode: int) -> None:
    fake.fail_always(SEND, Fault(errcode=errcode))
    with pytest.raises(WeChatAPIError) as caught:
        await api.send_text("oA", "你好")
    assert caught.value.errcode == errcode
    assert len(fake.calls_to(SEND)) == 1


async def test_system_busy_is_retried_only_where_a_repeat_is_harmless(
    fake: FakeWeChatAPI, api: WeChatAPI
) -> None:
    # -1 may come after WeChat delivered: a customer-service message is not sent again.
    fake.fail(SEND, Fault(errcode=-1))
    with pytest.raises(WeChatAPIError) as caught:
        await api.send_text("oA", "你好")
    assert caught.value.errcode == -1
    assert len(fake.calls_to(SEND)) == 1
    # A mass send under one clientmsgid is: retried, a bounded number of times.
    fake.fail(MASS, Fault(errcode=-1))
    await api.mass_send_text(["oA", "oB"], "你好", "cmid-1")
    assert len(fake.calls_to(MASS)) == 2
    fake.fail_always(MASS, Fault(errcode=-1))
    with pytest.raises(WeChatAPIError):
        await api.mass_send_text(["oA", "oB"], "你好", "cmid-2")
    assert len(fake.calls_to(MASS)) == 2 + api.max_attempts


async def test_timeouts_retry_only_what_is_safe_to_repeat(
    fake: FakeWeChatAPI, api: WeChatAPI
) -> None:
    await api.access_token()
    fake.fail(SEND, Fault(delay=2.0))
    with pytest.raises(WeChatAPIError) as caught:
        await api.send_text("oA", "你好")  # may have gone out: not sent twice
    assert caught.value.kind == "timeout"
    assert len(fake.calls_to(SEND)) == 1

    fake.fail("menu/create", Fault(delay=2.0), Fault(status=503))
    await api.create_menu({"button": [{"type": "click", "name": "案例", "key": "#cases:1"}]})
    assert len(fake.calls_to("menu/create")) == 3


async def test_http_errors_and_unreachable_servers(
    fake: FakeWeChatAPI, api: WeChatAPI, storage: SqliteStorage
) -> None:
    await api.access_token()
    fake.fail(SEND, Fault(status=502))
    with pytest.raises(WeChatAPIError) as caught:
        await api.send_text("oA", "你好")
    assert caught.value.kind == "http_502" and len(fake.calls_to(SEND)) == 1

    async with WeChatAPI(APP_ID, SECRET, storage, base_url="http://127.0.0.1:9", backoff=0) as gone:
        await storage.cache_put(f"wechat:access_token:{APP_ID}", "T", ttl=60)
        with pytest.raises(WeChatAPIError) as caught:
            await gone.send_text("oA", "你好")
    assert caught.value.kind == "connect"


# -- menu ----------------------------------------------------------------------------------------


async def test_menu_is_created_with_chinese_unescaped(fake: FakeWeChatAPI, api: WeChatAPI) -> None:
    menu = {
        "button": [
            {
                "name": "典型案例",
                "sub_button": [{"type": "click", "name": "以案释法", "key": "#cases:1"}],
            }
        ]
    }
    await api.create_menu(menu)
    [call] = fake.calls_to("menu/create")
    assert call.body == menu


def test_bundled_menu_fits_wechat_and_the_bundled_content() -> None:
    content = load_content(ROOT / "knowledge", ROOT / "cases_explained")
    menu = load_menu(DEFAULT_MENU, content)
    assert [b["name"] for b in menu["button"]] == ["举报指南", "典型案例", "防护小贴士"]


def test_menu_problems_are_all_reported(tmp_path: Path, mini_content: Content) -> None:
    bad = tmp_path / "menu.yaml"
    bad.write_text(
        "button:\n"
        "  - {type: click, name: 这个名字实在是太长了, key: '#cases:1'}\n"
        "  - {type: click, name: 条目, key: '#entry:no_such_entry'}\n"
        "  - {type: view, name: 网页, url: 'ftp://x'}\n"
        "  - {type: click, name: 第四, key: '#subscribe'}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_menu(bad, mini_content)
    message = str(caught.value)
    for problem in ("1-3 top-level", "button[0].name", "no_such_entry", "button[2].url"):
        assert problem in message


async def test_menu_command_creates_the_menu(
    fake: FakeWeChatAPI, tmp_path: Path, mini_dirs: tuple[Path, Path]
) -> None:
    menu_file = tmp_path / "menu.yaml"
    menu_file.write_text(
        "button:\n  - {type: click, name: 我要报案, key: '#report'}\n"
        "  - name: 防护\n    sub_button:\n"
        "      - {type: click, name: 日常防护, key: '#entry:protect_general'}\n",
        encoding="utf-8",
    )
    env = {
        **os.environ,
        "WECHAT_APP_ID": APP_ID,
        "WECHAT_SECRET": SECRET,
        "WECHAT_API_BASE": fake.base_url,
        "INFOGUARD_DATABASE": str(tmp_path / "menu.sqlite3"),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "--knowledge",
        str(mini_dirs[0]),
        "--cases",
        str(mini_dirs[1]),
        "wechat",
        "menu",
        "--file",
        str(menu_file),
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    [call] = fake.calls_to("menu/create")
    assert call.body["button"][1]["sub_button"][0] == {
        "type": "click",
        "name": "日常防护",
        "key": "#entry:protect_general",
    }


# -- mass send and the push sender -------------------------------------------------------------


async def test_mass_send_goes_to_a_batch_once_per_batch_key(
    fake: FakeWeChatAPI, storage: SqliteStorage
) -> None:
    sender = build_sender(settings_for(fake), storage)
    assert sender is not None
    assert (sender.channel, sender.max_batch, sender.idempotent) == ("wechat", 10_000, True)
    users = ["oA", "oB", "oC"]
    claim = Granted()
    results = await sender.send(CARD, users, batch_key="case:mini_case:batch:1", claim=claim)
    assert claim.claimed == users
    assert {u: r.status for u, r in results.items()} == dict.fromkeys(users, Status.SENT)
    [call] = fake.calls_to(MASS)
    assert call.body["touser"] == users and call.body["msgtype"] == "text"
    content = call.body["text"]["content"]
    assert CARD.title in content and CARD.url in content and "退订" in content  # type: ignore[operator]
    clientmsgid = call.body["clientmsgid"]
    assert clientmsgid == clientmsgid_for("case:mini_case:batch:1") and len(clientmsgid) <= 64
    assert json.loads(await storage.cache_get("wechat:mass:1000") or "{}")["recipients"] == 3

    # The same batch again after a crash (repeat): WeChat's 45065 means it went out before.
    again = await sender.send(
        CARD, users, batch_key="case:mini_case:batch:1", claim=Granted(repeat=True)
    )
    assert {r.status for r in again.values()} == {Status.SENT}
    assert {r.detail for r in again.values()} == {"duplicate"}
    assert len(fake.clientmsgids) == 1  # WeChat sent the batch once
    assert [len(fake.received[u]) for u in users] == [1, 1, 1]

    await sender.send(CARD, users, batch_key="case:mini_case:batch:2", claim=Granted())
    assert len(fake.clientmsgids) == 2


async def test_a_45065_we_did_not_cause_is_not_counted_as_sent(
    fake: FakeWeChatAPI, storage: SqliteStorage
) -> None:
    sender = build_sender(settings_for(fake), storage)
    assert sender is not None
    # Somebody else's send already used this clientmsgid (a first attempt under a fresh key).
    fake.clientmsgids[clientmsgid_for("fresh-key")] = 999
    results = await sender.send(CARD, ["oA", "oB"], batch_key="fresh-key", claim=Granted())
    assert {r.status for r in results.values()} == {Status.DEFERRED}
    assert fake.received == {}


async def test_a_45065_after_our_own_timed_out_attempt_is_sent(
    fake: FakeWeChatAPI, storage: SqliteStorage
) -> None:
    async with client(fake, storage, timeout=0.3) as api:
        fake.fail(MASS, Fault(late=1.0))  # WeChat takes the job, the answer comes too late
        msg_id, duplicate = await api.mass_send_text(["oA", "oB"], "你好", "cmid-x")
    assert duplicate and msg_id == fake.clientmsgids["cmid-x"]
    assert len(fake.calls_to(MASS)) == 2 and len(fake.received["oA"]) == 1


async def test_mass_send_takes_up_to_ten_thousand(
    fake: FakeWeChatAPI, storage: SqliteStorage
) -> None:
    sender = build_sender(settings_for(fake), storage)
    assert sender is not None
    users = [f"o{i:05d}" for i in range(10_000)]
    results = await sender.send(CARD, users, batch_key="big", claim=Granted())
    assert len(results) == 10_000 and len(fake.calls_to(MASS)[0].body["touser"]) == 10_000
    with pytest.raises(ValueError):
        await sender.send(CARD, [*users, "oExtra"], batch_key="too-big", claim=Granted())


@pytest.mark.parametrize(
    ("errcode", "status"),
    [
        (45009, Status.DEFERRED),
        (45028, Status.DEFERRED),
        (45011, Status.RETRY),
        (48001, Status.FAILED),
        (43004, Status.UNREACHABLE),
    ],
)
async def test_mass_send_refusals_become_outcomes(
    fake: FakeWeChatAPI, storage: SqliteStorage, errcode: int, status: Status
) -> None:
    sender = build_sender(settings_for(fake), storage)
    assert sender is not None
    fake.fail_always(MASS, Fault(errcode=errcode))
    results = await sender.send(CARD, ["oA", "oB"], batch_key="k", claim=Granted())
    assert {r.status for r in results.values()} == {status}
    assert {r.detail for r in results.values()} == {f"errcode:{errcode}"}


async def test_a_lone_recipient_is_never_sent_by_customer_service(
    fake: FakeWeChatAPI, storage: SqliteStorage
) -> None:
    sender = build_sender(settings_for(fake), storage)
    assert sender is not None and sender.min_batch == 2
    claim = Granted()
    alone = await sender.send(CARD, ["oA", "oA"], batch_key="one", claim=claim)
    assert alone == {"oA": alone["oA"]} and alone["oA"].status == Status.DEFERRED
    assert claim.claimed == []  # nothing was claimed, so nothing is in flight
    # Two at first, one left at the claim (the other unsubscribed meanwhile): deferred too.
    shrunk = await sender.send(CARD, ["oA", "oB"], batch_key="two", claim=Granted(refuse=["oB"]))
    assert shrunk["oA"].status == Status.DEFERRED
    assert fake.calls_to(SEND) == [] and fake.calls_to(MASS) == []


def test_no_sender_without_credentials(tmp_path: Path) -> None:
    assert build_sender(Settings(wechat_token="t"), None) is None  # type: ignore[arg-type]
