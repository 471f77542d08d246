"""Tutor mode: a short coaching conversation with the ``tutor`` role, questions first.

The conversation, its turn cap and the held-back first answer live in the core
(:class:`app.pipeline.tutor.TutorSession`, one per conversation, kept by the app); this
screen shows the latest turn: "turn n/max", the questions, then the folded hint and
answer. When the cap is used up the input is disabled and says so; ``n`` starts a new
conversation. ``/escalate QUESTION`` is the learner's explicit request for the cloud
fallback (it asks for approval first).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Collapsible, Footer, Input, Static

from app.tui.core import CoreApp, TutorAnswered, WorkFailed
from app.tui.safe import clean, plain
from app.tui.widgets.pane import style_of

if TYPE_CHECKING:
    from app.pipeline.schemas import TutorTurn
    from app.pipeline.tutor import TutorReply

ESCALATE = "/escalate"
PLACEHOLDER = "ask the tutor a question, then enter  ·  /escalate QUESTION asks the cloud fallback"
#: the input's hint in fewer words, for a narrower screen (:func:`hint_for`)
HINTS = (
    PLACEHOLDER,
    "ask the tutor, then enter · /escalate QUESTION asks the cloud fallback",
    "ask, then enter · /escalate QUESTION: cloud fallback",
)
#: what the input's border and padding take of the screen's width (and the cursor)
INPUT_EDGES = 7


def hint_for(width: int) -> str:
    """The input's hint for a screen ``width`` columns wide: the longest that fits (at
    80 columns the whole one was cut at "…asks the cloud", a user-audit)."""
    return next((h for h in HINTS if len(h) <= width - INPUT_EDGES), HINTS[-1])


HELD = "answer (r): held back until you reply to the questions"


class TutorScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "back"),
        Binding("h", "fold('hint')", "hint"),
        Binding("r", "fold('answer')", "reveal answer"),
        # "ask" before the first question, "ask again" after it ("/ ask again" was
        # offered before anything was asked, a user audit)
        Binding("slash", "ask", "ask again"),
        Binding("slash", "ask_first", "ask"),
        Binding("n", "new", "new session"),
    ]

    def __init__(self) -> None:
        super().__init__(id="tutor")
        self.reply: TutorReply | None = None
        self.question = ""

    @property
    def core(self) -> CoreApp:
        return cast(CoreApp, self.app)

    @property
    def turn(self) -> TutorTurn | None:
        return self.reply.turn if self.reply is not None else None

    def compose(self) -> ComposeResult:
        yield Static(id="tutor-title")
        with VerticalScroll(id="tutor-body"):
            yield Static(id="tutor-question")
            yield Static(id="tutor-questions")
            with Collapsible(title="hint (h)", id="hint", collapsed=True):
                yield Static(id="tutor-hint")
            with Collapsible(title=HELD, id="answer"):
                yield Static(id="tutor-answer")
            yield Static(id="tutor-cap")
        yield Input(placeholder=PLACEHOLDER, id="tutor-input")
        yield Footer()

    def on_resize(self, event: events.Resize) -> None:
        # below 100 columns the footer drops its padding, as the main screen's does
        # (MainScreen.on_resize): at 80 it read "^q q▏^p palette" (a user-audit)
        self.query_one(Footer).compact = event.size.width < 100
        box = self.query_one("#tutor-input", Input)
        if not box.disabled:  # (disabled: it says the turns are used up)
            box.placeholder = hint_for(event.size.width)

    def on_mount(self) -> None:
        tutor = self.core.tutor
        asking = self.core.tutor_asking
        if asking is not None:  # back while it answers: the question, thinking
            self.question, self.reply = asking, None
        elif tutor is not None and tutor.last is not None:  # back to a conversation
            self.reply, self.question = tutor.last, tutor.last.question
        self._show(waiting=asking is not None)
        self.query_one("#tutor-input", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        escalate = text == ESCALATE or text.startswith(ESCALATE + " ")
        question = text.removeprefix(ESCALATE).strip() if escalate else text
        if not question:
            if escalate:
                self.notify("/escalate needs a question after it", severity="warning")
            return
        event.input.value = ""
        earlier = self.core.tutor_asking
        if earlier is not None:
            # one question at a time (the worker is exclusive): the one being answered is
            # dropped, its call cancelled, and that was done without a word (a TUI audit)
            shown = earlier if len(earlier) <= 40 else earlier[:39] + "…"
            self.notify(
                f"the question before ({shown}) was dropped, its call cancelled: asking this one",
                severity="warning",
                markup=False,
            )
        self.question = question
        self.reply = None
        self._show(waiting=True)
        self.core.ask_tutor(question, self, escalate)

    def on_tutor_answered(self, message: TutorAnswered) -> None:
        self.reply, self.question = message.reply, message.question
        self._show()
        box = self.query_one("#tutor-input", Input)
        if box.has_focus and box.value:
            # the user is typing the next question: keys stay text (focus moved to the
            # body made "n" start a new session and wipe the conversation mid-word)
            return
        self.query_one("#tutor-body").focus()  # so h, r and n work at once

    def on_work_failed(self, message: WorkFailed) -> None:
        if message.group == "tutor":
            self._show()
            self.query_one("#tutor-questions", Static).update(
                plain(f"the tutor could not answer: {message.text}", "bold")
            )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("ask", "ask_first"):
            # the cap used up, "/ ask again" did nothing from the footer (a TUI audit)
            tutor = self.core.tutor
            if tutor is not None and tutor.capped:
                return False
            asked = bool(self.question) or self.reply is not None
            return asked if action == "ask" else not asked
        return super().check_action(action, parameters)

    def action_ask_first(self) -> None:
        self.action_ask()

    def action_ask(self) -> None:
        box = self.query_one("#tutor-input", Input)
        if not box.disabled:
            box.focus()

    def action_new(self) -> None:
        if not self.core.new_tutor():
            return
        self.reply, self.question = None, ""
        self._show()
        self.query_one("#tutor-input", Input).focus()

    def action_fold(self, which: str) -> None:
        box = self.query_one(f"#{which}", Collapsible)
        if which == "answer" and self.reply is not None and self.reply.answer_withheld:
            tutor = self.core.tutor
            if tutor is not None:  # the learner asks for it: the core shows it from now on
                tutor.reveal()
                self.reply = tutor.last
            self._show()
            box.collapsed = False
            return
        box.collapsed = not box.collapsed

    # ── drawing ──────────────────────────────────────────────────────────────────────────

    def _counter(self) -> str:
        tutor = self.core.tutor
        cap = tutor.max_turns if tutor is not None else None
        used = tutor.turns_used if tutor is not None else 0
        if cap is None:
            return f"turn {used}" if used else "no turn yet"
        return f"turn {used}/{cap}" if used else f"no turn yet · {cap} allowed"

    def _show(self, waiting: bool = False) -> None:
        v = self.app.theme_variables
        dim = style_of(v.get("dim-text", ""))
        self.query_one("#tutor-title", Static).update(
            Text.assemble(
                (" Tutor ", style_of(v.get("primary", ""), bold=True)),
                ("─ asks questions first · routed as role tutor · ", dim),
                (self._counter(), style_of(v.get("accent", ""), bold=True)),
            )
        )
        q = self.query_one("#tutor-question", Static)
        q.update(
            Text.assemble(("you asked  ", dim), (clean(self.question), style_of("", bold=True)))
            if self.question
            else Text("ask about a concept, an error, the code in front of you…", style=dim)
        )
        self._show_cap()
        questions = self.query_one("#tutor-questions", Static)
        hint = self.query_one("#tutor-hint", Static)
        answer = self.query_one("#tutor-answer", Static)
        answer_box = self.query_one("#answer", Collapsible)
        reply = self.reply
        if reply is None:
            questions.update(Text("thinking…", style=dim) if waiting else "")
            hint.update("")
            answer.update("")
            answer_box.title = HELD
            return
        text = Text()
        text.append("first, think about these:\n", style_of(v.get("accent", ""), bold=True))
        for n, item in enumerate(reply.questions, 1):
            text.append(f" {n}. ", style_of(v.get("primary", ""), bold=True))
            text.append(f"{clean(item)}\n")
        if reply.escalate_requested:
            how = f"answered by {reply.model}" if reply.escalated else "it stayed local"
            if reply.stayed_local:
                how += f": {reply.stayed_local}"
            text.append(f"escalation requested: {how}\n", dim)
        questions.update(text)
        # the model's own words: plain text, never markup (app/shown.py)
        hint.update(plain(reply.hint) if reply.hint else Text("no hint this time", style=dim))
        self.query_one("#hint", Collapsible).collapsed = True
        if reply.answer_withheld:
            answer_box.title = HELD
            answer.update(Text("reply to the questions first, or press r", style=dim))
            answer_box.collapsed = True
        else:
            answer_box.title = "answer (r)"
            answer.update(
                plain(reply.answer)
                if reply.answer
                else Text("no answer: the tutor wants you to try", style=dim)
            )
            answer_box.collapsed = not reply.answer

    def _show_cap(self) -> None:
        tutor = self.core.tutor
        box = self.query_one("#tutor-input", Input)
        cap = self.query_one("#tutor-cap", Static)
        self.refresh_bindings()  # (the footer's "ask again" follows the cap)
        if tutor is not None and tutor.capped:
            box.disabled = True
            box.placeholder = "no turn left in this session: press n for a new one"
            cap.update(
                Text(
                    f"\nAll {tutor.max_turns} turns of this session are used: the policy keeps "
                    "tutor sessions short (roles.tutor.max_turns). Press n to start a new "
                    "session.",
                    style=style_of(self.app.theme_variables.get("warning", ""), bold=True),
                )
            )
        else:
            box.disabled = False
            box.placeholder = hint_for(self.size.width)
            cap.update("")
