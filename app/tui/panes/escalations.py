"""Escalations: every audit line, live, coloured by kind, filterable by kind.

The pane's model is :attr:`EscalationsPane.lines`, every line received, in order; the
view shows the ones the filter lets through. The filter is a few words: a word keeps the
kinds it starts (``esc den`` → escalation, denial), ``-word`` drops them (``-call``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Input

from app.audit.kinds import AUDIT_KINDS
from app.tui.themes import audit_colour
from app.tui.widgets.lineview import LineView
from app.tui.widgets.pane import Pane, style_of

#: Short labels keep the detail column aligned in a narrow pane.
KIND_LABEL: dict[str, str] = {
    "route": "ROUTE",
    "runtime_fallback": "FALLBK",
    "escalation": "ESCAL",
    "check": "CHECK",
    "skip": "SKIP",
    "approval": "APPROVE",
    "denial": "DENY",
    "refusal": "REFUSE",
    "budget_stop": "BUDGET!",
    "budget": "BUDGET",
    "degradation": "DEGRADE",
    "local_only_refusal": "LOCAL!",
    "retry": "RETRY",
    "repair": "REPAIR",
    "call": "CALL",
    "consensus": "CONSENS",
    "verdict": "VERDICT",
    "merge": "MERGE",
    "run": "RUN",
    "request": "REQUEST",
}


def parse_filter(text: str) -> tuple[frozenset[str], frozenset[str]]:
    """``"esc den -call"`` → (kinds kept, kinds dropped). A word is a kind's prefix; a whole
    kind's name is that kind alone (``run`` is not also ``runtime_fallback``, ``budget``
    not also ``budget_stop``). Unknown words match nothing."""
    keep: set[str] = set()
    drop: set[str] = set()
    for word in text.replace(",", " ").lower().split():
        target = drop if word.startswith("-") else keep
        prefix = word.lstrip("-+")
        if prefix in AUDIT_KINDS:
            target.add(prefix)
        elif prefix:
            # a kind's name, or the label the pane shows for it (DENY, FALLBK, LOCAL!)
            found = {
                k
                for k in AUDIT_KINDS
                if k.startswith(prefix) or KIND_LABEL.get(k, "").lower().startswith(prefix)
            }
            # a word that names no kind keeps nothing (it kept everything: no filter)
            target.update(found or {f"?{prefix}"})
    return frozenset(keep), frozenset(drop)


def line_matches(line: dict[str, Any], keep: frozenset[str], drop: frozenset[str]) -> bool:
    kind = str(line.get("kind", ""))
    return (not keep or kind in keep) and kind not in drop


def clock_time(ts: str) -> str:
    """ISO UTC → local HH:MM:SS (the audit chain stores UTC)."""
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S")
    except ValueError:
        return ts[11:19]


_DECISION_WORD = {
    "allow_once": "approved once",
    "allow_session": "approved for the session",
    "deny": "denied",
    "deny_all": "denied: the session stays local",
}


def describe(line: dict[str, Any]) -> str:
    detail = str(line.get("detail") or "")
    values = line.get("values") or {}
    if line.get("kind") in ("approval", "denial") and "decision" in values:
        # The broker's detail is only the decider's reason; say what was decided, by whom.
        word = _DECISION_WORD.get(str(values["decision"]), str(values["decision"]))
        approver = (line.get("provenance") or {}).get("approver", "?")
        target = f"{values.get('model') or line.get('to')} ({values.get('provider', '?')})"
        return f"{word}: {target} by {approver}" + (f" · {detail}" if detail else "")
    if line.get("kind") == "escalation" and "USER_REQUEST" in (line.get("reason_codes") or []):
        # the user's own request (e, a +escalate model) comes first: cut at the pane's
        # width, the detail's list of reasons hid it, and the keypress seemed lost
        return "you asked · " + detail if detail else "you asked"
    if detail:
        return detail
    src, dst = line.get("from"), line.get("to")
    move = f"{src or ''} → {dst}" if dst else ""
    codes = " ".join(str(c) for c in line.get("reason_codes") or [])
    return " ".join(p for p in (move, codes) if p)


#: a pane narrower than this (its outer width) draws its lines compact: at 80 columns a
#: line showed its time, its kind and three letters of the role, and never what happened
#: (a TUI audit); the time and the rest of the role are in the zoomed pane and the log.
#: A whole line's time, kind and role take ~30 columns: below 56 that left what happened
#: fewer than a compact line gives it (48 wide at 80 columns: 14 against 31)
COMPACT_BELOW = 56
#: a role's letters in a compact line
ROLE_CHARS = 4


def format_line(line: dict[str, Any], variables: dict[str, str], compact: bool = False) -> Text:
    kind = str(line.get("kind", "?"))
    colour = audit_colour(variables, kind)
    dim = style_of(variables.get("dim-text", ""))
    text = Text(no_wrap=True, end="")
    if not compact:
        text.append(clock_time(str(line.get("ts", ""))), dim)
        text.append(" ")
    text.append(f"{KIND_LABEL.get(kind, kind.upper()[:7]):<8}", style_of(colour, bold=True))
    role = str(line.get("role") or "")
    if role:
        text.append(f"{role[:ROLE_CHARS] if compact else role} ", dim)
    text.append(describe(line), style_of(colour))
    return text


#: audit lines the pane keeps (the oldest go first, DROP_BATCH at a time)
MAX_LINES = 5000
DROP_BATCH = 1000


class EscalationsPane(Pane):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f", "filter", "filter"),
        Binding("escape", "close_filter", "close filter", show=False),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        #: the newest MAX_LINES audit lines received (the model); the view shows the
        #: filtered ones. A long-hosted gateway writes thousands an hour: kept whole, they
        #: made every full garbage collection longer (``switchyard audit tail`` has all).
        self.lines: list[dict[str, Any]] = []
        #: lines received and no longer kept
        self.dropped = 0
        self.filter_text = ""
        self._keep: frozenset[str] = frozenset()
        self._drop: frozenset[str] = frozenset()
        self._shown = 0
        #: the lines drawn without their time and with the role cut (a narrow pane)
        self.compact = False

    def compose(self) -> ComposeResult:
        yield LineView(id="audit-view")
        yield Input(
            placeholder="kinds, e.g. esc den -call (enter)",
            id="audit-filter",
            classes="pane-filter",
        )

    @property
    def view(self) -> LineView:
        return self.query_one("#audit-view", LineView)

    def add_lines(self, lines: list[dict[str, Any]]) -> None:
        before = len(self.lines)
        self.lines.extend(lines)
        if len(self.lines) > MAX_LINES + DROP_BATCH:
            cut = len(self.lines) - MAX_LINES
            # The view's lines of the cut ones go; the others keep theirs (formatting the
            # 5,000 kept again was a 0.3-0.5 s pause every DROP_BATCH lines under load).
            old = self.lines[: min(cut, before)]
            gone = sum(line_matches(ln, self._keep, self._drop) for ln in old)
            del self.lines[:cut]
            self.dropped += cut
            self._shown -= gone
            if self.is_mounted:
                self.view.remove_lines(range(gone))
            lines = lines[max(cut - before, 0) :]  # a batch larger than the pane keeps
        shown = [ln for ln in lines if line_matches(ln, self._keep, self._drop)]
        if shown and self.is_mounted:
            variables = self.app.theme_variables
            self.view.append(format_line(ln, variables, self.compact) for ln in shown)
        self._shown += len(shown)
        self._update_titles()

    def set_filter(self, text: str) -> None:
        self.filter_text = text.strip()
        self._keep, self._drop = parse_filter(self.filter_text)
        self.set_class(bool(self.filter_text), "-filtered")
        self.redraw()
        unknown = sorted(w[1:] for w in self._keep | self._drop if w.startswith("?"))
        if unknown:
            # "foo · 0/59 lines" said nothing of why (a user-audit)
            self.app.notify(
                f"{', '.join(unknown)}: no kind of line is named so "
                f"(the kinds: {', '.join(AUDIT_KINDS)})",
                severity="warning",
            )

    def shown_lines(self) -> list[dict[str, Any]]:
        return [ln for ln in self.lines if line_matches(ln, self._keep, self._drop)]

    def redraw(self) -> None:
        shown = self.shown_lines()
        self._shown = len(shown)
        variables = self.app.theme_variables
        self.view.set_lines(format_line(ln, variables, self.compact) for ln in shown)
        self._update_titles()

    def on_resize(self, event: events.Resize) -> None:
        compact = event.size.width < COMPACT_BELOW
        if compact != self.compact:  # (zoomed, the pane is wide again: the time comes back)
            self.compact = compact
            self.redraw()

    def _update_titles(self) -> None:
        count = f"{self._shown}/{len(self.lines)}" if self.filter_text else f"{len(self.lines)}"
        if self.dropped:
            count += f" newest of {len(self.lines) + self.dropped}"
        count += " line" if count == "1" else " lines"
        if not self.filter_text:
            self.set_titles("Escalations", count)
            return
        # A filter left on hid the lines of other kinds as they came, and "esc · 3/9
        # lines" said nothing of a filter: the title names it, the count of hidden lines
        # comes first (a narrow pane cuts its subtitle's end), both in the warning colour.
        hidden = len(self.lines) - self._shown
        self.set_titles(f"Escalations ── filter {self.filter_text}", f"{hidden} hidden · {count}")

    def action_filter(self) -> None:
        box = self.query_one("#audit-filter", Input)
        box.value = self.filter_text
        box.add_class("open")
        box.focus()

    def action_close_filter(self) -> None:
        box = self.query_one("#audit-filter", Input)
        if box.has_class("open"):
            box.remove_class("open")
            self.view.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "audit-filter":
            event.stop()
            self.set_filter(event.value)
            self.action_close_filter()
