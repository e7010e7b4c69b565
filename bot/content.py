"""Loads and validates the bundled content: knowledge entries, cases, lexicon and bot wording.

Every problem in every file is collected and reported at once, one per line, as
`file: entry id: field: problem`, so an editor can fix them all in one pass.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from bot.errors import ContentError
from bot.models import Button
from bot.report_schema import REPORT_FILE, ReportFlow, load_report_flow
from bot.schema import BotFile, BotTexts, Case, Entry, Lexicon, RedFlagFile, SmallTalk, explain

LEXICON_FILE = "_lexicon.yaml"
BOT_FILE = "_bot.yaml"
RED_FLAGS_FILE = "_red_flags.yaml"
MAX_ANSWER_CHARS = 450
"""An answer with its 法律依据 line, in characters other than spaces: one phone screen."""
MAX_LEAD_CHARS = 80
"""The first paragraph (the action): what shows before the user scrolls."""
NO_ID = "-"

# A run of digits that could be a phone number, not a count, amount, year or article.
_NUMBER_LIKE = re.compile(r"(?<![0-9.,])[0-9][0-9-]{2,}[0-9](?![0-9.,%万元条件人张年月日岁])")

# How an entry or case declares its id, for reading the ids of a file that did not parse.
_DECLARED_ID = re.compile(r"^\s*(?:-\s+)?id:\s*[\"']?([a-z][a-z0-9_]*)", re.MULTILINE)

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Content:
    """Everything the bot knows, validated."""

    entries: dict[str, Entry]
    cases: dict[str, Case]
    lexicon: Lexicon
    texts: BotTexts
    menu: tuple[Button, ...]
    official_numbers: frozenset[str]
    knowledge_dir: Path
    report: ReportFlow | None = None
    """The report guidance flow (_report.yaml); None when the folder has none."""
    red_flags: RedFlagFile | None = None
    """The "is this a scam?" table (_red_flags.yaml); None when the folder has none."""
    smalltalk: tuple[SmallTalk, ...] = ()


def load_content(knowledge_dir: Path, cases_dir: Path) -> Content:
    """Load and check all content; raise ContentError listing every problem found."""
    problems: list[str] = []
    entries: dict[str, Entry] = {}
    entry_files: dict[str, str] = {}
    # Ids in files or entries that did not parse: a reference to one is not reported as
    # missing, or one syntax error would bring a line for every reference into that file.
    unchecked: set[str] = set()
    if not knowledge_dir.is_dir():
        raise ContentError([_not_a_folder(knowledge_dir)])
    for path in sorted(knowledge_dir.glob("*.yaml")):
        if path.name.startswith("_"):
            continue
        for entry in _parse_entries(path, problems, unchecked):
            if entry.id in entries:
                problems.append(
                    f"{path.name}: {entry.id}: id: duplicate id, also in {entry_files[entry.id]}"
                )
                continue
            entries[entry.id] = entry
            entry_files[entry.id] = path.name

    lexicon = _parse(knowledge_dir / LEXICON_FILE, Lexicon, problems)
    bot_file = _parse(knowledge_dir / BOT_FILE, BotFile, problems)
    cases = _load_cases(cases_dir, problems, unchecked)
    official = frozenset(bot_file.official_numbers) if bot_file else frozenset()
    # Without a cases folder (reported above) no case reference can be checked.
    problems += _check_references(
        entries, entry_files, cases if cases_dir.is_dir() else None, unchecked
    )
    if bot_file:
        problems += _check_numbers(entries, entry_files, official)
    problems += _check_lengths(entries, entry_files)
    report, report_problems = load_report_flow(
        knowledge_dir / REPORT_FILE, official, entries.keys() | unchecked
    )
    problems += report_problems
    red_flags = _load_red_flags(knowledge_dir / RED_FLAGS_FILE, entries, official, problems)
    if problems or lexicon is None or bot_file is None:
        raise ContentError(problems)
    menu = tuple(Button(m.label, m.payload) for m in bot_file.menu)
    return Content(
        entries,
        cases,
        lexicon,
        bot_file.texts,
        menu,
        official,
        knowledge_dir,
        report,
        red_flags,
        tuple(bot_file.smalltalk),
    )


def _not_a_folder(folder: Path) -> str:
    why = "not a directory" if folder.exists() else "does not exist"
    return f"{folder}: {NO_ID}: -: {why}"


def _ids_in(path: Path) -> set[str]:
    """The ids a file that did not parse seems to declare, read as plain text."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return set()
    return set(_DECLARED_ID.findall(text))


