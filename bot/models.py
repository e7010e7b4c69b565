"""Value types shared by the core and the channels: what comes in, what goes out."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """One message from a citizen, already translated out of its platform's format."""

    channel: str
    """Which channel it came from: "console", "wechat", "telegram"."""
    user_id: str
    """The platform's opaque id for the user (a WeChat openid, a Telegram chat id)."""
    text: str
    """What the user typed, or the payload of the button they pressed."""


@dataclass(frozen=True, slots=True)
class Button:
    """A choice offered to the user; pressing it sends `payload` back as a message."""

    label: str
    payload: str


@dataclass(frozen=True, slots=True)
class CaseCard:
    """A case article, shown as a news card or a link button where the channel can."""

    case_id: str
    title: str
    summary: str
    url: str | None = None
    """Where the case page lives; None when no public base URL is configured."""


@dataclass(frozen=True, slots=True)
class Reply:
    """One message the bot sends; each channel renders it natively."""

    text: str
    buttons: tuple[Button, ...] = ()
    card: CaseCard | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """The replies to one message, with what the bot understood (for `ask --json` and logs)."""

    replies: list[Reply] = field(default_factory=list)
    entry_id: str | None = None
    """The knowledge entry answered, or None."""
    score: float = 0.0
    fallback: bool = False
    """True when the bot gave no confident answer: it declined, or asked which topic was meant."""
    decision: str = "answer"
    """"answer", "clarify" (您是想问：…) or "decline"; built-in replies count as answers."""
