"""`infoguard wechat menu`: checks the custom menu YAML (WeChat's limits, and that every click
key is a payload the bot answers) and creates the menu through the WeChat API."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any, get_args

import yaml

from bot import replies as payloads
from bot.config import Settings
from bot.content import Content
from bot.errors import ConfigError, InfoGuardError
from bot.runtime import load, open_configured_storage
from bot.schema import ReportScenario

DEFAULT_MENU = Path(__file__).resolve().parent.parent / "channels" / "wechat_menu.yaml"
TOP_LEVEL_MAX, SUB_MAX = 3, 5
NAME_BYTES, SUB_NAME_BYTES, KEY_BYTES, URL_BYTES = 16, 60, 128, 1024
_FIXED_PAYLOADS = {payloads.SUBSCRIBE, payloads.UNSUBSCRIBE, payloads.REPORT.rstrip(":")}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    wechat = sub.add_parser("wechat", help="manage the WeChat Official Account")
    wechat_sub = wechat.add_subparsers(dest="wechat_command", required=True, metavar="{menu}")
    p = wechat_sub.add_parser(
        "menu",
        help="create the custom menu from a YAML file",
        description="Check the menu file and create the menu (needs WECHAT_APP_ID and "
        "WECHAT_SECRET). The default file is bot/channels/wechat_menu.yaml.",
    )
    p.add_argument("--file", type=Path, default=DEFAULT_MENU, help="the menu YAML file")
    p.add_argument(
        "--dry-run", action="store_true", help="check and print the menu JSON; send nothing"
    )
    p.set_defaults(func=_menu)


def _menu(args: argparse.Namespace, settings: Settings) -> int:
    menu = load_menu(args.file, load(settings))
    if args.dry_run:
        print(json.dumps(menu, ensure_ascii=False, indent=1))
        return 0
    if not (settings.wechat_app_id and settings.wechat_secret):
        raise ConfigError("creating the menu needs WECHAT_APP_ID and WECHAT_SECRET")
    asyncio.run(_create(settings, menu))
    print(f"infoguard: menu created ({len(menu['button'])} buttons)", file=sys.stderr)
    return 0


async def _create(settings: Settings, menu: dict[str, Any]) -> None:
    # Imported here so that other commands start without the web client stack.
    from bot.channels.wechat_api import WeChatAPI, WeChatAPIError

    # The server's database, so the access token cached there is reused, not re-fetched.
    storage = await open_configured_storage(settings)
    try:
        async with WeChatAPI(
            settings.wechat_app_id,
            settings.wechat_secret,
            storage,
            base_url=settings.wechat_api_base,
        ) as api:
            await api.create_menu(menu)
    except WeChatAPIError as exc:
        raise InfoGuardError(f"WeChat refused the menu: {exc.kind}") from None
    finally:
        await storage.close()


def load_menu(path: Path, content: Content) -> dict[str, Any]:
    """The menu as WeChat's JSON; ConfigError listing every problem found."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the menu: {exc}") from None
    problems: list[str] = []
    buttons = raw.get("button") if isinstance(raw, dict) else None
    if not isinstance(buttons, list):
        buttons = []
    if not 1 <= len(buttons) <= TOP_LEVEL_MAX:
        problems.append(f"button: needs 1-{TOP_LEVEL_MAX} top-level buttons")
    menu = {
        "button": [_button(b, f"button[{i}]", content, problems) for i, b in enumerate(buttons)]
    }
    if problems:
        raise ConfigError("\n".join(f"{path.name}: {p}" for p in problems))
    return menu


def _button(
    raw: Any, where: str, content: Content, problems: list[str], *, sub: bool = False
) -> Any:
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping")
        return {}
    name = str(raw.get("name") or "")
    limit = SUB_NAME_BYTES if sub else NAME_BYTES
    if not name or len(name.encode()) > limit:
        problems.append(f"{where}.name: needs 1-{limit} bytes (a Chinese character is 3)")
    children = raw.get("sub_button")
    if children is not None and not sub:
        if not isinstance(children, list):
            children = []
        if not 1 <= len(children) <= SUB_MAX:
            problems.append(f"{where}.sub_button: needs 1-{SUB_MAX} buttons")
        return {
            "name": name,
            "sub_button": [
                _button(c, f"{where}.sub_button[{i}]", content, problems, sub=True)
                for i, c in enumerate(children)
            ],
        }
    kind = raw.get("type")
    if kind == "click":
        key = str(raw.get("key") or "")
        if len(key.encode()) > KEY_BYTES or not _known_payload(key, content):
            problems.append(f"{where}.key: {key!r} is not a payload the bot answers")
        return {"type": "click", "name": name, "key": key}
    if kind == "view":
        url = str(raw.get("url") or "")
        if not re.fullmatch(r"https?://\S+", url) or len(url.encode()) > URL_BYTES:
            problems.append(f"{where}.url: needs an http(s) URL of at most {URL_BYTES} bytes")
        return {"type": "view", "name": name, "url": url}
    problems.append(f"{where}.type: must be click or view (or give sub_button)")
    return {}


def _known_payload(key: str, content: Content) -> bool:
    kind, _, arg = key.partition(":")
    if key in _FIXED_PAYLOADS:
        return True
    if kind + ":" == payloads.ENTRY:
        return arg in content.entries
    if kind + ":" == payloads.CASE:
        return arg in content.cases
    if kind + ":" == payloads.CASES_PAGE:
        return arg.isdigit()
    return kind + ":" == payloads.REPORT and arg in get_args(ReportScenario)
