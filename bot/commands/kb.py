"""`infoguard kb check`, `kb eval`, `kb train` and `kb export`: validate, measure, train and
dump the content."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from bot.config import Settings
from bot.matching.calibrate import FOLDS
from bot.runtime import load

if TYPE_CHECKING:
    from bot.matching import Matcher


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kb = sub.add_parser("kb", help="check, measure, train or export the knowledge base")
    kb_sub = kb.add_subparsers(
        dest="kb_command", required=True, metavar="{check,eval,train,export}"
    )
    p = kb_sub.add_parser(
        "check",
        help="validate every knowledge and case file",
        description="Report every problem as 'file: entry id: field: problem'; exit 1 if any.",
    )
    p.set_defaults(func=_check)
    p = kb_sub.add_parser(
        "eval",
        help="cross-validated answer quality per entry; exit 1 under a budget",
        description=(
            "Hold out every example question once, predict it with a model trained on the "
            "rest, and report what the bot would do: per entry, the most confused pairs, the "
            "out-of-scope exemplars answered and the examples declined. The decision "
            "thresholds shown are the ones these figures chose. Exit 1 when a budget is missed."
        ),
    )
    p.add_argument(
        "--min-right",
        type=float,
        default=0.90,
        metavar="SHARE",
        help="least share of in-scope examples answered right (default 0.90)",
    )
    p.add_argument(
        "--max-wrong",
        type=float,
        default=0.03,
        metavar="SHARE",
        help="most share of in-scope examples answered wrong (default 0.03)",
    )
    p.add_argument(
        "--min-declined",
        type=float,
        default=0.90,
        metavar="SHARE",
        help="least share of out-of-scope exemplars declined (default 0.90)",
    )
    p.add_argument(
        "--show",
        type=int,
        default=15,
        metavar="N",
        help="list at most N entries, pairs and examples of each kind (default 15)",
    )
    p.set_defaults(func=_eval)
    p = kb_sub.add_parser(
        "train",
        help="train the matcher now, or find it already trained",
        description=(
            "Train and cache the matcher for this knowledge base (a minute or two after an "
            "edit; at once when it is cached). `serve --workers N` runs it before starting its "
            "workers, so that they load one model instead of each training its own."
        ),
    )
    p.set_defaults(func=_train)
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


def _trained(settings: Settings) -> Matcher:
    from bot.engine import Engine
    from bot.matching import Matcher

    content = load(settings)
    return Matcher(
        Engine._matchable_entries(content),
        content.lexicon,
        cache_dir=settings.cache_dir,
        progress=lambda line: print(line, file=sys.stderr),
    )


def _train(args: argparse.Namespace, settings: Settings) -> int:
    _trained(settings)
    return 0


def _eval(args: argparse.Namespace, settings: Settings) -> int:
    from bot.matching.evaluate import evaluate

    matcher = _trained(settings)
    report = evaluate(matcher)
    t = matcher.thresholds
    print(
        f"thresholds (chosen by {FOLDS}-fold cross-validation on this knowledge base): "
        f"answer ≥ {t.answer:.3f}, clarify ≥ {t.clarify:.3f}, "
        f"encoder skipped when the n-gram model is ≥ {t.skip_encoder:.3f} sure "
        f"({report.encoder_skipped:.0%} of examples)"
    )
    right, wrong = report.share("right"), report.share("wrong")
    clarified = report.share("clarified", "clarify_missed")
    declined = report.share("declined")
    print(
        f"in scope ({report.in_scope} examples): right {right:.1%}, wrong {wrong:.1%}, "
        f"clarify {clarified:.1%}, declined {report.share('missed'):.1%}"
    )
    print(f"out of scope ({report.out_of_scope} exemplars): declined {declined:.1%}")
    weakest = sorted(report.per_entry.items(), key=lambda kv: kv[1].right / kv[1].examples)
    print("\nweakest entries (right / examples):")
    for entry_id, figures in weakest[: args.show]:
        print(f"  {entry_id:28} {figures.right}/{figures.examples}")
    print("\nmost confused (entry → answered as):")
    for (truth, got), count in report.confused.most_common(args.show):
        print(f"  {truth} → {got}: {count}")
    print("\nout-of-scope exemplars that would be answered:")
    for text, got in report.oos_answered[: args.show]:
        print(f"  {text} → {got}")
    print("\nexamples that would get no answer:")
    for text, label in report.declined[: args.show]:
        print(f"  {text} ({label})")
    missed = [
        f"right {right:.1%} < {args.min_right:.0%}" if right < args.min_right else "",
        f"wrong {wrong:.1%} > {args.max_wrong:.0%}" if wrong > args.max_wrong else "",
        f"declined {declined:.1%} < {args.min_declined:.0%}"
        if declined < args.min_declined
        else "",
    ]
    missed = [m for m in missed if m]
    if missed:
        print(f"\nunder budget: {'; '.join(missed)}", file=sys.stderr)
        return 1
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
