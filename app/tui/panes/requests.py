"""Requests: every request the hosted gateway serves, live (``switchyard serve --tui``).

One row per request: when it came, its status, the model id asked and the role it named,
the model that served it, tokens in → out, latency, cost, what happened to its
escalation, and the client (its User-Agent's product, and Claude Code's session). The
model is :attr:`RequestsPane.rows`, keyed by the gateway's request id (``gw-…``, the run
id of its audit lines).

A row opens with the request's first audit line (so a request held for an approval shows
while it waits), follows its escalation, approval and denial lines, and is completed by
the gateway's :class:`~app.bus.RequestServed` (or by the closing audit line, for a client
that went away). The two sources may arrive in either order within a frame; a finished
row is never reopened.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Static

from app.bus import RequestServed
from app.tui.panes.budget import money
from app.tui.panes.escalations import clock_time
from app.tui.widgets.header import RUNTIME_LABEL
from app.tui.widgets.lineview import LineView
from app.tui.widgets.pane import Pane, style_of

#: (key, label, width) of the table's columns, left to right. Fixed widths: the columns
#: never jump while rows change, and together they fit a 160-column terminal; the client
#: takes what is left (and scrolls beyond).
COLUMNS: tuple[tuple[str, str, int | None], ...] = (
    ("time", "time", 8),
    ("status", "status", 6),
    ("asked", "model → role", 27),
    ("served", "served by", 25),
    ("tokens", "tokens", 14),
    ("latency", "latency", 7),
    ("cost", "cost", 6),
    ("approval", "escalation", 18),
    ("client", "client", None),
)
#: the table is drawn at most this often (the rows' model is always current)
REFRESH_S = 0.1
#: finished requests kept in the table (the oldest go first, DROP_BATCH at a time)
MAX_ROWS = 500
DROP_BATCH = 100
#: cells longer than these are cut (the row's model keeps the whole text)
ASKED_WIDTH = 13
CLIENT_WIDTH = 40

#: audit kind (and reason code) → what it says about the escalation step it names
_STEP_OF: dict[str, str] = {
    "escalation": "asks",
    "approval": "approved",
    "denial": "denied",
    "skip": "skipped",
    "budget_stop": "over budget",
    "local_only_refusal": "refused",
}
_STEP_MARK = {
    "asks": "?",
    "withdrawn": "–",
    "approved": "✓",
    "denied": "✗",
    "timed out": "✗",
    "skipped": "–",
    "failed": "!",
    "over budget": "$",
    "refused": "✗",
}
_STEP_COLOUR = {
    "asks": "audit-escalation",
    "withdrawn": "audit-skip",
    "approved": "audit-approval",
    "denied": "audit-denial",
    "timed out": "audit-denial",
    "skipped": "audit-skip",
    "failed": "audit-denial",
    "over budget": "audit-budget-stop",
    "refused": "audit-local-only-refusal",
}


@dataclass
class RequestRow:
    id: str
    ts: str = ""
    protocol: str = ""
    client: str = ""
    asked: str = ""
    role: str = ""
    #: where the router is sending it (the newest route/escalation target), while in flight
    target: str = ""
    #: the cloud steps it met, in order: [model, what happened] (see ``_STEP_OF``)
    steps: list[list[str]] = field(default_factory=list)
    #: None while in flight
    status: int | None = None
    outcome: str = ""
    model: str | None = None
    runtime: str | None = None
    escalated: bool = False
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    latency_ms: float | None = None

    @property
    def done(self) -> bool:
        return self.status is not None

    @property
    def held(self) -> bool:
        """Waiting on a human: its newest cloud step asks and nothing answered yet."""
        return not self.done and bool(self.steps) and self.steps[-1][1] == "asks"

    def hear(self, line: dict[str, Any]) -> None:
        """One of its audit lines."""
        kind = str(line.get("kind", ""))
        values: dict[str, Any] = line.get("values") or {}
        codes = line.get("reason_codes") or []
        to = str(line.get("to") or "")
        # its first line says when it came (a request refused before routing has one line)
        self.ts = self.ts or str(line.get("ts", ""))
        if kind == "request" and "GATEWAY_REQUEST" in codes:
            self.protocol = self.protocol or str(values.get("protocol", ""))
            self.asked = self.asked or str(values.get("model", ""))
            self.client = self.client or str(values.get("client", ""))
            self.role = self.role or str(line.get("role") or "")
        elif kind == "request":
            if not self.done:  # RequestServed, when it came first, said more
                self.status = int(values.get("status", 200))
                self.outcome = str(values.get("outcome", ""))
                self.model = values.get("model")
                self.runtime = values.get("runtime")
                self.escalated = bool(values.get("escalated"))
                self.tokens_in = int(values.get("tokens_in") or 0)
                self.tokens_out = int(values.get("tokens_out") or 0)
                self.cost_usd = float(values.get("cost_usd") or 0.0)
                latency = values.get("latency_ms")
                self.latency_ms = float(latency) if latency is not None else None
                self._ended()
        elif kind in _STEP_OF and to:
            model = to.partition("@")[0]
            what = (
                "timed out"
                if "APPROVAL_TIMEOUT" in codes
                # asked, and the request went away before anyone answered
                else "withdrawn"
                if "APPROVAL_CANCELLED" in codes
                # approved, then the call failed: it read "–", as a step with no key
                else "failed"
                if kind == "skip" and "SKIP_FAILED" in codes
                else _STEP_OF[kind]
            )
            if kind == "escalation":
                self.steps.append([model, what])
                self.target = to
            else:
                self._mark(model, what)
        elif kind in ("route", "runtime_fallback") and to:
            self.target = to
        elif kind == "call" and to:
            # a step approved for the session earlier is called without asking again
            self._mark(to.partition("@")[0], "approved", only="asks")

    def _mark(self, model: str, what: str, *, only: str | None = None) -> None:
        for step in reversed(self.steps):
            if step[0] == model:
                if only is None or step[1] == only:
                    step[1] = what
                return

    def finish(self, e: RequestServed) -> None:
        self.protocol = self.protocol or e.protocol
        self.client = self.client or e.client
        self.asked = self.asked or e.model_asked
        self.role = self.role or e.role
        self.status, self.outcome = e.status, e.outcome
        self.model, self.runtime, self.escalated = e.model, e.runtime, e.escalated
        self.tokens_in, self.tokens_out = e.tokens_in, e.tokens_out
        self.cost_usd, self.latency_ms = e.cost_usd, e.latency_ms
        if e.escalated and e.model:
            self._mark(e.model, "approved", only="asks")
        self._ended()

    def _ended(self) -> None:
        # an approval still asked when the request ended was never answered
        for step in self.steps:
            if step[1] == "asks":
                step[1] = "withdrawn"


def cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def short_client(client: str) -> str:
    """``codex_cli_rs/0.46.0 (Ubuntu 24.04; x86_64) xterm`` → ``codex_cli_rs/0.46.0`` (what
    comes before the first parenthesis); the gateway's ``(session ID)`` is kept, cut."""
    agent, _, session = client.partition(" (session ")
    name = agent.split(" (", 1)[0] or agent
    return f"{name} · {session.rstrip(')')[:6]}" if session else name


