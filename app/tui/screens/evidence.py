"""Evidence review: the runs of this repo, and one run's bundle: brief, plan, diffs, test
logs, the verdict with its citations, audit lines, costs and the manifest check.

``m`` merges, and only when the gate holds; otherwise the screen says why (and the
refused attempt is still audited by the merge function). ``1``…``8`` show a tab, ``]``
and ``[`` the next and the previous one, while the runs list keeps the focus.
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static, TabbedContent, TabPane
from textual.widgets.data_table import CellDoesNotExist, ColumnKey

from app.counted import counted
from app.evidence.bundle import RunInfo
from app.tui.core import CoreApp, MergeDone, MergeWaiting, RunLoaded, RunsListed, WorkFailed
from app.tui.evidence_data import MERGED, RunView
from app.tui.panes.diff import render_file, split_files
from app.tui.panes.escalations import format_line
from app.tui.panes.plan import render_plan
from app.tui.panes.tests import line_style_key
from app.tui.safe import clean_block, from_ansi, plain
from app.tui.screens.evidence_cost import cost_lines
from app.tui.widgets.lineview import LineView
from app.tui.widgets.pane import style_of

TABS = (
    ("brief", "Brief"),
    ("plan", "Plan"),
    ("diffs", "Diffs"),
    ("tests", "Tests"),
    ("verdict", "Verdict"),
    ("audit", "Audit"),
    ("cost", "Cost"),
    ("manifest", "Manifest"),
)


def _lines(text: str, style: str = "") -> list[Text]:
    return [Text(line, style=style, end="") for line in text.splitlines()]


def risk(high_risk: bool, *, classified: bool) -> str:
    """The gate box's word on the run's risk: a run never classified (no highrisk.json)
    is held as High-Risk, which is not the same as being one."""
    if not classified:
        return "never classified: held as High-Risk"
    return "High-Risk" if high_risk else "not High-Risk"


def files_said(files: list[str], most: int = 4) -> str:
    """The first ``most`` files, and how many more there are."""
    more = len(files) - most
    return ", ".join(files[:most]) + (f" +{more} more" if more > 0 else "")


def can_merge(view: RunView | None) -> bool:
    """Whether ``m`` is offered for ``view``: not for a run already in the branch (it was
    offered after the merge, and answered "already merged", a user audit)."""
    if view is None:
        return True  # (m says "open a run first")
    in_already = view.merge is not None and view.merge.already_merged and not view.blockers
    return view.merged is None and not in_already


class EvidenceScreen(Screen[None]):
    #: below this many columns the runs list goes above the run (themes/screens.tcss): side
    #: by side in 80 it took half the width, and the run's tabs and diffs were cut off.
    #: (No ClassVar: Screen's own annotation, a ClassVar inside a union, is none to mypy.)
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]  # noqa: RUF012

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("m", "merge", "merge"),
        Binding("r", "refresh", "refresh"),
        # the tabs without reaching for Tab first: the runs list keeps the focus
        Binding("right_square_bracket", "next_tab(1)", "next tab"),
        Binding("left_square_bracket", "next_tab(-1)", "previous tab", show=False),
        *(
            Binding(str(n), f"show_tab('{tab_id}')", title, show=False)
            for n, (tab_id, title) in enumerate(TABS, 1)
        ),
        Binding("escape", "app.pop_screen", "back"),
    ]

    def __init__(self) -> None:
        super().__init__(id="evidence")
        self.runs: list[RunInfo] = []
        self.view: RunView | None = None
        self.last_merge: Any = None
        self._status_column: ColumnKey | None = None

    @property
    def core(self) -> CoreApp:
        return cast(CoreApp, self.app)

    def compose(self) -> ComposeResult:
        yield Static(id="evidence-title")
        with Horizontal(id="evidence-body"):
            yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
            with Vertical(id="run-detail"):
                yield Static(id="run-head")
                with TabbedContent(id="run-tabs"):
                    for tab_id, title in TABS:
                        with TabPane(title, id=f"tab-{tab_id}"):
                            yield LineView(id=f"ev-{tab_id}", follow=False)
                # scrolls: at 80x24 its last reasons and notes were cut off, out of reach
                with VerticalScroll(id="gate-box"):
                    yield Static(id="gate")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#runs", DataTable)
        self._status_column = table.add_columns("run", "status")[1]
        table.border_title = "Runs"
        self.query_one("#evidence-title", Static).update(
            Text.assemble(
                (" Evidence ", style_of(self.app.theme_variables.get("primary", ""), bold=True)),
                (
                    f"─ {self.core.repo.name}",
                    style_of(self.app.theme_variables.get("dim-text", "")),
                ),
            )
        )
        self._gate_text(Text("loading runs…"))
        self.core.list_runs(self)

    def action_refresh(self) -> None:
        self.core.list_runs(self)

    def action_show_tab(self, tab_id: str) -> None:
        """``1``…``8``: the bundle's tabs in the order they are drawn."""
        self.query_one("#run-tabs", TabbedContent).active = f"tab-{tab_id}"

    def action_next_tab(self, step: int) -> None:
        """``]`` and ``[``: the next or the previous tab, round the end."""
        tabs = self.query_one("#run-tabs", TabbedContent)
        ids = [f"tab-{tab_id}" for tab_id, _ in TABS]
        at = ids.index(tabs.active) if tabs.active in ids else -step  # (none: the first)
        tabs.active = ids[(at + step) % len(ids)]

    def on_runs_listed(self, message: RunsListed) -> None:
        self.runs = list(message.runs)
        table = self.query_one("#runs", DataTable)
        table.clear()
        for run in self.runs:
            # cells given as Text: a str cell is read as markup
            status = run.status or ("running" if self._live(run.run_id) else "unsealed")
            table.add_row(
                plain(run.run_id, one_line=True), plain(status, one_line=True), key=run.run_id
            )
        if not self.runs:
            self._gate_text(
                Text(f"no runs yet in {self.core.repo.name}/.switchyard/runs: start a task first")
            )
            return
        table.focus()
        self.core.load_run(self.runs[0].run_id, self)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value
        if key and (self.view is None or self.view.run_id != key):
            self.core.load_run(key, self)

    def on_run_loaded(self, message: RunLoaded) -> None:
        self.view = view = message.view
        v = self.app.theme_variables
        dim = style_of(v.get("dim-text", ""))
        # the task, the files, the Judge's reasons: drawn as plain text (app/shown.py)
        self.query_one("#run-head", Static).update(clean_block(self._head(view, v)))
        self._set("brief", _lines(view.brief) or [Text("no task brief", style=dim)])
        self._set(
            "plan",
            # the plan is one Text of lines; a view takes one row per line
            list(render_plan(view.plan, {}, view.plan_steps, v).split("\n"))
            if view.plan and view.report.manifest
            else [Text("no plan.json", style=dim)],
        )
        diffs: list[Text] = []
        for name, text in view.diffs:
            diffs.append(Text(f"── {name} ──", style=style_of(v.get("diff-hunk", ""), bold=True)))
            for f in split_files(text):
                diffs += render_file(f, v)
        self._set("diffs", diffs or [Text("no diffs", style=dim)])
        tests: list[Text] = []
        for loop in view.loops:
            rec = loop.record or {}
            ok = rec.get("ok")
            key = "test-pass" if ok else "test-fail"
            head = (
                f"── {loop.name} · {rec.get('runner', '?')} · exit {rec.get('exit_code', '?')} ──"
            )
            tests.append(Text(head, style=style_of(v.get(key, ""), bold=True)))
            for line in loop.log.splitlines():
                k = line_style_key(line)
                tests.append(from_ansi(line, style_of(v.get(k, "")) if k else ""))
        self._set("tests", tests or [Text("no test loops", style=dim)])
        self._set("verdict", self._verdict_lines(view, v))
        live = view.report.manifest is None and self._live(view.run_id)
        self._set(
            "audit",
            [format_line(line, v) for line in view.audit]
            or [
                Text(
                    "copied in when the run ends (the escalations pane has them now)"
                    if live
                    else "no audit",
                    style=dim,
                )
            ],
        )
        self._set("cost", cost_lines(view.cost, v))
        self._set("manifest", self._manifest_lines(view, v))
        self._show_gate()
        self._list_status(view)
        self.refresh_bindings()  # ("m merge" is not offered for a run merged already)

    def _list_status(self, view: RunView) -> None:
        """The run's row says what its view says: merged since the list was read (the
        list said merge_ready after the merge, a user audit), or no longer."""
        manifest = view.report.manifest
        if manifest is None or self._status_column is None:
            return
        status = MERGED if view.merged is not None else manifest.status
        table = self.query_one("#runs", DataTable)
        try:
            if str(table.get_cell(view.run_id, self._status_column)) != status:
                table.update_cell(view.run_id, self._status_column, plain(status, one_line=True))
        except CellDoesNotExist:
            pass

    def _head(self, view: RunView, v: dict[str, str]) -> Text:
        m = view.report.manifest
        dim = style_of(v.get("dim-text", ""))
        head = Text(no_wrap=True, overflow="ellipsis")
        head.append(view.run_id, style_of(v.get("primary", ""), bold=True))
        if m is None and self._live(view.run_id):
            head.append("  running: its evidence is sealed when it ends", dim)
            return head
        if m is None:
            head.append("  not sealed", style_of(v.get("test-fail", "")))
            return head
        ok = m.status == "merge_ready"
        if view.merged is not None:
            # (the manifest keeps merge_ready for good: git says it is merged since)
            head.append(f"  {view.merged.said()}", style_of(v.get("test-pass", "")))
        else:
            head.append(f"  {m.status}", style_of(v.get("test-pass" if ok else "test-fail", "")))
        head.append(f"  {m.task}")
        head.append(f"\n{m.branch or '—'} @ {(m.head or '—')[:12]} · created {m.created}", dim)
        return head

    def _set(self, tab: str, lines: list[Text]) -> None:
        self.query_one(f"#ev-{tab}", LineView).set_lines(lines)

    def _verdict_lines(self, view: RunView, v: dict[str, str]) -> list[Text]:
        dim = style_of(v.get("dim-text", ""))
        out: list[Text] = []
        if view.sidecars:
            out.append(Text("sidecars: advice for you, never read by the gate", style=dim))
            out += [Text(f"  {line}") for line in view.sidecars]
            out.append(Text(""))
        if not view.verdicts:
            return [*out, Text("no verdict: the Judge did not run", style=dim)]
        for verdict in view.verdicts:
            local = verdict.get("local") or verdict.get("provider") == "local"
            word = str(verdict.get("verdict", "?"))
            colour = v.get("test-pass" if word == "approve" else "test-fail", "")
            head = Text()
            head.append(f"{word.upper()} ", style_of(colour, bold=True))
            head.append(f"by {verdict.get('model', '?')} ({verdict.get('provider', '?')})")
            if local:
                head.append("  local: advice only (GR-003)", dim)
            resolved = verdict.get("citations_resolved")
            if resolved is not None:
                head.append(
                    "  citations resolve ✓" if resolved else "  citations do not resolve ✗",
                    style_of(v.get("test-pass" if resolved else "test-fail", "")),
                )
            out.append(head)
            if verdict.get("summary"):
                out += _lines(str(verdict["summary"]))
            for finding in verdict.get("findings") or []:
                line = Text("  ")
                line.append(f"[{finding.get('severity', '?')}] ", style_of(colour))
                line.append(str(finding.get("message", "")))
                line.append(f"  ← {finding.get('cite', '?')}", dim)
                out.append(line)
        return out

    def _manifest_lines(self, view: RunView, v: dict[str, str]) -> list[Text]:
        report = view.report
        good = style_of(v.get("test-pass", ""), bold=True)
        bad = style_of(v.get("test-fail", ""), bold=True)
        if report.manifest is None and self._live(view.run_id):
            # "✗ the bundle does not verify" of a bundle that is not made yet
            return [Text("the run is still going: its bundle is sealed when it ends")]
        out = [
            Text(
                f"✓ bundle verified: {counted(report.files_checked, 'file')} "
                f"{'matches' if report.files_checked == 1 else 'match'} the manifest"
                if report.ok
                else "✗ the bundle does not verify",
                style=good if report.ok else bad,
            )
        ]
        out += [Text(f"  {p}", style=bad) for p in report.problems]
        m = report.manifest
        if m is not None:
            for label, value in (
                ("status", f"{m.status}{': ' + m.reason if m.reason else ''}"),
                ("task", m.task),
                ("session", m.session or "—"),
                ("branch", f"{m.branch or '—'} @ {(m.head or '—')[:12]}"),
                ("base", (m.base or "—")[:12]),
                ("policy", m.policy_version or "—"),
                ("local_only", str(m.local_only).lower()),
                ("finalized", m.finalized),
            ):
                out.append(Text(f"{label:<11}{value}", end=""))
            for name, entry in m.files.items():
                out.append(Text(f"  {entry.sha256[:12]}  {entry.size:>7}  {name}", end=""))
        return out

    def _show_gate(self) -> None:
        view = self.view
        if view is None:
            return
        v = self.app.theme_variables
        text = Text()
        blockers = view.blockers
        plan = view.merge
        merged = view.merged
        if merged is not None:
            # read after the merge, the plan's files (what merging would bring in now)
            # are none: "pressing m merges into main (no file changes)" (a user audit)
            text.append(f"✓ {merged.said()}", style_of(v.get("test-pass", ""), bold=True))
            text.append(
                f": the run's change ({files_said(merged.files) or 'no file changes'})"
                f" is in {merged.into}; nothing is left to merge"
            )
        elif plan is not None and plan.already_merged and not blockers:
            into = (plan.target_ref or "HEAD").removeprefix("refs/heads/")
            text.append("✓ nothing to merge", style_of(v.get("test-pass", ""), bold=True))
            text.append(f": {into} already holds the run's commit {(plan.tip or '')[:12]}")
        elif view.merge_busy:
            # no refusal to show: m waits for the other merge and reads the gate then
            text.append("… the gate is not read yet", style_of(v.get("dim-text", ""), bold=True))
            text.append(f": {view.merge_busy}")
        elif blockers:
            text.append("✗ the gate does not hold", style_of(v.get("test-fail", ""), bold=True))
            text.append(": pressing m would be refused, because")
            for reason in blockers:
                text.append(f"\n  {reason}")
        else:
            target = ((plan.target_ref if plan else None) or "HEAD").removeprefix("refs/heads/")
            text.append("✓ the gate holds", style_of(v.get("test-pass", ""), bold=True))
            files = files_said(plan.files) if plan else ""
            text.append(f": pressing m merges into {target} ({files or 'no file changes'})")
        facts = plan.facts if plan else None
        if facts is not None:
            verdicts = ", ".join(
                f"{r.verdict} by {r.who}{' (advice)' if r.is_local else ''}" for r in facts.verdicts
            )
            text.append(
                f"\n  tests {'green' if facts.tests_green else 'not green'}"
                f" · {risk(facts.high_risk, classified=facts.high_risk_classified)}"
                f" · verdicts: {verdicts or 'none'}",
                style_of(v.get("dim-text", "")),
            )
        notes = plan.notes if plan else []
        for note in notes:
            text.append(f"\n  note: {note}", style_of(v.get("dim-text", "")))
        self._gate_text(text)

    def _gate_text(self, text: Text) -> None:
        self.query_one("#gate-box").border_title = "Merge gate"
        self.query_one("#gate", Static).update(clean_block(text))

    def _live(self, run_id: str) -> bool:
        """Whether ``run_id`` is a run in progress, here or in another process (its bundle
        is sealed when it ends; another workbench's live run read as abandoned)."""
        if self.core.running and self.core.live_run == run_id:
            return True
        from app.evidence.layout import runs_dir
        from app.evidence.live import running

        return running(runs_dir(self.core.repo) / run_id)

    def action_merge(self) -> None:
        if self.view is None:
            self.notify("open a run first", severity="warning")
            return
        if self._live(self.view.run_id):
            # it wrote "MERGE EVIDENCE: manifest.json is missing" into the live run's audit
            self.notify(
                f"run {self.view.run_id} is still running: it can merge once it ends",
                severity="warning",
            )
            return
        self.core.merge(self.view.run_id, self)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "merge":
            return can_merge(self.view)
        return True

    def on_merge_waiting(self, message: MergeWaiting) -> None:
        """Said at once: the gate box read "✓ the gate holds: pressing m merges…" for the
        whole wait, and nothing else moved until the refusal (a user audit)."""
        text = Text()
        text.append(
            f"… waiting for another merge of this repository (up to {message.wait_s:g} s)",
            style_of(self.app.theme_variables.get("dim-text", ""), bold=True),
        )
        text.append(
            f"; once it is done the gate is read again, and run {message.run_id} merges if it holds"
        )
        self._gate_text(text)
        self.notify(f"waiting for another merge of this repository (up to {message.wait_s:g} s)…")

    def on_merge_done(self, message: MergeDone) -> None:
        outcome = self.last_merge = message.outcome
        if outcome.merged:
            self.notify(f"merged run {outcome.run_id} ({(outcome.after_head or '')[:12]})")
        elif outcome.already_merged and outcome.tip and outcome.tip == outcome.before_head:
            # The run's branch adds no commit: "already merged" would read like success.
            self.notify(
                f"nothing to merge: run {outcome.run_id} made no commit", severity="warning"
            )
        elif outcome.already_merged:
            self.notify(f"run {outcome.run_id} is already merged")
        else:
            text = Text()
            text.append("✗ merge refused", style_of(self.app.theme_variables.get("test-fail", "")))
            text.append(" (nothing was changed):")
            for reason in outcome.reasons:
                text.append(f"\n  {reason}")
            self._gate_text(text)
            self.notify("merge refused: " + "; ".join(outcome.reasons), severity="error")
        if outcome.ok:
            self.core.load_run(outcome.run_id, self)

    def on_work_failed(self, message: WorkFailed) -> None:
        if message.group in ("evidence", "merge"):
            self._gate_text(Text(f"{message.group}: {message.text}"))