def _load_cases(cases_dir: Path, problems: list[str], unchecked: set[str]) -> dict[str, Case]:
    cases: dict[str, Case] = {}
    if not cases_dir.is_dir():
        problems.append(_not_a_folder(cases_dir))
        return cases
    for path in sorted(cases_dir.glob("*.yaml")):
        case = _parse(path, Case, problems)
        if case is None:
            unchecked.add(path.stem)  # a case's id is its file name
            continue
        if case.id != path.stem:
            problems.append(f"{path.name}: {case.id}: id: must match the file name ({path.stem})")
        cases[case.id] = case
    return cases


def _read_yaml(path: Path, problems: list[str]) -> tuple[bool, Any]:
    try:
        return True, yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(f"{path.name}: {NO_ID}: -: file is missing")
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown place"
        problems.append(f"{path.name}: {NO_ID}: -: YAML syntax error at {where}: {exc.problem}")
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        problems.append(f"{path.name}: {NO_ID}: -: unreadable: {exc}")
    return False, None


def _parse(path: Path, model: type[M], problems: list[str]) -> M | None:
    ok, raw = _read_yaml(path, problems)
    if not ok:
        return None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_describe(path.name, raw, exc))
        return None


def _parse_entries(path: Path, problems: list[str], unchecked: set[str]) -> list[Entry]:
    """Each entry is validated on its own, so one bad entry does not hide the others; the ids
    of what did not parse go into `unchecked`."""
    ok, raw = _read_yaml(path, problems)
    if not ok:
        unchecked |= _ids_in(path)
        return []
    if not isinstance(raw, dict) or not isinstance(raw.get("entries"), list) or not raw["entries"]:
        problems.append(f"{path.name}: {NO_ID}: entries: must be a non-empty list of entries")
        unchecked |= _ids_in(path)
        return []
    problems += [f"{path.name}: {NO_ID}: {key}: unknown key" for key in raw if key != "entries"]
    entries: list[Entry] = []
    for number, item in enumerate(raw["entries"], 1):
        try:
            entries.append(Entry.model_validate(item))
        except ValidationError as exc:
            fallback = f"#{number}"
            problems.extend(_describe(path.name, item, exc, fallback))
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                unchecked.add(item["id"])
    return entries


def _describe(file: str, raw: Any, exc: ValidationError, fallback: str = NO_ID) -> Iterable[str]:
    owner = raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else None
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "-"
        message = explain(err)
        yield f"{file}: {owner or fallback}: {field}: {message}"


def _check_references(
    entries: dict[str, Entry],
    entry_files: dict[str, str],
    cases: dict[str, Case] | None,
    unchecked: set[str],
) -> list[str]:
    """References to ids that exist nowhere; ids in what did not parse (`unchecked`) may
    well exist and are not reported, nor are references to cases when `cases` is None."""
    problems: list[str] = []
    for entry in entries.values():
        file = entry_files[entry.id]
        problems += [
            f"{file}: {entry.id}: related: no entry with id {r!r}"
            for r in entry.related
            if r not in entries and r not in unchecked
        ]
        problems += [
            f"{file}: {entry.id}: cases: no case with id {c!r}"
            for c in entry.cases
            if cases is not None and c not in cases and c not in unchecked
        ]
    for case in (cases or {}).values():
        problems += [
            f"{case.id}.yaml: {case.id}: related: no entry with id {r!r}"
            for r in case.related
            if r not in entries and r not in unchecked
        ]
    return problems