def escalation(row: RequestRow) -> tuple[str, str]:
    """What became of its cloud steps, short (``–✓ claude-opus-4-1 +1``: the first skipped,
    the second approved), naming the step approved if one was (the model that served),
    else the newest (the one asking, or the last refused), in that step's theme colour.
    The first step was named: a skipped one (no key, over budget) stood for the request."""
    if not row.steps:
        return "", ""
    marks = "".join(_STEP_MARK.get(what, "?") for _, what in row.steps)
    more = f" +{len(row.steps) - 1}" if len(row.steps) > 1 else ""
    approved = [step for step in row.steps if step[1] == "approved"]
    model, what = (approved or row.steps)[-1]
    return f"{marks} {model}{more}", _STEP_COLOUR[what]


def latency(ms: float | None) -> str:
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    for digits, below in ((2, 9.995), (1, 99.95), (0, 9999.5)):  # 7 columns at most
        if seconds < below:
            return f"{seconds:.{digits}f} s"
    return f"{seconds / 60:.0f} min"


def cells(row: RequestRow, v: dict[str, str]) -> dict[str, Text]:
    """The row's cells, by column key, in the theme's colours."""
    dim = style_of(v.get("dim-text", ""))
    if row.done:
        ok = row.status == 200
        colour = "step-done" if ok else "budget-warn" if row.status == 499 else "step-failed"
        status = Text(str(row.status), style=style_of(v.get(colour, ""), bold=True))
    elif row.held:
        status = Text("held", style=style_of(v.get("audit-escalation", ""), bold=True))
    else:
        status = Text("…", style=style_of(v.get("step-active", ""), bold=True))
    asked = Text(row.role, style=style_of(v.get("accent", ""), bold=True))
    if row.asked and row.asked != row.role:
        asked = Text.assemble((cut(row.asked, ASKED_WIDTH), ""), (" → ", dim), asked)
    if row.done and row.model:
        where = RUNTIME_LABEL.get(row.runtime or "", row.runtime or "")
        served = Text.assemble(("↑ " if row.escalated else "", ""), (row.model, ""))
        served.append(f" · {where}" if where else "", dim)
        if row.escalated:
            served.stylize(style_of(v.get("audit-escalation", "")), 0, len(row.model) + 2)
    elif row.done:
        served = Text(row.outcome, style=style_of(v.get("step-failed", "")))
    else:
        model, _, runtime = row.target.partition("@")
        where = f" · {RUNTIME_LABEL.get(runtime, runtime)}" if runtime else ""
        served = Text(f"→ {model}{where}" if model else "", style=dim)
    tokens = Text(f"{row.tokens_in:,} → {row.tokens_out:,}" if row.done else "", justify="right")
    cost = Text(money(row.cost_usd) if row.done else "", justify="right")
    if not row.cost_usd:
        cost.stylize(dim)
    said, colour = escalation(row)
    return {
        "time": Text(clock_time(row.ts) if row.ts else "", style=dim),
        "status": status,
        "asked": asked,
        "served": served,
        "tokens": tokens,
        "latency": Text(latency(row.latency_ms), justify="right"),
        "cost": cost,
        "approval": Text(said, style=style_of(v.get(colour, ""))),
        "client": Text(cut(short_client(row.client), CLIENT_WIDTH), style=dim),
    }


