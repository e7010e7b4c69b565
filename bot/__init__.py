"""InfoGuard (个人信息保护助手): the public API of the bot's core.

`Engine` is imported on first use: commands that never converse (push, kb) then do not load
the matcher and its pinyin tables."""

from typing import TYPE_CHECKING, Any

from bot.models import Button, CaseCard, IncomingMessage, Reply

if TYPE_CHECKING:
    from bot.engine import Engine

__all__ = ["Button", "CaseCard", "Engine", "IncomingMessage", "Reply"]


def __getattr__(name: str) -> Any:
    if name == "Engine":
        from bot.engine import Engine

        return Engine
    raise AttributeError(f"module 'bot' has no attribute {name!r}")
