"""`infoguard kb check` and `infoguard kb export`: validate and dump the content."""

from __future__ import annotations

import argparse
import json
import sys

from bot.config import Settings
from bot.runtime import load


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kb = sub.add_parser("kb", help="check or export the knowledge base and cases")
    kb_sub = kb.add_subparsers(dest="kb_command", required=True, metavar="{check,export}")
    p = kb_sub.add_parser(
        "check",
        help="validate every knowledge and case file",
        description="Report every problem as 'file: entry id: field: problem'; exit 1 if any.",
    )
    p.set_defaults(func=_check)
    p = kb_sub.add_parser(
        "export",
        help="print the knowledge base and cases as JSON",
        description='Print {"entries": [...], "cases": [...]} on stdout.',
    )
    p.set_defaults(func=_export)


def _check(args: argparse.Namespace, settings: Settings) -> int:
    content = load(settings)
    print(
        f"ok: {len(content.entries)} entries, "
        f"{sum(len(e.questions) for e in content.entries.values())} example questions, "
        f"{len(content.cases)} cases",
        file=sys.stderr,
    )
    return 0


def _export(args: argparse.Namespace, settings: Settings) -> int:
    content = load(settings)
    data = {
        "entries": [e.model_dump(exclude_none=True) for e in content.entries.values()],
        "cases": [c.model_dump(exclude_none=True) for c in content.cases.values()],
    }
    json.dump(data, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")
    return 0