def _check_numbers(
    entries: dict[str, Entry], entry_files: dict[str, str], official: frozenset[str]
) -> list[str]:
    """Only whitelisted official numbers may appear in an answer: never an invented one."""
    return [
        f"{entry_files[e.id]}: {e.id}: answer: {number} is not a whitelisted official number"
        for e in entries.values()
        for number in _NUMBER_LIKE.findall(e.answer)
        if number not in official and not re.fullmatch(r"(19|20)[0-9]{2}", number)
    ]


def legal_basis(entry: Entry) -> str:
    """The 法律依据 line rendered under an answer ("" when the entry cites nothing)."""
    if not entry.sources:
        return ""
    return "法律依据：" + "；".join(dict.fromkeys(s.cite() for s in entry.sources))


def _visible_chars(text: str) -> int:
    return len(re.sub(r"\s", "", text))


def _check_lengths(entries: dict[str, Entry], entry_files: dict[str, str]) -> list[str]:
    """One phone screen: the action first (a short first paragraph), the whole answer bounded."""
    problems: list[str] = []
    for e in entries.values():
        where = f"{entry_files[e.id]}: {e.id}: answer"
        total = _visible_chars(e.answer) + _visible_chars(legal_basis(e))
        if total > MAX_ANSWER_CHARS:
            problems.append(
                f"{where}: {total} characters with its 法律依据 line, over {MAX_ANSWER_CHARS}"
            )
        lead = _visible_chars(e.answer.strip().split("\n\n")[0])
        if lead > MAX_LEAD_CHARS:
            problems.append(
                f"{where}: first paragraph has {lead} characters, over {MAX_LEAD_CHARS}: "
                "put the action first, in a short paragraph"
            )
    return problems


def _load_red_flags(
    path: Path, entries: dict[str, Entry], official: frozenset[str], problems: list[str]
) -> RedFlagFile | None:
    """The red-flag table, if the folder has one; problems named by flag id and field."""
    if not path.exists():
        return None
    ok, raw = _read_yaml(path, problems)
    if not ok:
        return None
    try:
        table = RedFlagFile.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_describe_red_flags(path.name, raw, exc))
        return None
    file = path.name
    for entry_id in [table.check_entry, *table.fraud_entries]:
        if entry_id not in entries:
            problems.append(f"{file}: {NO_ID}: entries: no entry with id {entry_id!r}")
    ids = [f.id for f in table.flags]
    problems += [
        f"{file}: {i}: id: duplicate flag id" for i in dict.fromkeys(ids) if ids.count(i) > 1
    ]
    texts = [("-", "texts", t) for t in table.texts.model_dump().values()]
    texts += [(f.id, "explain", f.explain) for f in table.flags]
    texts += [(g.id, "explain", g.explain) for g in table.genuine]
    problems += [
        f"{file}: {owner}: {field}: {number} is not a whitelisted official number"
        for owner, field, text in texts
        for number in _NUMBER_LIKE.findall(text)
        if number not in official
    ]
    return table


def _describe_red_flags(file: str, raw: Any, exc: ValidationError) -> Iterable[str]:
    for err in exc.errors():
        loc = list(err["loc"])
        owner = NO_ID
        if len(loc) >= 2 and loc[0] in ("flags", "genuine") and isinstance(loc[1], int):
            items = raw.get(loc[0]) if isinstance(raw, dict) else None
            item = items[loc[1]] if isinstance(items, list) and loc[1] < len(items) else None
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                owner = item["id"]
                loc = loc[2:]
        field = ".".join(str(p) for p in loc) or "-"
        yield f"{file}: {owner}: {field}: {explain(err)}"
