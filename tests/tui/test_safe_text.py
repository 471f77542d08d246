"""Text from outside the app is drawn as it is, never obeyed: control characters shown as
control pictures, markup never read (app/tui/safe.py). Before, a newline in an audit
detail moved the terminal's cursor, an ESC began an escape sequence, and ``[/x]`` typed
into the escalations filter or written by a model ended the app with MarkupError."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from rich.style import Style
from rich.text import Text
from textual.app import App, ComposeResult
from textual.widgets import Static

from app.backends.base import Message
from app.pipeline.schemas import TutorTurn
from app.pipeline.structured import Answer
from app.pipeline.tutor import TutorSession
from app.router.types import Signals
from app.tui.panes.escalations import EscalationsPane
from app.tui.safe import NEWLINE, clean, clean_block, clean_line, clean_row, literal
from app.tui.widgets.lineview import LineView
from tests.tui.helpers import Messages, settle
from tests.tui.test_requests_pane import OnePane
from tests.tui.test_tutor import ask, open_tutor

HOSTILE = "ok\x1b[2J\x1b]52;c;cHduZWQ=\x07 [/bold] [@click=app.quit]quit[/]\r\nnext\x9b"


def controls(text: str) -> list[str]:
    """The characters a terminal would obey rather than show."""
    return [c for c in text if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0]


def test_clean_shows_every_control_character_and_keeps_line_breaks() -> None:
    out = clean(HOSTILE)
    assert controls(out) == ["\n"]  # the CR LF became one line break
    assert "ok␛[2J␛]52;c;cHduZWQ=␇ [/bold]" in out and out.endswith("next\ufffd")
    assert clean(HOSTILE, one_line=True).count(NEWLINE) == 1
    assert controls(clean(HOSTILE, one_line=True)) == []
    plain_text = "nothing to show: café, → and tabs\tstay"
    assert clean(plain_text) is plain_text  # no copy when there is nothing to do


def test_a_lines_spans_keep_their_places() -> None:
    line = Text("a\x1bb")
    line.append("\nred", style="red")
    clean_line(line)
    assert line.plain == f"a␛b{NEWLINE}red"
    assert [(s.start, s.end, str(s.style)) for s in line.spans] == [(3, 7, "red")]

    block = Text("one\x1b\ntwo")
    assert clean_block(block).plain == "one␛\ntwo"


def test_a_row_shows_its_cr_as_a_picture_and_keeps_its_tabs() -> None:
    """A diff's row as a string, before it becomes a ``Text`` (which drops a CR): its
    CRLF line end is part of what changed, so the CR is shown, not taken for a line end."""
    assert clean_row("+x = 1\r") == "+x = 1␍"
    out = clean_row(HOSTILE)
    assert controls(out) == [] and "[/bold]" in out and "␍" + NEWLINE + "next" in out
    assert clean_row("\tcode") == "\tcode"


def test_literal_is_one_line_of_escaped_markup() -> None:
    assert literal("[/x] a\nb") == f"\\[/x] a{NEWLINE}b"


class ViewHost(App[None]):
    def compose(self) -> ComposeResult:
        yield LineView()


async def test_a_view_draws_control_characters_as_pictures() -> None:
    app = ViewHost()
    async with app.run_test(size=(80, 6)) as pilot:
        view = app.query_one(LineView)
        view.append([Text("detail\nsecond line", end=""), Text(HOSTILE, style=Style(bold=True))])
        view.replace(0, Text("first\x1b[7m", end=""))
        view.replace_last(Text("last\x1b\tcol", end=""))
        await pilot.pause()
        rows = ["".join(seg.text for seg in view.render_line(y)) for y in range(2)]
        assert controls("".join(rows)) == []
        # the tab expanded from where it stood, then ESC shown (one cell for one)
        assert rows[0].startswith("first␛[7m") and rows[1].startswith("last␛   col")


async def test_markup_typed_into_the_escalations_filter_is_shown_not_read() -> None:
    pane = EscalationsPane()
    app = OnePane(pane)
    async with app.run_test(size=(100, 10)) as pilot:
        pane.add_lines([{"kind": "run", "ts": "", "detail": "attempt 3:\nedit 1\x1b[2J"}])
        pane.set_filter("[/x] run")
        await pilot.pause()
        assert app.is_running
        assert str(pane.border_title) == "Escalations ── filter \\[/x] run"
        assert str(pane.border_subtitle) == "0 hidden · 1/1 lines"
        drawn = "".join(seg.text for seg in pane.view.render_line(0))
        assert f"attempt 3:{NEWLINE}edit 1␛[2J" in drawn


async def test_a_models_tutor_reply_is_drawn_as_plain_text(make_app: Any) -> None:
    turn = TutorTurn(questions=[f"which? {HOSTILE}"], hint=HOSTILE, answer=HOSTILE)

    async def model(messages: list[Message], signals: Signals) -> Answer[TutorTurn]:
        return Answer(turn, None)

    def tutor(session: Any, repo: Path) -> TutorSession:
        return TutorSession(session.router, model=model)

    seen = Messages()
    app = make_app(task=None)
    app._tutor = partial(tutor)
    async with app.run_test(size=(160, 48), message_hook=seen) as pilot:
        await open_tutor(pilot)
        await ask(pilot, seen, "why?")
        await settle(pilot)
        assert app.is_running  # "[/bold]" raised MarkupError here
        for name in ("#tutor-hint", "#tutor-questions"):
            shown = str(app.screen.query_one(name, Static).render())
            assert "[/bold] [@click=app.quit]quit[/]" in shown, shown
            assert "␛[2J" in shown and controls(shown.replace("\n", "")) == []


async def test_a_notification_with_brackets_is_shown_not_read(make_app: Any) -> None:
    app = make_app(task=None)
    async with app.run_test(size=(120, 30)) as pilot:
        # (a toast lives 5 s by default: a busy machine could outlast it before the look)
        app.notify("cannot read [/x]: \x1b[2J", title="[b]x", timeout=60)
        await settle(pilot)
        assert app.is_running
        note = list(app._notifications)[-1]
        assert note.message == "cannot read [/x]: ␛[2J" and not note.markup
