"""Text from outside the program, made safe for a terminal: model replies, test output,
audit details, a gateway client's name, what the user typed. The workbench (app/tui/safe.py
adds what Textual needs) and the CLI's console (app/cli/common.py) draw through it.

Drawn as it came, such text reached the terminal as it was. A newline in a one-line view
moved the cursor (the demo's escalations pane wrote an audit detail's second line,
"edit 1 (parser.py): …", over the tests pane's border); an ESC began an escape sequence
of the text's choosing (colours, the window title, OSC 52 writing the clipboard), which
could also dress up what the approval modal shows. And a string handed to Textual as
markup ran its tags (``[@click=app.quit]`` became a link that quits) or raised
``MarkupError`` on a stray ``[/x]``, which ended the app (typing ``[/x]`` into the
escalations filter did).

The CLI printed the same text the same way: an ESC in an audit detail reached the
terminal from ``switchyard audit tail`` or ``run``'s progress.

So every such string is drawn as plain text, with each control character shown as its
Unicode control picture (ESC as ␛, a newline in a one-line view as ⏎): one character
for one, so a ``Text``'s styled spans stay where they were.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Rich only where a Text is made: the CLI imports this at start-up
    from rich.style import Style
    from rich.text import Text

#: C0 controls as control pictures (␀…␟), DEL as ␡, C1 controls as the replacement
#: character (there are no pictures for them); tabs are left to Rich's tab expansion
_BLOCK: dict[int, int] = {c: 0x2400 + c for c in range(0x20) if c not in (0x09, 0x0A)}
_BLOCK[0x7F] = 0x2421
_BLOCK.update(dict.fromkeys(range(0x80, 0xA0), 0xFFFD))
#: in a one-line view a newline too is shown, not obeyed
NEWLINE = "⏎"
_LINE: dict[int, int] = {**_BLOCK, 0x0A: ord(NEWLINE), 0x09: 0x2409}

#: a view's row: its tabs are expanded after, from where each stands once shown
_ROW: dict[int, int] = {**_BLOCK, 0x0A: ord(NEWLINE)}

_BLOCK_HAZARD = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_LINE_HAZARD = re.compile("[\x00-\x1f\x7f-\x9f]")
_ROW_HAZARD = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def clean(text: str, *, one_line: bool = False) -> str:
    """``text`` with its control characters shown, not obeyed (newlines kept, as
    line breaks, unless ``one_line``); a Windows line end is a line end."""
    hazard = _LINE_HAZARD if one_line else _BLOCK_HAZARD
    if not hazard.search(text):
        return text
    return text.replace("\r\n", "\n").translate(_LINE if one_line else _BLOCK)


def clean_row(text: str) -> str:
    """``text`` (one row) with its control characters shown, a CR as ␍ too (a diff's
    CRLF line end is part of what changed), tabs kept for the caller to expand. For a
    string that is not yet a ``Text``: Rich's ``Text()`` drops CRs, BEL, BS, VT and FF."""
    return text.translate(_ROW) if _ROW_HAZARD.search(text) else text


def clean_line(line: Text) -> Text:
    """``line`` (one row) with its control characters shown, tabs kept for the caller to
    expand, in place: one character for one, so its spans keep their places."""
    return _in_place(line, _ROW_HAZARD, _ROW)


def clean_block(text: Text) -> Text:
    """``text`` (a block of lines, its newlines meant) with its other control characters
    shown, in place: one character for one, so its spans keep their places."""
    return _in_place(text, _BLOCK_HAZARD, _BLOCK)


def _in_place(text: Text, hazard: re.Pattern[str], table: dict[int, int]) -> Text:
    plain = text.plain
    if hazard.search(plain):
        text.plain = plain.translate(table)
    return text


def from_ansi(line: str, style: str | Style = "") -> Text:
    """One line of a program's output (tests, a build) as ``Text``: its SGR colours kept as
    styles, every other escape sequence dropped (Rich's ANSI decoder), and hyperlinks
    kept as text only. A runner forced to colour (``pytest --color=yes``) shows its colours;
    nothing in the line reaches the terminal as a sequence."""
    from rich.style import Style
    from rich.text import Span, Text

    text = Text.from_ansi(line, style=style, end="", no_wrap=True)
    text.spans = [
        Span(span.start, span.end, span.style.update_link(None))
        if isinstance(span.style, Style) and span.style.link
        else span
        for span in text.spans
    ]
    return text
