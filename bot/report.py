"""Report guidance (报案助手): a stub the report-guidance work replaces (issue 3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bot.content import Content
from bot.models import Reply


@dataclass(frozen=True, slots=True)
class FlowStep:
    """What one message did to a guided flow."""

    replies: list[Reply]
    state: dict[str, Any] | None
    """The flow's new state, or None when the flow has ended."""
    passthrough: bool = False
    """True when the message was not an answer to the flow: the engine answers it as an
    ordinary question and keeps `state`."""
    extra: dict[str, Any] = field(default_factory=dict)


class ReportGuide:
    """Walks a citizen through reporting; holds no state of its own."""

    def __init__(self, content: Content) -> None:
        self.content = content

    def is_emergency(self, text: str) -> bool:
        return False

    def emergency(self) -> list[Reply]:
        return []

    def start(self, scenario: str | None, text: str) -> FlowStep:
        return FlowStep([Reply("报案助手即将上线。紧急情况请立即拨打110。")], None)

    def step(self, state: dict[str, Any], text: str) -> FlowStep:
        return FlowStep([], None, passthrough=True)
