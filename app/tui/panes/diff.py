"""Diff: the current attempt's unified diff, one file at a time (``[`` / ``]``), with the
code highlighted in its own language and added/removed lines tinted."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType

from app.tui.safe import clean_row
from app.tui.widgets.lineview import LineView
from app.tui.widgets.pane import Pane, style_of


@dataclass
class FileDiff:
    path: str
    header: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    @property
    def added(self) -> int:
        return sum(1 for ln in self.lines if ln.startswith("+"))

    @property
    def removed(self) -> int:
        return sum(1 for ln in self.lines if ln.startswith("-"))


def _path_of(line: str) -> str:
    name = line[4:].split("\t", 1)[0].strip()
    return name[2:] if name.startswith(("a/", "b/")) else name


def split_files(diff: str) -> list[FileDiff]:
    """A unified diff → one entry per file (``diff --git`` or bare ``---``/``+++`` pairs).

    Tolerant: a model's diff may lack the git header; text outside any file is kept as a
    file named "(not a unified diff)" so nothing is hidden. Lines end at ``\\n`` only, as
    git's do: ``splitlines`` also broke at a CR (and FF, VT, U+2028 …) and dropped the CR
    of a CRLF, so a change from LF to CRLF showed as two equal lines.
    """
    files: list[FileDiff] = []
    current: FileDiff | None = None
    lines = diff.removesuffix("\n").split("\n") if diff else []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("diff --git "):
            parts = line.split(" b/", 1)
            current = FileDiff(path=parts[1] if len(parts) == 2 else line[11:], header=[line])
            files.append(current)
        elif line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            old, new = _path_of(line), _path_of(lines[i + 1])
            path = new if new != "/dev/null" else old
            if current is None or current.lines:
                current = FileDiff(path=path)
                files.append(current)
            else:
                current.path = path
            current.header += [line, lines[i + 1]]
            i += 2
            continue
        elif current is None:
            current = FileDiff(path="(not a unified diff)")
            files.append(current)
            current.lines.append(line)
        elif line.startswith(("index ", "new file", "deleted file", "similarity", "rename ")) and (
            not current.lines
        ):
            current.header.append(line)
        else:
            current.lines.append(line)
        i += 1
    return files


def _lexer_for(path: str) -> str:
    from rich.syntax import Syntax

    return Syntax.guess_lexer(path, code="")  # "default" when nothing matches


def _without_background(text: Text) -> Text:
    """Syntax themes paint their own background; the pane's (and the +/- tint) must show."""
    plain = Text(text.plain, end="", no_wrap=True)
    for span in text.spans:
        style = span.style if isinstance(span.style, Style) else Style.parse(span.style)
        plain.stylize(
            Style(color=style.color, bold=style.bold, italic=style.italic), span.start, span.end
        )
    return plain


def render_file(f: FileDiff, variables: dict[str, str]) -> list[Text]:
    """Hunk lines highlighted as code (by the file's language) with +/- tints; control
    characters shown as pictures (a CRLF line end as ␍), one for one."""
    # Imported here: rich.syntax brings pygments (~14 ms), and the first frame shows no diff.
    from rich.syntax import Syntax

    # shown before they become Text: Text() drops a CR, and pygments reads one as a line
    # break, which moved every highlighted line below it onto the wrong row
    shown = [clean_row(ln) for ln in f.lines]
    code_lines = [ln[1:] if ln[:1] in "+- " else "" for ln in shown]
    syntax = Syntax(
        "\n".join(code_lines),
        _lexer_for(f.path),
        theme=variables.get("syntax-theme", "monokai"),
        background_color="default",
    )
    highlighted = [
        _without_background(t)
        for t in syntax.highlight("\n".join(code_lines)).split("\n", allow_blank=True)
    ]
    add = style_of(variables.get("diff-add-bg", ""), bg=True)
    delete = style_of(variables.get("diff-del-bg", ""), bg=True)
    hunk = style_of(variables.get("diff-hunk", ""), bold=True)
    file_style = style_of(variables.get("diff-file", ""), bold=True)
    out = [Text(f"{f.path}  +{f.added} −{f.removed}", style=file_style, end="")]
    for raw, code in zip(shown, highlighted, strict=False):
        tag = raw[:1]
        if raw.startswith("@@"):
            out.append(Text(raw, style=hunk, end=""))
            continue
        if tag not in "+- " or not raw:
            out.append(Text(raw, style=style_of(variables.get("dim-text", "")), end=""))
            continue
        line = Text(tag, end="", no_wrap=True)
        line.append_text(code)
        line.rstrip()
        line.expand_tabs()
        if tag == "+":
            line.stylize_before(add)
            line.pad_right(1)
        elif tag == "-":
            line.stylize_before(delete)
            line.pad_right(1)
        out.append(line)
    return out


class DiffPane(Pane):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left_square_bracket", "file(-1)", "prev file"),
        Binding("right_square_bracket", "file(1)", "next file"),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.attempt: int | None = None
        self.files: list[FileDiff] = []
        self.index = 0
        #: the run ended with no change landed ("no diff yet" said a diff might come)
        self.ended = False
        #: whether the run made an attempt before it ended (the empty pane says which)
        self.attempted = True

    def compose(self) -> ComposeResult:
        yield LineView(id="diff-view", follow=False)

    def show_diff(self, attempt: int, diff: str) -> None:
        keep = self.files[self.index].path if self.files else None
        self.attempt = attempt
        self.files = split_files(diff)
        paths = [f.path for f in self.files]
        self.index = paths.index(keep) if keep in paths else 0
        self.redraw()

    def reset(self) -> None:
        self.attempt, self.files, self.index, self.ended = None, [], 0, False
        self.attempted = True
        self.redraw()

    def finished(self, *, attempted: bool = True) -> None:
        """The run is over: a pane still empty says no attempt landed a change, or that
        none was made (it said "no attempt landed" of a run stopped at its plan)."""
        self.ended, self.attempted = True, attempted
        self.redraw()

    def action_file(self, step: int) -> None:
        if self.files:
            self.index = (self.index + step) % len(self.files)
            self.redraw()

    def redraw(self) -> None:
        view = self.query_one("#diff-view", LineView)
        if not self.files:
            self.set_titles("Diff")
            empty = "no diff yet"
            if self.ended:
                empty = (
                    "no attempt landed a change"
                    if self.attempted
                    else "the run ended before any attempt"
                )
            view.set_lines([Text(empty, style=Style(dim=True))])
            return
        f = self.files[self.index]
        self.set_titles(
            f"Diff ── attempt {self.attempt} · {f.path}",
            f"file {self.index + 1}/{len(self.files)} · [ ] to switch"
            if len(self.files) > 1
            else "1 file",
        )
        view.set_lines(render_file(f, self.app.theme_variables))
