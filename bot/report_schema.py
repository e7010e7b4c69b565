"""The declared shape of the report guidance flow (knowledge/_report.yaml) and its checks.

The flow is a table of states (questions and endings) plus one row per scenario saying which
questions it asks and what advice, evidence checklist and letters it gives. Pydantic models
forbid unknown keys; `load_report_flow` turns every problem, including cross-references and
any number or web address outside the official whitelist, into
`_report.yaml: <state or scenario id>: <field>: <problem>` lines like the rest of the content.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from bot.schema import Identifier, Text, explain
from bot.yaml_loader import SAFE_LOADER

REPORT_FILE = "_report.yaml"
NO_ID = "-"

Label = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=16)]
Condition = dict[Identifier, list[Identifier]]
"""Question id → the option ids for which something applies; all must hold; {} = always."""

# Any run of three or more digits is a phone number or code: it must be whitelisted.
_DIGITS = re.compile(r"[0-9][0-9-]{1,}[0-9]")
_WEB_ADDRESS = re.compile(r"https?://|www\.|[a-z0-9-]+\.(?:cn|com|net|org|gov)\b", re.IGNORECASE)


class Strict(BaseModel):
    # As in bot.schema; declared here too so that linters see these are pydantic models.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Item(Strict):
    """One line of advice or of a checklist, shown when `when` holds for the user's choices."""

    text: Text
    when: Condition = {}
    urgent: bool = False
    """Shown at once, before the remaining questions, as soon as it applies (e.g. call 110)."""


class Option(Strict):
    """One answer to a question: a button, a numbered line, or words found in a message."""

    id: Identifier
    label: Label
    keywords: list[Text] = []
    """Words in a message that give this answer (the longest match wins; ties are asked)."""
    emergency: bool = False
    """Choosing it means danger now: the 110 instruction at once, and the flow ends."""


class Question(Strict):
    id: Identifier
    kind: Literal["question"]
    ask: Text
    options: list[Option] = Field(min_length=2, max_length=12)


class PlanEnd(Strict):
    """The ending that builds the personal 报案准备清单 from the user's choices."""

    id: Identifier
    kind: Literal["plan"]
    heading: Text
    situation: Text
    steps_heading: Text
    evidence_heading: Text
    bring_heading: Text
    bring: list[Item] = Field(min_length=1)
    """What to bring to the police station, when the scenario involves the police."""
    notes: list[Item] = []
    warning: Text
    """The recovery-scam warning (追款 / 代理报案 / 退款), on every plan."""
    footer: Text


class LetterEnd(Strict):
    """The ending that gives a PIPL request letter chosen by `chooser`'s answer."""

    id: Identifier
    kind: Literal["letter"]
    chooser: Identifier
    """The question whose option ids name the letters."""
    intro: Text
    after: Text


class EmergencyEnd(Strict):
    """Reached from any point by an emergency phrase or an emergency option."""

    id: Identifier
    kind: Literal["emergency"]
    text: Text
    phrases: list[Text] = Field(min_length=1)
    resume_label: Label


class LeaveEnd(Strict):
    """Reached from any point by 取消 / 退出 / 返回."""

    id: Identifier
    kind: Literal["left"]
    text: Text


State = Annotated[
    Question | PlanEnd | LetterEnd | EmergencyEnd | LeaveEnd, Field(discriminator="kind")
]


class Scenario(Strict):
    """One answer to the first question, and everything the flow says for it."""

    id: Identifier
    questions: list[Identifier] = []
    """The questions asked after the first one, in order (those already answered are skipped)."""
    asks: dict[Identifier, Text] = {}
    """This scenario's own wording for some of its questions."""
    end: Identifier
    steps: list[Item] = []
    """What to do, in order; the first that applies is the first action."""
    evidence: list[Item] = []
    police: Condition | None = None
    """When to add what to bring to the police station; {} = always, absent = never."""
    letters: list[Identifier] = []
    related: list[Identifier] = []
    """Knowledge entries offered as buttons with the plan."""


class Letter(Strict):
    """A request under PIPL with 【blanks】 the user fills in on their own device."""

    id: Identifier
    button: Label
    template: Text


class FlowTexts(Strict):
    intro: Text
    understood: Text
    """Says which choices were read from the first message; `{situation}` is replaced."""
    restarted: Text
    urgent_heading: Text
    not_understood: Text
    resume_hint: Text
    resume_label: Label
    cancel_label: Label
    restart_label: Label
    expired: Text


