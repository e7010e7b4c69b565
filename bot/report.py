"""Report guidance (报案助手): runs the flow declared in knowledge/_report.yaml.

A citizen is triaged with a few button questions (what happened, money, threats, evidence),
gets the first action for their scenario at once, and ends with a personal 报案准备清单 or a
PIPL request letter. The guide holds no state of its own: the engine stores the `state` it
returns, which holds only choices (a scenario id and option ids), never what the user typed.
All wording, options and advice live in the YAML; this module only walks the table.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field, replace
from typing import Any

from bot.content import Content
from bot.models import Button, Reply
from bot.replies import ENTRY, REPORT
from bot.report_schema import (
    Condition,
    EmergencyEnd,
    LeaveEnd,
    LetterEnd,
    Option,
    PlanEnd,
    Question,
    ReportFlow,
    Scenario,
)
from bot.text import Normalizer, display_clean

FLOW = "#flow:"
"""Payload prefix of the flow's own buttons: "#flow:<question>:<option>" or a command."""
RESUME, CANCEL, RESTART = "resume", "cancel", "restart"
UNAVAILABLE = "报案助手暂时不可用。紧急情况请立即拨打110。"
"""Said only when the knowledge folder has no _report.yaml (e.g. a test fixture)."""

Answers = dict[str, str]


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


@dataclass(frozen=True, slots=True)
class _Position:
    """Where a user is: their scenario (None before the first answer) and their choices."""

    scenario: Scenario | None
    answers: Answers


