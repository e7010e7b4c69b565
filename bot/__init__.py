"""InfoGuard (个人信息保护助手): the public API of the bot's core."""

from bot.engine import Engine
from bot.models import Button, CaseCard, IncomingMessage, Reply

__all__ = ["Button", "CaseCard", "Engine", "IncomingMessage", "Reply"]