class Commands(Strict):
    """Whole messages that steer the flow (compared after normalisation)."""

    cancel: list[Text] = Field(min_length=1)
    restart: list[Text] = Field(min_length=1)
    resume: list[Text] = Field(min_length=1)


class Matching(Strict):
    negations: list[Text] = []
    """A keyword right after one of these (没, 不 …) does not count."""
    question_markers: list[Text] = []
    """A message containing one of these is a question to answer, not an answer to the flow."""
    max_answer_chars: int = Field(default=20, ge=2, le=200)
    """A longer message mid-flow is treated as a question, not as an answer."""


class ReportFlow(Strict):
    """knowledge/_report.yaml: the whole report guidance flow."""

    start: Identifier
    texts: FlowTexts
    commands: Commands
    matching: Matching
    states: list[State] = Field(min_length=1)
    scenarios: list[Scenario] = Field(min_length=1)
    letters: list[Letter] = []

    def state(self, state_id: str) -> State | None:
        return next((s for s in self.states if s.id == state_id), None)

    def question(self, question_id: str) -> Question | None:
        state = self.state(question_id)
        return state if isinstance(state, Question) else None

    def option(self, question_id: str, option_id: str) -> Option | None:
        question = self.question(question_id)
        return next((o for o in question.options if o.id == option_id), None) if question else None

    def scenario(self, scenario_id: str) -> Scenario | None:
        return next((s for s in self.scenarios if s.id == scenario_id), None)

    def letter(self, letter_id: str) -> Letter | None:
        return next((x for x in self.letters if x.id == letter_id), None)


def load_report_flow(
    path: Path, official: Collection[str], entry_ids: Collection[str]
) -> tuple[ReportFlow | None, list[str]]:
    """The validated flow, or None, with every problem found; (None, []) if there is no file."""
    if not path.exists():
        return None, []
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown place"
        return None, [f"{path.name}: {NO_ID}: -: YAML syntax error at {where}: {exc.problem}"]
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        return None, [f"{path.name}: {NO_ID}: -: unreadable: {exc}"]
    problems: list[str] = []
    flow: ReportFlow | None = None
    try:
        flow = ReportFlow.model_validate(raw)
    except ValidationError as exc:
        problems += _describe(raw, exc)
    if flow is not None:
        problems += _check_structure(flow, entry_ids)
    if official:  # without a whitelist (_bot.yaml broken, reported there) every number would fail
        problems += _check_texts(raw, official)
    return (None if problems else flow), [f"{path.name}: {p}" for p in problems]


def _owner(raw: Any, loc: list[Any]) -> tuple[str, list[Any]]:
    """The id of the state, scenario or letter a location is in, and the rest of the path."""
    if len(loc) >= 2 and isinstance(loc[1], int) and isinstance(raw, dict):
        items = raw.get(loc[0])
        item = items[loc[1]] if isinstance(items, list) and loc[1] < len(items) else None
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            return item["id"], loc[2:]
        return f"{loc[0]}#{loc[1] + 1}", loc[2:]
    return NO_ID, loc


def _describe(raw: Any, exc: ValidationError) -> Iterator[str]:
    for err in exc.errors():
        owner, loc = _owner(raw, list(err["loc"]))
        # The discriminated union adds the kind to the path: "question.ask" reads as "ask".
        if loc and loc[0] in ("question", "plan", "letter", "emergency", "left"):
            loc = loc[1:]
        field = ".".join(str(p) for p in loc) or "-"
        message = explain(err)
        yield f"{owner}: {field}: {message}"


