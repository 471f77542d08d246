"""The header line: the session, where the gateway listens (``serve --tui``), the role at
work and the model serving it, the run's state, and the session's spend against its cap."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from app.tui.safe import clean_line
from app.tui.widgets.pane import style_of

RUNTIME_LABEL = {
    "vllm": "vLLM",
    "llamacpp_server": "llama.cpp server",
    "llamacpp_inprocess": "llama.cpp",
    "cloud": "cloud",
}

#: the states in which the role and model shown are at work (the others are at rest)
AT_WORK = frozenset({"running", "stopping", "awaiting approval"})


class SessionHeader(Widget):
    DEFAULT_CSS = """
    SessionHeader { height: 1; background: $panel; color: $foreground; }
    """

    session: reactive[str] = reactive("")
    role: reactive[str] = reactive("")
    model: reactive[str] = reactive("")
    runtime: reactive[str] = reactive("")
    #: the placeholder until the session is open (it opens after the first frame)
    state: reactive[str] = reactive("opening session…")
    spend: reactive[str] = reactive("")
    local_only: reactive[bool] = reactive(False)
    #: the human answered "deny all: stay local": every later escalation of the session is
    #: denied without asking, and nothing said so once the modal closed (a TUI audit)
    stays_local: reactive[bool] = reactive(False)
    #: what is happening inside the run (the stage, tokens streaming)
    activity: reactive[str] = reactive("")
    #: the model named is an approved cloud escalation whose call is out: "waiting for
    #: deepseek-reasoner @ cloud" until its call line, its first token or the next stage
    waiting: reactive[bool] = reactive(False)
    #: where the hosted gateway listens (``http://127.0.0.1:4000``); empty: no gateway
    address: reactive[str] = reactive("")

    def render(self) -> Table:
        variables = self.app.theme_variables
        dim = style_of(variables.get("dim-text", ""))
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        text.append(" Switchyard ", style_of(variables.get("primary", ""), bold=True))
        text.append("─ ", dim)
        # the state and LOCAL-ONLY first: the line is cut at its end on a narrow terminal,
        # and they were last ("awai…" at 120 columns under serve --tui)
        text.append(self.state, style_of(variables.get(_STATE_COLOUR.get(self.state, ""), "")))
        if self.local_only:
            text.append(" LOCAL-ONLY", style_of(variables.get("warning", ""), bold=True))
        elif self.stays_local:
            text.append(" STAYING LOCAL", style_of(variables.get("warning", ""), bold=True))
        if self.address:
            # before the session: at 80 columns the address was cut to "http://…", and
            # with --port 0 the port was nowhere on screen once the toast went (a TUI audit)
            text.append(" · ", dim)
            text.append("gateway ", dim)
            text.append(self.address, style_of(variables.get("primary", ""), bold=True))
        text.append(" · ", dim)
        text.append(f"session {self.session or '…'}")
        at_work = self.state in AT_WORK
        if self.role:
            text.append(" · ", dim)
            if at_work:
                text.append(self.role, style_of(variables.get("accent", ""), bold=True))
            else:
                # once the run is over the role that worked last is no role at work (it
                # stayed bright after merge_ready, as if the implementer still were)
                text.append(f"last: {self.role}", dim)
        if self.model:
            where = RUNTIME_LABEL.get(self.runtime, self.runtime)
            text.append(" · ", dim)
            waiting = "waiting for " if self.waiting and at_work else ""
            text.append(
                f"{waiting}{self.model}{' @ ' + where if where else ''}", None if at_work else dim
            )
        if self.activity and at_work:
            text.append(f" · {self.activity}", dim)
        grid = Table.grid(expand=True)
        grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        grid.add_column(justify="right", no_wrap=True)
        # model names and the activity come from outside: one line, shown as they are
        grid.add_row(clean_line(text), Text(f" {self.spend} ", style=style_of("", bold=True)))
        return grid


_STATE_COLOUR = {
    "running": "step-active",
    "stopping": "budget-warn",
    "awaiting approval": "audit-escalation",
    "listening": "step-done",
    "merge_ready": "step-done",
    "merged": "step-done",
    "failed": "step-failed",
    "stopped": "budget-warn",
    "error": "step-failed",
}
