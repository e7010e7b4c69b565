"""Versioned schemas: each backend lists its numbered migrations, and `schema_version` in the
database records which ones were applied (one row per version, with when).

A migration is applied once, in its own transaction together with its `schema_version` row,
so an interrupted `infoguard db migrate` leaves the database at the last complete version and
running it again goes on from there. Migrations only ever append: a released one is never
edited, a change is a new number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str
    """One or more statements; applied in one transaction."""


SCHEMA_VERSION_TABLE = "schema_version"


def check_sequence(migrations: Sequence[Migration]) -> None:
    """Migrations are numbered 1, 2, 3, … with no gap (a programming error otherwise)."""
    numbers = [m.version for m in migrations]
    if numbers != list(range(1, len(numbers) + 1)):
        raise AssertionError(f"migrations must be numbered 1..n, got {numbers}")


def pending(migrations: Sequence[Migration], applied: set[int]) -> list[Migration]:
    return [m for m in migrations if m.version not in applied]


def latest(migrations: Sequence[Migration]) -> int:
    return migrations[-1].version if migrations else 0
