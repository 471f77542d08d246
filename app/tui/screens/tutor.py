"""Tutor mode: ask the ``tutor`` role a question; it answers with questions first.

The hint and the full answer stay folded until the learner opens them: the point is to
think before reading.
"""

from __future__ import annotations

from typing import ClassVar, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Collapsible, Footer, Input, Static

from app.pipeline.schemas import TutorTurn
from app.tui.core import CoreApp, TutorAnswered, WorkFailed
from app.tui.widgets.pane import style_of


class TutorScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "back"),
        Binding("h", "fold('hint')", "hint"),
        Binding("r", "fold('answer')", "reveal answer"),
        Binding("slash", "ask", "ask again"),
    ]

    def __init__(self) -> None:
        super().__init__(id="tutor")
        self.turn: TutorTurn | None = None
        self.question = ""

    @property
    def core(self) -> CoreApp:
        return cast(CoreApp, self.app)

    def compose(self) -> ComposeResult:
        yield Static(id="tutor-title")
        with VerticalScroll(id="tutor-body"):
            yield Static(id="tutor-question")
            yield Static(id="tutor-questions")
            with Collapsible(title="hint (h)", id="hint", collapsed=True):
                yield Static(id="tutor-hint")
            with Collapsible(title="answer (r): try the questions first", id="answer"):
                yield Static(id="tutor-answer")
        yield Input(placeholder="ask the tutor a question, then enter", id="tutor-input")
        yield Footer()

    def on_mount(self) -> None:
        v = self.app.theme_variables
        self.query_one("#tutor-title", Static).update(
            Text.assemble(
                (" Tutor ", style_of(v.get("primary", ""), bold=True)),
                ("─ asks questions first · routed as role tutor", style_of(v.get("dim-text", ""))),
            )
        )
        self._show()
        self.query_one("#tutor-input", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        question = event.value.strip()
        if not question:
            return
        event.input.value = ""
        self.question = question
        self.turn = None
        self._show(waiting=True)
        self.core.ask_tutor(question, self)

    def on_tutor_answered(self, message: TutorAnswered) -> None:
        self.question, self.turn = message.question, message.turn
        self._show()
        self.query_one("#tutor-body").focus()  # so h and r work at once

    def action_ask(self) -> None:
        self.query_one("#tutor-input", Input).focus()

    def on_work_failed(self, message: WorkFailed) -> None:
        if message.group == "tutor":
            self.query_one("#tutor-questions", Static).update(
                Text(f"the tutor could not answer: {message.text}", style="bold")
            )

    def action_fold(self, which: str) -> None:
        box = self.query_one(f"#{which}", Collapsible)
        box.collapsed = not box.collapsed

    def _show(self, waiting: bool = False) -> None:
        v = self.app.theme_variables
        dim = style_of(v.get("dim-text", ""))
        q = self.query_one("#tutor-question", Static)
        q.update(
            Text.assemble(("you asked  ", dim), (self.question, style_of("", bold=True)))
            if self.question
            else Text("ask about a concept, an error, the code in front of you…", style=dim)
        )
        questions = self.query_one("#tutor-questions", Static)
        hint = self.query_one("#tutor-hint", Static)
        answer = self.query_one("#tutor-answer", Static)
        turn = self.turn
        if turn is None:
            questions.update(Text("thinking…", style=dim) if waiting else "")
            hint.update("")
            answer.update("")
            return
        text = Text()
        text.append("first, think about these:\n", style_of(v.get("accent", ""), bold=True))
        for n, item in enumerate(turn.questions, 1):
            text.append(f" {n}. ", style_of(v.get("primary", ""), bold=True))
            text.append(f"{item}\n")
        questions.update(text)
        hint.update(turn.hint or Text("no hint this time", style=dim))
        answer.update(turn.answer or Text("no answer: the tutor wants you to try", style=dim))
        self.query_one("#hint", Collapsible).collapsed = True
        self.query_one("#answer", Collapsible).collapsed = True
