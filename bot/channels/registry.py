"""Which channels can push, and how to build their senders from the settings.

Channel modules are imported lazily, by name, so that pushing on one channel never needs
another's libraries; each exposes `build_sender(...)` returning None when not configured:

- `bot.channels.wechat_api.build_sender(settings, storage) -> Sender | None`
- `bot.channels.telegram_api.build_sender(settings) -> Sender | None`

(the API modules, not the conversation adapters: a push loads no webhook, matcher or engine).

The console channel (subscribers from `infoguard chat`) prints the cards on stdout.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

from bot.channels.console import ConsoleSender
from bot.config import Settings
from bot.errors import InfoGuardError
from bot.sender import Sender
from bot.storage import Storage

SenderFactory = Callable[[Settings, Storage], Sender | None]


def _channel_factory(module: str, *, needs_storage: bool) -> SenderFactory:
    def build(settings: Settings, storage: Storage) -> Sender | None:
        channel = importlib.import_module(module)
        build_sender = getattr(channel, "build_sender", None)
        if build_sender is None:  # the channel does not push (yet)
            return None
        sender: Sender | None = (
            build_sender(settings, storage) if needs_storage else build_sender(settings)
        )
        return sender

    return build


SENDER_FACTORIES: dict[str, SenderFactory] = {
    "wechat": _channel_factory("bot.channels.wechat_api", needs_storage=True),
    "telegram": _channel_factory("bot.channels.telegram_api", needs_storage=False),
    "console": lambda settings, storage: ConsoleSender(),
}
"""Channel name -> factory; tests register fake channels here."""


def build_senders(
    settings: Settings,
    storage: Storage,
    names: Sequence[str] | None = None,
    *,
    explicit: bool = False,
) -> list[Sender]:
    """The senders of the configured channels among `names` (default: all known); with
    `explicit`, a channel that is not configured is an error."""
    senders: list[Sender] = []
    names = list(SENDER_FACTORIES) if names is None else names
    for name in names:
        sender = SENDER_FACTORIES[name](settings, storage)
        if sender is None:
            if explicit:
                raise InfoGuardError(f"channel {name} is not configured")
            continue
        senders.append(sender)
    return senders
