"""Settings: where content and data live, and the channels' secrets, all from the environment.

Secrets are only read here and never logged; `Settings.__repr__` masks them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from bot.errors import ConfigError

_PACKAGE = Path(__file__).resolve().parent
_SECRET = {"secret": True}


def bundled_dir(name: str) -> Path:
    """A bundled content folder: inside the installed wheel, or at the root of a checkout."""
    installed = _PACKAGE / "_content" / name
    return installed if installed.is_dir() else _PACKAGE.parent / name


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "infoguard"


def default_cache_dir() -> Path:
    """Where the trained matcher and the encoder's unpacked weights are kept: rebuilt when
    missing, so deleting it is always safe."""
    configured = os.environ.get("INFOGUARD_CACHE_DIR")
    return Path(configured).expanduser() if configured else default_data_dir() / "cache"


@dataclass(frozen=True)
class Settings:
    """Every setting the bot reads, each from an INFOGUARD_* (or WECHAT_* / TELEGRAM_*) variable."""

    knowledge_dir: Path = field(default_factory=lambda: bundled_dir("knowledge"))
    cases_dir: Path = field(default_factory=lambda: bundled_dir("cases_explained"))
    database: Path = field(default_factory=lambda: default_data_dir() / "infoguard.sqlite3")
    """The SQLite file, when `database_url` is not set."""
    database_url: str = field(default="", metadata=_SECRET)
    """`sqlite:///absolute/path/file` or `postgresql://user:password@host/db`; empty means the
    SQLite file `database`. Secret: it may hold a password."""
    redis_url: str = field(default="", metadata=_SECRET)
    """`redis://host:port/db`: the hot state all workers share (seen message ids, the access
    token, sessions, the Telegram send rate); empty keeps it in the database."""
    redis_prefix: str = "infoguard:"
    """Prefix of every Redis key, so that several bots can share one Redis."""
    cache_dir: Path = field(default_factory=default_cache_dir)
    """The matcher's trained model and the sentence encoder's weights (derived data only)."""
    public_url: str = ""
    """Public base URL of `infoguard serve` (e.g. https://bot.example.gov.cn); case pages live
    under /cases/ there."""
    host: str = "127.0.0.1"
    port: int = 8080
    wechat_app_id: str = ""
    wechat_secret: str = field(default="", metadata=_SECRET)
    wechat_token: str = field(default="", metadata=_SECRET)
    wechat_aes_key: str = field(default="", metadata=_SECRET)
    wechat_aes_key_previous: str = field(default="", metadata=_SECRET)
    """The EncodingAESKey before the last change: still accepted while WeChat switches over."""
    wechat_api_base: str = "https://api.weixin.qq.com"
    wechat_reply_budget: float = 4.0
    """Seconds the webhook waits for an answer before replying `success` and sending the
    answer as a customer-service message instead (WeChat gives up after 5 s)."""
    telegram_token: str = field(default="", metadata=_SECRET)
    telegram_mode: str = "polling"
    telegram_webhook_secret: str = field(default="", metadata=_SECRET)
    telegram_api_base: str = ""
    telegram_push_rate: float = 25.0
    """Messages a second the bot sends, pushes and replies together (Telegram allows about 30
    a second to different chats; paid broadcasts up to 1000)."""
    push_interval_days: float = 8.0
    """Days between scheduled pushes; 0 turns them off. Eight keeps WeChat users within their
    four mass sends a calendar month."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            name = _env_name(f.name)
            if name not in env or env[name] == "":
                continue
            raw = env[name]
            if f.type in ("Path", Path):
                values[f.name] = Path(raw).expanduser()
            elif f.type in ("int", int):
                values[f.name] = _number(name, raw, int)
            elif f.type in ("float", float):
                values[f.name] = _number(name, raw, float)
            else:
                values[f.name] = raw
        return cls(**values)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        def shown(name: str, secret: bool) -> str:
            value = getattr(self, name)
            return f"{name}={'***' if secret and value else repr(value)}"

        listed = (shown(f.name, bool(f.metadata.get("secret"))) for f in fields(self))
        return f"Settings({', '.join(listed)})"

    def storage_url(self) -> str:
        """Where the data lives, as a URL (`database_url`, else the SQLite file's)."""
        return self.database_url or f"sqlite://{self.database}"

    def case_url(self, case_id: str) -> str | None:
        return f"{self.public_url.rstrip('/')}/cases/{case_id}" if self.public_url else None


def _env_name(field_name: str) -> str:
    if field_name.startswith(("wechat_", "telegram_")):
        return field_name.upper()
    return "INFOGUARD_" + field_name.upper()


def _number(name: str, raw: str, kind: type[int] | type[float]) -> int | float:
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