def _check_structure(flow: ReportFlow, entry_ids: Collection[str]) -> list[str]:
    problems: list[str] = []
    for group in ("states", "scenarios", "letters"):
        seen: set[str] = set()
        for item in getattr(flow, group):
            if item.id in seen:
                problems.append(f"{item.id}: id: duplicate id in {group}")
            seen.add(item.id)
    for kind in (PlanEnd, EmergencyEnd, LeaveEnd):
        if sum(isinstance(s, kind) for s in flow.states) != 1:
            problems.append(f"{NO_ID}: states: need exactly one state of kind {kind.__name__}")
    first = flow.question(flow.start)
    if first is None:
        return [*problems, f"{NO_ID}: start: no question state with id {flow.start!r}"]
    options = {o.id for o in first.options}
    scenario_ids = {s.id for s in flow.scenarios}
    problems += [
        f"{flow.start}: options: no scenario for option {o!r}" for o in options - scenario_ids
    ]
    problems += [f"{s}: id: not an option of {flow.start!r}" for s in scenario_ids - options]
    asked: set[str] = set()
    for scenario in flow.scenarios:
        problems += _check_scenario(flow, scenario, entry_ids)
        asked.update(scenario.questions)
    for state in flow.states:
        if isinstance(state, Question) and state.id != flow.start and state.id not in asked:
            problems.append(f"{state.id}: id: no scenario asks this question")
        if isinstance(state, LetterEnd):
            chooser = flow.question(state.chooser)
            letter_ids = {x.id for x in flow.letters}
            if chooser is None:
                problems.append(f"{state.id}: chooser: no question with id {state.chooser!r}")
            else:
                problems += [
                    f"{state.id}: chooser: option {o.id!r} of {chooser.id!r} is not a letter"
                    for o in chooser.options
                    if o.id not in letter_ids
                ]
        if isinstance(state, PlanEnd):
            for name in ("bring", "notes"):
                for number, item in enumerate(getattr(state, name)):
                    problems += _check_condition(
                        flow, None, item.when, f"{state.id}: {name}.{number}"
                    )
    return problems


def _check_scenario(flow: ReportFlow, scenario: Scenario, entry_ids: Collection[str]) -> list[str]:
    sid = scenario.id
    problems: list[str] = []
    for question_id in scenario.questions:
        if flow.question(question_id) is None or question_id == flow.start:
            problems.append(f"{sid}: questions: no question state with id {question_id!r}")
    if len(set(scenario.questions)) != len(scenario.questions):
        problems.append(f"{sid}: questions: a question is listed twice")
    problems += [
        f"{sid}: asks: {q!r} is not one of this scenario's questions"
        for q in scenario.asks
        if q not in scenario.questions
    ]
    end = flow.state(scenario.end)
    if not isinstance(end, PlanEnd | LetterEnd):
        problems.append(f"{sid}: end: no plan or letter state with id {scenario.end!r}")
    elif isinstance(end, PlanEnd) and not scenario.steps:
        problems.append(f"{sid}: steps: a scenario that ends with a plan needs steps")
    elif isinstance(end, LetterEnd) and (
        not scenario.questions or scenario.questions[-1] != end.chooser
    ):
        problems.append(f"{sid}: questions: must end with {end.chooser!r}, which picks the letter")
    for name in ("steps", "evidence"):
        for number, item in enumerate(getattr(scenario, name)):
            problems += _check_condition(flow, scenario, item.when, f"{sid}: {name}.{number}")
    if scenario.police is not None:
        problems += _check_condition(flow, scenario, scenario.police, f"{sid}: police")
    letter_ids = {x.id for x in flow.letters}
    problems += [
        f"{sid}: letters: no letter with id {x!r}" for x in scenario.letters if x not in letter_ids
    ]
    problems += [
        f"{sid}: related: no entry with id {e!r}" for e in scenario.related if e not in entry_ids
    ]
    return problems


def _check_condition(
    flow: ReportFlow, scenario: Scenario | None, when: Condition, where: str
) -> list[str]:
    problems: list[str] = []
    for question_id, option_ids in when.items():
        question = flow.question(question_id)
        if question is None or (scenario is not None and question_id not in scenario.questions):
            problems.append(f"{where}.when: {question_id!r} is not a question asked here")
            continue
        known = {o.id for o in question.options}
        problems += [
            f"{where}.when: {question_id!r} has no option {o!r}"
            for o in option_ids
            if o not in known
        ]
    return problems


def _strings(value: Any, loc: list[Any]) -> Iterator[tuple[list[Any], str]]:
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, [*loc, key])
    elif isinstance(value, list):
        for number, item in enumerate(value):
            yield from _strings(item, [*loc, number])


def _check_texts(raw: Any, official: Collection[str]) -> list[str]:
    """Only whitelisted official numbers and no web address at all: they can be spoofed."""
    problems: list[str] = []
    for loc, text in _strings(raw, []):
        owner, rest = _owner(raw, loc)
        field = ".".join(str(p) for p in rest) or "-"
        problems += [
            f"{owner}: {field}: {number} is not a whitelisted official number"
            for number in _DIGITS.findall(text)
            if number not in official
        ]
        if _WEB_ADDRESS.search(text):
            problems.append(f"{owner}: {field}: no web addresses: give the way in (微信搜索…)")
    return problems