class ReportGuide:
    """Walks a citizen through reporting; holds no state of its own."""

    def __init__(self, content: Content) -> None:
        self.content = content
        self.flow: ReportFlow | None = content.report
        self._normalize = Normalizer(content.lexicon.replacements())
        if self.flow is None:
            return
        flow = self.flow
        self._commands = {
            self._normalize(word): name
            for name, words in (
                (CANCEL, flow.commands.cancel),
                (RESTART, flow.commands.restart),
                (RESUME, flow.commands.resume),
            )
            for word in words
        }
        self._negations = tuple(self._normalize(n) for n in flow.matching.negations)
        self._emergency_end: EmergencyEnd = next(
            s for s in flow.states if isinstance(s, EmergencyEnd)
        )
        self._phrases = [self._normalize(p) for p in self._emergency_end.phrases]
        # The scenario that ends with a letter, and its question that picks the letter: plan
        # buttons open a letter directly with "#report:<scenario>:<question>=<letter>".
        letter_end = next((s for s in flow.states if isinstance(s, LetterEnd)), None)
        self._letter_chooser = letter_end.chooser if letter_end else ""
        self._letter_scenario = next(
            (s.id for s in flow.scenarios if letter_end and s.end == letter_end.id), None
        )
        self._keywords = {
            (state.id, option.id): [self._normalize(k) for k in option.keywords]
            for state in flow.states
            if isinstance(state, Question)
            for option in state.options
        }

    @property
    def _table(self) -> ReportFlow:
        """The flow, for the private methods: only reached when there is one."""
        assert self.flow is not None
        return self.flow

    # ------------------------------------------------------------------ the engine's interface

    def is_emergency(self, text: str) -> bool:
        """True when the message says that money or safety is at stake right now."""
        if self.flow is None or text.startswith("#"):
            return False
        normalized = self._normalize(text)
        return any(self._contains(normalized, phrase) for phrase in self._phrases)

    def emergency(self, scenario: str | None = None) -> list[Reply]:
        """The 110 instruction, with a button to prepare the report once the user is safe."""
        if self.flow is None:
            return [Reply(UNAVAILABLE)]
        end = self._emergency_end
        payload = REPORT + scenario if scenario else REPORT.rstrip(":")
        return [Reply(end.text.strip(), (Button(end.resume_label, payload),))]

    def start(self, scenario: str | None, text: str) -> FlowStep:
        """Begin the flow. `scenario` is "<scenario>" or "<scenario>:<question>=<option>,…"
        (choices carried by a button); `text` is the user's first message, read only to skip
        the questions it already answers."""
        if self.flow is None:
            return FlowStep([Reply(UNAVAILABLE)], None)
        scenario_id, _, carried = (scenario or "").partition(":")
        chosen = self.flow.scenario(scenario_id)
        if chosen is None and text:
            found = self._best_option(self._first_question(), self._normalize(text), True)
            chosen = self.flow.scenario(found.id) if found else None
        answers: Answers = {}
        if chosen is not None:
            answers = {**self._choices_in(chosen, text), **self._carried(chosen, carried)}
        header: list[str] = []
        if chosen is not None:
            situation = self._situation(chosen, answers)
            header.append(self.flow.texts.understood.replace("{situation}", situation))
        return self._advance(_Position(None, {}), _Position(chosen, answers), header, intro=True)

    def carry_choices(self, reply: Reply, text: str) -> Reply:
        """The reply with the choices its message makes clear added to its report buttons, so
        that "我刚转了钱被骗了" → [一步步帮我准备报案] skips the money question. Buttons carry
        option ids only, never the text."""
        if self.flow is None:
            return reply
        buttons = []
        for button in reply.buttons:
            chosen = self.flow.scenario(button.payload.removeprefix(REPORT))
            if button.payload.startswith(REPORT) and chosen is not None:
                choices = ",".join(f"{q}={o}" for q, o in self._choices_in(chosen, text).items())
                button = Button(
                    button.label, f"{button.payload}:{choices}" if choices else button.payload
                )
            buttons.append(button)
        return replace(reply, buttons=tuple(buttons))

    def step(self, state: dict[str, Any] | None, text: str) -> FlowStep:
        """Apply one message to the flow: an answer, a command, or something else to pass on."""
        flow = self.flow
        if flow is None:
            return FlowStep([Reply(UNAVAILABLE)], None)
        position = self._position(state)
        if position is None:
            return FlowStep([self._expired()], None)
        if text.startswith(FLOW):
            return self._on_payload(position, text.removeprefix(FLOW))
        normalized = self._normalize(text)
        command = self._commands.get(normalized)
        if command is not None:
            return self._on_command(position, command)
        question = self._current_question(position)
        if question is None:
            return FlowStep([self._expired()], None)
        if text.startswith("#") or display_clean(text).isdigit():
            # A stale button or a number that is not one of the options shown.
            return self._ask_again(position, question)
        option = self._typed_answer(question, text, normalized)
        if option is not None:
            return self._answer(position, question, option)
        hint = Reply(
            flow.texts.resume_hint,
            (
                Button(flow.texts.resume_label, FLOW + RESUME),
                Button(flow.texts.cancel_label, FLOW + CANCEL),
            ),
        )
        return FlowStep([hint], self._state(position), passthrough=True)

    # ------------------------------------------------------------------ moving through the table

    def _on_payload(self, position: _Position, payload: str) -> FlowStep:
        if payload in (RESUME, CANCEL, RESTART):
            return self._on_command(position, payload)
        question = self._current_question(position)
        if question is None:
            return FlowStep([self._expired()], None)
        question_id, _, option_id = payload.partition(":")
        option = self._table.option(question_id, option_id) if question_id == question.id else None
        if option is None:
            return self._ask_again(position, question)
        return self._answer(position, question, option)

    def _on_command(self, position: _Position, command: str) -> FlowStep:
        if command == CANCEL:
            left = next(s for s in self._table.states if isinstance(s, LeaveEnd))
            return FlowStep([Reply(left.text.strip())], None)
        if command == RESTART:
            return self._advance(
                _Position(None, {}), _Position(None, {}), [self._table.texts.restarted]
            )
        return self._advance(position, position, [])

    def _answer(self, position: _Position, question: Question, option: Option) -> FlowStep:
        scenario_id = position.scenario.id if position.scenario else None
        if option.emergency:
            return FlowStep(self.emergency(scenario_id), None)
        if question.id == self._table.start:
            after = _Position(self._table.scenario(option.id), {})
        else:
            after = _Position(position.scenario, {**position.answers, question.id: option.id})
        return self._advance(position, after, [])

    def _advance(
        self, before: _Position, after: _Position, header: list[str], *, intro: bool = False
    ) -> FlowStep:
        """Replies for reaching `after`: urgent steps that now apply, then the next question or
        the ending. `header` lines open the first reply; `intro` adds the flow's introduction
        when a question follows."""
        replies: list[Reply] = []
        scenario = after.scenario
        urgent = [
            item.text
            for item in (scenario.steps if scenario else [])
            if item.urgent
            and _holds(item.when, after.answers)
            and not (before.scenario == scenario and _holds(item.when, before.answers))
        ]
        question = self._current_question(after)
        if question is None:
            header = []  # the flow ends here: nothing left to introduce or to correct
        elif intro:
            header = [self._table.texts.intro.strip(), *header]
        if header and urgent:
            replies.append(Reply("\n".join(header)))
            header = []
        if urgent:
            replies.append(Reply("\n".join([self._table.texts.urgent_heading, *urgent])))
        if question is not None:
            replies.append(self._question_reply(after, question, header))
            return FlowStep(replies, self._state(after))
        assert scenario is not None  # a position without a scenario always has a question
        end = self._table.state(scenario.end)
        if isinstance(end, LetterEnd):
            replies += self._letter(scenario, end, after.answers)
        elif isinstance(end, PlanEnd):
            replies.append(self._plan(scenario, end, after.answers))
        return FlowStep(replies, None)

    def _question_reply(self, position: _Position, question: Question, header: list[str]) -> Reply:
        scenario = position.scenario
        ask = scenario.asks.get(question.id, question.ask) if scenario else question.ask
        buttons = tuple(Button(o.label, f"{FLOW}{question.id}:{o.id}") for o in question.options)
        return Reply("\n\n".join([*header, ask]), buttons)

    def _ask_again(self, position: _Position, question: Question) -> FlowStep:
        return FlowStep(
            [self._question_reply(position, question, [self._table.texts.not_understood])],
            self._state(position),
        )

    # ------------------------------------------------------------------ endings

    def _plan(self, scenario: Scenario, plan: PlanEnd, answers: Answers) -> Reply:
        """The personal 报案准备清单: numbered actions, evidence and what to bring."""
        lines = [plan.heading, plan.situation + self._situation(scenario, answers)]
        number = 0
        sections = [
            (plan.steps_heading, scenario.steps),
            (plan.evidence_heading, scenario.evidence),
        ]
        if scenario.police is not None and _holds(scenario.police, answers):
            sections.append((plan.bring_heading, plan.bring))
        for heading, items in sections:
            shown = [item.text for item in items if _holds(item.when, answers)]
            if not shown:
                continue
            lines += ["", heading]
            for text in shown:
                number += 1
                lines.append(f"{number}. {text}")
        lines += [item.text for item in plan.notes if _holds(item.when, answers)]
        lines += ["", plan.warning.strip(), plan.footer.strip()]
        return Reply("\n".join(lines), self._end_buttons(scenario))

    def _letter(self, scenario: Scenario, end: LetterEnd, answers: Answers) -> list[Reply]:
        letter = self._table.letter(answers.get(end.chooser, ""))
        if letter is None:
            return [self._expired()]
        return [
            Reply(end.intro.strip()),
            Reply(letter.template.strip()),
            Reply(end.after.strip(), self._end_buttons(scenario)),
        ]

    def _end_buttons(self, scenario: Scenario) -> tuple[Button, ...]:
        buttons: list[Button] = []
        if self._letter_scenario:
            letter_choice = self._letter_chooser
            for letter_id in scenario.letters:
                letter = self._table.letter(letter_id)
                if letter is not None:
                    payload = f"{REPORT}{self._letter_scenario}:{letter_choice}={letter.id}"
                    buttons.append(Button(letter.button, payload))
        for entry_id in scenario.related:
            entry = self.content.entries.get(entry_id)
            if entry is not None:
                buttons.append(Button(entry.title, ENTRY + entry.id))
        buttons.append(Button(self._table.texts.restart_label, REPORT.rstrip(":")))
        return tuple(buttons)

    def _expired(self) -> Reply:
        button = Button(self._table.texts.restart_label, REPORT.rstrip(":"))
        return Reply(self._table.texts.expired.strip(), (button,))

    def _situation(self, scenario: Scenario, answers: Answers) -> str:
        """The user's choices as their button labels: "被骗了，钱被骗走 · 转了，就在今天"."""
        labels = [o.label for o in self._first_question().options if o.id == scenario.id]
        for question_id in scenario.questions:
            option = self._table.option(question_id, answers.get(question_id, ""))
            if option is not None:
                labels.append(option.label)
        return " · ".join(labels)

    # ------------------------------------------------------------------ state and matching

    def _state(self, position: _Position) -> dict[str, Any]:
        """Only choices: a scenario id and option ids, never anything the user typed."""
        state: dict[str, Any] = {"answers": dict(position.answers)}
        if position.scenario is not None:
            state["scenario"] = position.scenario.id
        return state

    def _position(self, state: dict[str, Any] | None) -> _Position | None:
        """The position a stored state describes, or None if it is gone or no longer valid
        (e.g. the flow file changed since it was stored)."""
        if not isinstance(state, dict) or not isinstance(state.get("answers"), dict):
            return None
        scenario_id = state.get("scenario")
        scenario = self._table.scenario(scenario_id) if isinstance(scenario_id, str) else None
        if scenario_id is not None and scenario is None:
            return None
        answers: Answers = state["answers"]
        for question_id, option_id in answers.items():
            if scenario is None or question_id not in scenario.questions:
                return None
            if not isinstance(option_id, str) or self._table.option(question_id, option_id) is None:
                return None
        return _Position(scenario, dict(answers))

    def _first_question(self) -> Question:
        question = self._table.question(self._table.start)
        assert question is not None  # the loader checks it
        return question

    def _current_question(self, position: _Position) -> Question | None:
        """The next unanswered question, or None when all are answered."""
        if position.scenario is None:
            return self._first_question()
        for question_id in position.scenario.questions:
            if question_id not in position.answers:
                question = self._table.question(question_id)
                assert question is not None
                return question
        return None

    def _choices_in(self, scenario: Scenario, text: str) -> Answers:
        """The scenario's questions that the text answers. An emergency answer is never guessed
        from words: the user must say it."""
        normalized = self._normalize(text) if text else ""
        choices: Answers = {}
        for question_id in scenario.questions if normalized else ():
            question = self._table.question(question_id)
            option = self._best_option(question, normalized, False) if question else None
            if option is not None:
                choices[question_id] = option.id
        return choices

    def _carried(self, scenario: Scenario, carried: str) -> Answers:
        """Choices carried by a button payload ("money=just_now,…"); invalid ones are ignored."""
        choices: Answers = {}
        for pair in filter(None, carried.split(",")):
            question_id, _, option_id = pair.partition("=")
            option = self._table.option(question_id, option_id)
            if question_id in scenario.questions and option is not None and not option.emergency:
                choices[question_id] = option.id
        return choices

    def _typed_answer(self, question: Question, text: str, normalized: str) -> Option | None:
        """An option the user typed: its label, or (in a short, non-question message) its
        keywords."""
        for option in question.options:
            if normalized == self._normalize(option.label):
                return option
        matching = self._table.matching
        plain = unicodedata.normalize("NFKC", text)
        if len(normalized) > matching.max_answer_chars or any(
            marker in plain for marker in matching.question_markers
        ):
            return None
        return self._best_option(question, normalized, True)

    def _best_option(
        self, question: Question, normalized: str, allow_emergency: bool
    ) -> Option | None:
        """The option whose longest keyword found in the message is longest; None on a tie."""
        best: Option | None = None
        best_length = 0
        tie = False
        for option in question.options:
            if option.emergency and not allow_emergency:
                continue
            keywords = self._keywords[question.id, option.id]
            length = max((len(k) for k in keywords if self._contains(normalized, k)), default=0)
            if length > best_length:
                best, best_length, tie = option, length, False
            elif length and length == best_length:
                tie = True
        return None if tie else best

    def _contains(self, normalized: str, phrase: str) -> bool:
        """The phrase occurs in the message, not right after a negation (没, 不 …)."""
        at = normalized.find(phrase)
        while phrase and at != -1:
            if not normalized[:at].endswith(self._negations):
                return True
            at = normalized.find(phrase, at + 1)
        return False


def _holds(when: Condition, answers: Answers) -> bool:
    """A condition holds when, for every question it names, the user chose one of its options."""
    return all(answers.get(question) in options for question, options in when.items())