#: between two columns
GAP = "  "


def row_line(row: RequestRow, v: dict[str, str]) -> Text:
    """The row as one line of the table: its cells cut or padded to their columns."""
    return _line(cells(row, v))


def head_line(v: dict[str, str]) -> Text:
    """The column labels, over the same widths."""
    style = style_of(v.get("dim-text", ""), bold=True)
    return _line({key: Text(label, style=style) for key, label, _ in COLUMNS})


def _line(by_key: dict[str, Text]) -> Text:
    out = Text(no_wrap=True, overflow="ignore")
    for i, (key, _, width) in enumerate(COLUMNS):
        cell = by_key[key].copy()
        if width is not None:
            cell.truncate(width, overflow="ellipsis")
            pad = width - cell.cell_len
            if pad > 0:
                if cell.justify == "right":
                    cell.pad_left(pad)
                else:
                    cell.pad_right(pad)
        if i:
            out.append(GAP)
        out.append_text(cell)
    return out


class RequestsPane(Pane):
    """The table is a :class:`LineView` of one pre-rendered line per request: a change
    redraws that row's line only, at most every :data:`REFRESH_S`, and the view holds the
    newest :data:`MAX_ROWS` finished requests (and every one in flight). The gateway
    serves from this app's event loop; a Textual ``DataTable`` redrawn on every request,
    growing without end, cost the requests it was showing (``serve --tui``, 3,000 requests:
    p99 224-370 ms, the screen's update 49 ms at p50 and up to 436 ms). The counts in the
    title cover every request."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        #: the requests shown (the newest finished ones and all in flight), by gateway
        #: request id, in the order they came
        self.rows: dict[str, RequestRow] = {}
        #: each shown row's line in the view
        self._index: dict[str, int] = {}
        #: rows changed since the view was last drawn (ids, in order)
        self._dirty: dict[str, None] = {}
        #: rows dropped since the view was last drawn (their lines go at the next draw)
        self._gone: list[str] = []
        #: a draw is scheduled
        self._scheduled = False
        self._last_flush = 0.0
        #: what the requests no longer shown add to the counts
        self._dropped: Counter[str] = Counter()

    DEFAULT_CSS = """
    RequestsPane #requests-head { text-wrap: nowrap; text-overflow: clip; }
    """

    def compose(self) -> ComposeResult:
        yield Static(id="requests-head")
        yield LineView(id="requests-lines")

    def on_mount(self) -> None:
        super().on_mount()
        # the labels move with the rows when they scroll sideways (under 160 columns the
        # last ones are off screen): the header wrapped, and stood still over moved rows
        self.watch(self.view, "scroll_x", self._draw_head, init=False)

    def _draw_head(self, scroll_x: float = 0.0) -> None:
        head = head_line(self.app.theme_variables)
        x = int(scroll_x)
        self.query_one("#requests-head", Static).update(head.divide([x])[-1] if x else head)

    @property
    def view(self) -> LineView:
        return self.query_one("#requests-lines", LineView)

    @property
    def pending(self) -> bool:
        """Changes wait for the next draw of the view."""
        return bool(self._dirty or self._gone) or self._scheduled

    def shown(self, rid: str) -> str | None:
        """The text of ``rid``'s line as the view has it (None when not shown)."""
        i = self._index.get(rid)
        return None if i is None else self.view.lines[i].plain

    def add_audit(self, lines: list[dict[str, Any]]) -> None:
        changed: list[RequestRow] = []
        for line in lines:
            run = str(line.get("run") or "")
            if not run.startswith("gw-"):
                continue
            row = self.rows.get(run)
            if row is None:
                row = self.rows[run] = RequestRow(run)
            row.hear(line)
            changed.append(row)
        self._show(changed)

    def served(self, events: list[RequestServed]) -> None:
        changed: list[RequestRow] = []
        for e in events:
            row = self.rows.get(e.request)
            if row is None:
                row = self.rows[e.request] = RequestRow(e.request)
            row.finish(e)
            changed.append(row)
        self._show(changed)

    def _show(self, changed: list[RequestRow]) -> None:
        for row in changed:
            self._dirty[row.id] = None
        self._drop_oldest()
        if not self.is_mounted:
            self._update_titles()
            return
        if not self._scheduled:
            # On a clock of its own: drawn with the bridge's frame instead, the view's
            # work joined the other panes' in one longer pause of the loop the gateway
            # serves from (bench.gateway_tui_bench, 3,000 requests, four runs each way:
            # p99 44-55 ms against 27-40 ms on its own clock).
            self._scheduled = True
            wait = self._last_flush + REFRESH_S - time.monotonic()
            if wait > 0:
                self.set_timer(wait, self._flush)
            else:  # the first change after a quiet spell shows at once
                self.call_later(self._flush)

    def _drop_oldest(self) -> None:
        """Keep the newest MAX_ROWS finished rows (rows in flight are never dropped); in
        batches, since each drop moves every line of the view."""
        if len(self.rows) <= MAX_ROWS + DROP_BATCH:
            return
        done = [rid for rid, row in self.rows.items() if row.done]
        if len(done) <= MAX_ROWS + DROP_BATCH:
            return
        for rid in done[: len(done) - MAX_ROWS]:
            row = self.rows.pop(rid)
            self._dropped.update(requests=1, escalated=row.escalated, failed=row.status != 200)
            self._dirty.pop(rid, None)
            self._gone.append(rid)

    def _flush(self) -> None:
        self._scheduled = False
        self._last_flush = time.monotonic()
        view, v = self.view, self.app.theme_variables
        if self._gone:
            # Their lines go; the others keep theirs (formatting the 500 kept rows again
            # was a 50-70 ms pause every DROP_BATCH requests under load).
            view.remove_lines(self._index.pop(rid) for rid in self._gone if rid in self._index)
            kept = sorted(self._index, key=self._index.__getitem__)
            self._index = {rid: i for i, rid in enumerate(kept)}
            self._gone.clear()
        dirty, self._dirty = list(self._dirty), {}
        new: list[Text] = []
        for rid in dirty:
            row = self.rows.get(rid)
            if row is None:
                continue
            i = self._index.get(rid)
            if i is None:
                self._index[rid] = view.line_count + len(new)
                new.append(row_line(row, v))
            else:
                view.replace(i, row_line(row, v))
        view.append(new)
        self._update_titles()

    def redraw(self) -> None:
        """Every shown row drawn again (the first mount, a theme change)."""
        self._dirty.clear()
        self._gone.clear()
        v = self.app.theme_variables
        self._draw_head(self.view.scroll_x if self.is_mounted else 0.0)
        self._index = {rid: i for i, rid in enumerate(self.rows)}
        self.view.set_lines(row_line(row, v) for row in self.rows.values())
        self._update_titles()

    def counts(self) -> dict[str, int]:
        """Every request this pane has seen, those no longer shown included."""
        rows = list(self.rows.values())
        gone = self._dropped
        return {
            "requests": len(rows) + gone["requests"],
            "in_flight": sum(not r.done for r in rows),
            "held": sum(r.held for r in rows),
            "escalated": sum(r.escalated for r in rows) + gone["escalated"],
            "failed": sum(r.done and r.status != 200 for r in rows) + gone["failed"],
        }

    def _update_titles(self) -> None:
        c = self.counts()
        n = c["requests"]
        parts = [f"{n} request{'s' if n != 1 else ''}" if n else "no requests yet"]
        parts += [f"{c['in_flight']} in flight"] if c["in_flight"] else []
        parts += [f"{c['held']} held for approval"] if c["held"] else []
        parts += [f"{c['escalated']} to the cloud"] if c["escalated"] else []
        parts += [f"{c['failed']} failed"] if c["failed"] else []
        self.set_titles("Requests", " · ".join(parts))
