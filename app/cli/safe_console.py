"""The CLI's console: Rich's, with text from outside shown rather than obeyed."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator

from rich.console import Console
from rich.segment import Segment

from app.shown import clean


class SafeConsole(Console):
    """Every text segment is cleaned as it is written (app/shown.py): an ESC, a bell or
    a lone carriage return in an audit detail, a model's reply or a path is shown (␛ ␇
    ␍), never sent to the terminal as such. Rich's own control segments (cursor moves)
    pass, and so do the styles it renders around the text."""

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        return super()._render_buffer(_shown(buffer))

    def on_broken_pipe(self) -> None:
        """The reader went away (``| head``): what is left goes nowhere, and main() ends
        as for any broken pipe (141, quietly). Rich's own answer is ``SystemExit(1)``, so
        a text command and its ``--json`` twin ended differently."""
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        raise BrokenPipeError


#: how wide a table may be drawn into a pipe or a file (its natural width, in practice)
PIPED_WIDTH = 1000


def piped_console(*, stderr: bool = False, highlight: bool = False) -> SafeConsole:
    """A :class:`SafeConsole` that folds long lines at a terminal's width only: into a
    pipe or a file (``| grep``, ``> out.txt``) a line stays one line, where Rich would
    fold it at 80 columns (a trigger's text, an audit line's detail cut in two), and a
    table is drawn as wide as its cells (at 80 columns a model id, a URL or a file name
    was cut in two: ``qwen3-14 b``). ``COLUMNS`` still sets the width when it is set."""
    out = SafeConsole(stderr=stderr, highlight=highlight)
    # the stream's own answer: Rich's is_terminal is also true under FORCE_COLOR (colours
    # into ``less -R``), where a pipe still wants its lines whole
    isatty = getattr(out.file, "isatty", None)
    piped = not (callable(isatty) and isatty())
    out.soft_wrap = piped
    if piped and not os.environ.get("COLUMNS"):
        out.width = PIPED_WIDTH
    return out


def _shown(buffer: Iterable[Segment]) -> Iterator[Segment]:
    for segment in buffer:
        if segment.control is None and segment.text:
            text = clean(segment.text)
            if text is not segment.text:
                yield Segment(text, segment.style)
                continue
        yield segment
