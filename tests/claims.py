"""A stand-in for the push engine's `Claim`, for tests that drive a sender directly: it grants
every recipient (or those not refused) and records what was claimed and when."""

from __future__ import annotations

from collections.abc import Sequence


class Granted:
    def __init__(self, *, repeat: bool = False, refuse: Sequence[str] = ()) -> None:
        self.repeat = repeat
        self.refuse = set(refuse)
        self.claimed: list[str] = []

    async def __call__(self, recipients: Sequence[str]) -> list[str]:
        granted = [r for r in recipients if r not in self.refuse]
        self.claimed += granted
        return granted
