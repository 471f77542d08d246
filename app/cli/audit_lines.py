"""How the CLI shows an audit line: one colour per kind, a brief form and the full form.

Every command that prints audit lines goes through here, so a kind looks the same in
``ask``, ``run``, ``tutor``, ``librarian`` and ``audit tail``. Details are text, never
rich markup: a line says what happened, whatever characters a model put in it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from types import MappingProxyType
from typing import TYPE_CHECKING

from rich.text import Text

from app.audit.types import AUDIT_KINDS, AuditLine
from app.shown import clean

if TYPE_CHECKING:
    from rich.console import Console

# Same families of colour as the escalation pane: red stops, yellow degrades, green
# allows, magenta leaves (or speaks for) the cloud, cyan and blue are the routine record.
KIND_STYLES = MappingProxyType(
    {
        "route": "cyan",
        "runtime_fallback": "yellow",
        "escalation": "bold magenta",
        "check": "cyan",
        "skip": "dim",
        "approval": "green",
        "denial": "red",
        "refusal": "red",
        "budget_stop": "bold red",
        "budget": "blue",
        "degradation": "yellow",
        "local_only_refusal": "bold red",
        "retry": "yellow",
        "repair": "yellow",
        "call": "white",
        "consensus": "cyan",
        "verdict": "magenta",
        "merge": "bold green",
        "run": "bold",
        "synthesis": "cyan",
        "condense": "blue",
        "advice": "magenta",
        "tutor": "cyan",
        "request": "blue",
    }
)

#: the kind column is as wide as the longest kind, so the columns after it line up
KIND_WIDTH = max(len(kind) for kind in AUDIT_KINDS)


def kind_style(kind: str) -> str:
    """The rich style of ``kind``; a kind this map does not know is printed plain."""
    return KIND_STYLES.get(kind, "")


def summary(line: AuditLine) -> str:
    """What a short listing says about a line: its detail, else its reason codes."""
    # (one line, its breaks shown as ⏎: a model's words over several lines read as
    # several entries, and broke ``| grep``)
    return clean(line.detail, one_line=True) or " ".join(line.reason_codes)


def brief(line: AuditLine, *, prefix: str = "") -> Text:
    """``{prefix}#seq kind summary``, the kind coloured: the lines under a command's result."""
    text = Text(prefix)
    text.append(f"#{line.seq:<5} ")
    text.append(f"{line.kind:<{KIND_WIDTH}}", style=kind_style(line.kind))
    text.append(f" {summary(line)}")
    return text


def full(line: AuditLine) -> Text:
    """Seq, time, kind (coloured), role, from → to, reason codes, detail: ``audit tail``."""
    text = Text()
    text.append(f"{line.seq:>5} ", style="dim")
    text.append(line.ts[:19].replace("T", " ") + " ", style="dim")
    text.append(f"{line.kind:<{KIND_WIDTH}}", style=kind_style(line.kind))
    text.append(f" {line.role or '—'}", style="bold")
    if line.from_ or line.to:
        text.append(f"  {line.from_ or '—'} → {line.to or '—'}")
    if line.reason_codes:
        text.append("  [" + ", ".join(line.reason_codes) + "]", style="italic")
    if line.detail:
        text.append(f"  {clean(line.detail, one_line=True)}", style="dim")
    return text


def print_brief(
    out: Console,
    lines: Iterable[AuditLine],
    *,
    kinds: Collection[str] | None = None,
    prefix: str = "  ",
    style: str = "",
) -> None:
    """Print the lines (only those of ``kinds``, when given) in the brief form.

    ``style`` goes under the whole line, e.g. ``dim`` where the lines are an aside.
    """
    for line in lines:
        if kinds is None or line.kind in kinds:
            out.print(brief(line, prefix=prefix), style=style or None)
