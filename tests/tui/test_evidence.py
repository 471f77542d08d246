"""Evidence review: lists runs, opens one, refuses a merge the gate does not allow (and
says why), merges by keypress when it does. Real bundles, a real git repo."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable, Static, TabbedContent

from app.clock import ManualClock
from app.tui.core import MergeDone, RunLoaded, RunsListed
from app.tui.safe import NEWLINE
from app.tui.screens.evidence import EvidenceScreen
from app.tui.widgets.lineview import LineView
from tests.tui.helpers import Messages, settle, until
from tests.tui.scripted import _git, make_run


def _head(repo: Path) -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()


@contextlib.asynccontextmanager
async def _evidence(
    make_app: Any, size: tuple[int, int] = (160, 48)
) -> AsyncIterator[tuple[Any, Any, EvidenceScreen, Messages]]:
    """The workbench on its evidence screen, the first run loaded: the app, the pilot, the
    screen, and the messages seen."""
    seen = Messages()
    app = make_app(task=None)
    async with app.run_test(size=size, message_hook=seen) as pilot:
        await until(pilot, lambda: app.session is not None, what="the session")
        await pilot.press("escape", "v")  # out of the task input first
        await until(pilot, lambda: seen.of(RunLoaded), what="a run to load")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, EvidenceScreen)
        yield app, pilot, screen, seen


async def test_the_evidence_screen_refuses_a_merge_when_the_gate_does_not_hold(
    make_app: Any, repo: Path, clock: ManualClock, tmp_path: Path
) -> None:
    make_run(repo, "20260101-110000-bad001", green=False, clock=clock, data_dir=tmp_path / "data")
    before = _head(repo)
    async with _evidence(make_app) as (app, pilot, screen, seen):
        assert [r.run_id for r in seen.of(RunsListed)[0].runs] == ["20260101-110000-bad001"]
        view = screen.view
        assert view is not None
        assert view.report.ok, view.report.problems
        assert any(b.startswith("GR-006") for b in view.blockers)
        gate = str(screen.query_one("#gate", Static).render())
        assert "the gate does not hold" in gate and "GR-006" in gate

        await pilot.press("m")
        await until(pilot, lambda: seen.of(MergeDone), what="the merge answer")
        await settle(pilot)
        outcome = seen.of(MergeDone)[0].outcome
        assert not outcome.ok and not outcome.merged
        assert any(r.startswith("GR-006") for r in outcome.reasons)
        assert not any(r.startswith("HUMAN") for r in outcome.reasons)  # m was the approval
        assert _head(repo) == before
        assert app.session is not None
        merges = [ln for ln in await app.session.audit.lines() if ln.kind == "merge"]
        assert [ln.values["outcome"] for ln in merges] == ["refused"]
        assert "(nothing was changed)" in str(screen.query_one("#gate", Static).render())


async def test_the_evidence_screen_merges_by_keypress_when_the_gate_holds(
    make_app: Any, repo: Path, clock: ManualClock, tmp_path: Path
) -> None:
    make_run(repo, "20260101-110000-good01", green=True, clock=clock, data_dir=tmp_path / "data")
    before = _head(repo)
    async with _evidence(make_app) as (app, pilot, screen, seen):
        assert screen.view is not None and screen.view.blockers == []
        assert "the gate holds" in str(screen.query_one("#gate", Static).render())
        await pilot.press("m")
        await until(pilot, lambda: seen.of(MergeDone), what="the merge")
        outcome = seen.of(MergeDone)[0].outcome
        assert outcome.merged, outcome.reasons
        assert _head(repo) != before
        assert app.session is not None
        merges = [ln for ln in await app.session.audit.lines() if ln.kind == "merge"]
        assert [ln.values["outcome"] for ln in merges] == ["merging", "merged"]
        assert merges[-1].values.get("approver") in (None, "tui:keypress")


GOOD = "20260101-110000-good01"
LOCKED_OUT = "another Switchyard merge of this repository"


@contextlib.contextmanager
def _another_merge_half_way(repo: Path, run_id: str = GOOD) -> Iterator[None]:
    """Another merge of the repository in flight (the CLI's, another workbench's): it
    holds the merge lock, and git has merged the run's branch without committing yet
    (MERGE_HEAD). The lock goes with the block; the merge is left as it is then."""
    fd = os.open(repo / ".git" / "switchyard-merge.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _git(repo, "merge", "--no-ff", "--no-commit", f"switchyard/{run_id}")
        assert (repo / ".git" / "MERGE_HEAD").exists()
        yield
    finally:
        os.close(fd)


async def test_a_merge_held_up_by_another_is_refused_with_the_lock_not_its_half_way_plan(
    make_app: Any,
    repo: Path,
    clock: ManualClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """m while another merge holds the repository's merge lock past its wait: refused
    with the lock's reason (as `switchyard merge` is), audited, nothing applied and
    nothing of the other merge undone; not the plan read half way through it."""
    from app.workspace import merge as merge_mod

    make_run(repo, GOOD, green=True, clock=clock, data_dir=tmp_path / "data")
    before = _head(repo)
    monkeypatch.setattr(merge_mod, "LOCK_WAIT_S", 0.2)
    async with _evidence(make_app) as (app, pilot, screen, seen):
        with _another_merge_half_way(repo):
            await pilot.press("m")
            await until(pilot, lambda: seen.of(MergeDone), what="the merge answer")
            outcome = seen.of(MergeDone)[0].outcome
            assert not outcome.ok and not outcome.merged
            assert len(outcome.reasons) == 1 and LOCKED_OUT in outcome.reasons[0], outcome
            assert "MERGE_HEAD" not in " ".join(outcome.reasons + outcome.notes)
            assert _head(repo) == before and (repo / ".git" / "MERGE_HEAD").exists()
        await settle(pilot)
        assert LOCKED_OUT in str(screen.query_one("#gate", Static).render())
        assert app.session is not None
        merges = [ln for ln in await app.session.audit.lines() if ln.kind == "merge"]
        assert [(ln.values["outcome"], ln.reason_codes) for ln in merges] == [("refused", ["GIT"])]
        assert LOCKED_OUT in merges[0].detail


async def test_a_merge_reads_its_plan_once_another_merge_of_the_repository_is_done(
    make_app: Any,
    repo: Path,
    clock: ManualClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """m while another merge of the run is half way: the workbench read MERGE_HEAD and
    refused over it, where that merge ends with the run merged. It reads the plan under
    the merge lock, once the other is done: already merged, said so, audited so."""
    from app.workspace import merge as merge_mod

    make_run(repo, GOOD, green=True, clock=clock, data_dir=tmp_path / "data")
    real_lock = merge_mod._merge_lock
    waiting: list[Path] = []  # the workbench's merge waits for the lock

    def lock(top: Path) -> Any:
        waiting.append(top)
        return real_lock(top)

    monkeypatch.setattr(merge_mod, "_merge_lock", lock)
    async with _evidence(make_app) as (app, pilot, _, seen):
        with _another_merge_half_way(repo):
            await pilot.press("m")
            await until(pilot, lambda: waiting or seen.of(MergeDone), what="the merge to begin")
            _git(repo, "commit", "-q", "--no-edit")  # the other merge lands, and lets go
        merged = _head(repo)
        await until(pilot, lambda: seen.of(MergeDone), what="the merge answer")
        outcome = seen.of(MergeDone)[0].outcome
        assert "MERGE_HEAD" not in " ".join(outcome.reasons + outcome.notes), outcome
        assert outcome.ok and outcome.already_merged and outcome.before_head == merged
        assert _head(repo) == merged
        assert app.session is not None
        merges = [ln for ln in await app.session.audit.lines() if ln.kind == "merge"]
        assert [ln.values["outcome"] for ln in merges] == ["already_merged"]


async def test_the_evidence_screens_plan_is_not_read_half_way_through_another_merge(
    make_app: Any, repo: Path, clock: ManualClock, tmp_path: Path
) -> None:
    """The plan the evidence screen shows is a preview (m reads it again under the merge
    lock): it does not wait for the lock, which would hold the run's view up for the
    lock's whole wait, but it does not show another merge half way either ("a merge is in
    progress", "the gate does not hold"): it says one is under way. Once that is done the
    plan reads as usual."""
    from app.tui.evidence_data import BUSY, load_run_view

    make_run(repo, GOOD, green=True, clock=clock, data_dir=tmp_path / "data")
    with _another_merge_half_way(repo):
        async with _evidence(make_app) as (app, _, screen, _):
            view = screen.view
            assert view is not None and view.merge is None and view.blockers == [BUSY]
            gate = str(screen.query_one("#gate", Static).render())
            assert "the gate is not read yet" in gate and LOCKED_OUT in gate, gate
            assert "MERGE_HEAD" not in gate and "does not hold" not in gate
            assert app.session is not None
            policy = app.session.policy
    _git(repo, "merge", "--abort")
    view = load_run_view(repo, GOOD, None, policy)
    assert view.merge is not None and view.merge.files == ["src/parser.py"]


async def test_a_run_shows_every_part_of_its_bundle(
    make_app: Any, repo: Path, clock: ManualClock, tmp_path: Path
) -> None:
    make_run(repo, "20260101-110000-good01", green=True, clock=clock, data_dir=tmp_path / "data")
    async with _evidence(make_app) as (_, _, screen, _):

        def text(tab: str) -> str:
            return "\n".join(screen.query_one(f"#ev-{tab}", LineView).plain_lines())

        assert "make the failing parser test pass" in text("brief")
        assert "fix the off-by-one in parse()" in text("plan")
        # one row per line of the plan (not one row with its newlines shown as ⏎)
        plan_rows = screen.query_one("#ev-plan", LineView).plain_lines()
        assert len(plan_rows) > 1 and not any(NEWLINE in row for row in plan_rows)
        assert "+    for i in range(len(tokens)):" in text("diffs")
        assert "15 passed" in text("tests") and "bwrap" in text("tests")
        verdict = text("verdict")
        assert "local: advice only (GR-003)" in verdict
        assert "← src/parser.py:9" in verdict and "← test:test_parse_tail" in verdict
        assert "sidecars: advice for you, never read by the gate" in verdict
        assert "advice on the user request from claude-sonnet-4.6: the bound fix" in verdict
        cost = text("cost")  # a bill, not the JSON it is stored as
        assert "session s1 · 2026-01-01 · 6 calls, 1 did not complete" in cost
        assert "session                    $0.0094       $0.00       $5.00     $4.9906" in cost
        assert "deepseek (day)" in cost and "deepseek-reasoner" in cost and "{" not in cost
        assert "bundle verified" in text("manifest")


async def test_the_tabs_turn_by_keypress_while_the_runs_list_keeps_the_focus(
    make_app: Any, repo: Path, clock: ManualClock, tmp_path: Path
) -> None:
    make_run(repo, "20260101-110000-good01", green=True, clock=clock, data_dir=tmp_path / "data")
    async with _evidence(make_app) as (_, pilot, screen, _):
        tabs = screen.query_one("#run-tabs", TabbedContent)
        runs = screen.query_one("#runs", DataTable)
        assert tabs.active == "tab-brief" and runs.has_focus
        shown = []
        for key in ("5", "right_square_bracket", "left_square_bracket", "left_square_bracket"):
            await pilot.press(key)
            await settle(pilot)
            shown.append(tabs.active)
        assert shown == ["tab-verdict", "tab-audit", "tab-verdict", "tab-tests"]
        await pilot.press("1", "left_square_bracket")  # round the start to the last
        await settle(pilot)
        assert tabs.active == "tab-manifest"
        await pilot.press("8", "right_square_bracket")  # and round the end to the first
        await settle(pilot)
        assert tabs.active == "tab-brief"
        assert runs.has_focus
        # the tab shown is the one the key names, its lines drawn
        await pilot.press("6")
        await settle(pilot)
        audit = screen.query_one("#ev-audit", LineView)
        assert audit.display and audit.plain_lines()


async def test_no_runs_says_so(make_app: Any) -> None:
    seen = Messages()
    app = make_app(task=None)
    async with app.run_test(size=(160, 48), message_hook=seen) as pilot:
        await until(pilot, lambda: app.session is not None, what="the session")
        await pilot.press("escape", "v")
        await until(pilot, lambda: seen.of(RunsListed), what="the run list")
        await settle(pilot)
        assert "no runs yet" in str(app.screen.query_one("#gate", Static).render())
        await pilot.press("m")  # nothing to merge: a notice, no crash
        await pilot.press("escape")
        await settle(pilot)
        assert app.screen is app.home


async def test_on_the_team_store_a_run_sealed_by_another_process_merges(
    make_app: Any,
    repo: Path,
    clock: ManualClock,
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each process writes a chain of its own on the team store: the workbench looked for
    the seal line in its own chain only, so a run sealed by `switchyard run` (or an
    earlier workbench) could never merge from the evidence screen."""
    from app.audit.pg_log import PgAuditLog
    from app.evidence.bundle import bundle_seal_line, read_manifest
    from app.evidence.files import file_entry

    monkeypatch.setenv("SWITCHYARD_DATABASE_URL", pg_url)
    path = make_run(repo, "20260101-110000-good01", green=True, clock=clock)
    sealed = file_entry(path / "manifest.json").sha256
    async with await PgAuditLog.open(pg_url, team="default", user="me", host="box") as other:
        await other.append(**bundle_seal_line(read_manifest(path), sealed), session="s-other")
    async with _evidence(make_app) as (app, _, screen, _):
        assert app.session is not None and app.session.audit.shared
        assert screen.view is not None and screen.view.blockers == [], screen.view.blockers


@pytest.mark.parametrize(
    ("width", "stacked"), [(80, True), (109, True), (110, False), (160, False)]
)
async def test_a_narrow_terminal_puts_the_runs_above_the_run_and_every_tab_shows(
    make_app: Any, repo: Path, clock: ManualClock, tmp_path: Path, width: int, stacked: bool
) -> None:
    make_run(repo, "20260101-110000-bad001", green=False, clock=clock, data_dir=tmp_path / "data")
    async with _evidence(make_app, size=(width, 24)) as (_app, _pilot, screen, _seen):
        runs = screen.query_one("#runs", DataTable).region
        detail = screen.query_one("#run-detail").region
        if stacked:
            assert runs.bottom <= detail.y and detail.width == width
        else:
            assert runs.right <= detail.x and runs.width == 40
        tabs = screen.query_one("#run-tabs", TabbedContent)
        for tab in tabs.query("ContentTab"):
            assert tab.region.right <= detail.right, f"{tab} cut off at {width} columns"


async def test_the_run_in_progress_reads_as_running_not_broken_and_does_not_merge(
    make_app: Any, repo: Path, clock: ManualClock
) -> None:
    """`v` during a run called its bundle "not sealed", "the bundle does not verify", and
    `m` wrote "MERGE EVIDENCE: manifest.json is missing" into the live run's audit (a
    user-audit)."""
    from textual.notifications import Notify

    from app.evidence.bundle import EvidenceBundle
    from tests.tui.scripted import RUN_ID, SESSION_ID, TASK, ScriptedRun

    EvidenceBundle.create(repo, RUN_ID, task=TASK, session=SESSION_ID, clock=clock)  # unsealed
    run = ScriptedRun(clock, stop_before="escalation")
    seen = Messages()
    app = make_app(run=run)
    async with app.run_test(size=(160, 48), message_hook=seen) as pilot:
        await until(pilot, run.reached.is_set, what="the implementer at work")
        await settle(pilot)
        assert app.live_run == RUN_ID
        await pilot.press("escape", "v")
        await until(pilot, lambda: seen.of(RunLoaded), what="the run to load")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, EvidenceScreen)
        table = screen.query_one("#runs", DataTable)
        assert str(table.get_row(RUN_ID)[1]) == "running"
        manifest = screen.query_one("#ev-manifest", LineView)
        assert "sealed when it ends" in str(manifest.lines[0])
        await pilot.press("m")
        await settle(pilot)
        toasts = [m.notification.message for m in seen.of(Notify)]
        assert any("is still running: it can merge once it ends" in t for t in toasts)
        assert app.session is not None
        assert not [ln for ln in await app.session.audit.lines() if ln.kind == "merge"]
        await pilot.press("escape")
        run.go_on.set()


def test_a_cost_file_that_is_no_snapshot_is_shown_as_written_and_said() -> None:
    from app.tui.screens.evidence_cost import cost_lines

    rows = [t.plain for t in cost_lines({"total_usd": 0.5, "note": "x\x1b[2J"}, {})]
    assert rows[0].startswith("cost.json is not a ledger snapshot this version reads")
    assert '  "total_usd": 0.5' in rows and not any("\x1b" in r for r in rows)
    assert [t.plain for t in cost_lines(None, {})] == ["no cost.json"]


async def test_at_80x24_the_merge_gates_last_reasons_can_be_scrolled_to(
    make_app: Any, repo: Path, clock: ManualClock, tmp_path: Path
) -> None:
    """The gate's box held six lines at 80x24, and its last reasons and notes were cut off
    with no way to reach them (a TUI audit): it scrolls, its last line within reach."""
    make_run(repo, "20260101-110000-bad001", green=False, clock=clock, data_dir=tmp_path / "data")
    async with _evidence(make_app, size=(80, 24)) as (_app, pilot, screen, _seen):
        box = screen.query_one("#gate-box")
        gate = screen.query_one("#gate", Static)
        assert box.border_title == "Merge gate"
        assert gate.virtual_size.height > box.scrollable_content_region.height  # cut at rest
        box.focus()
        await pilot.press("end")
        await settle(pilot)
        assert box.scroll_y == box.max_scroll_y > 0  # the last line is reached


def test_the_gate_box_says_a_run_never_classified_is_held_as_high_risk() -> None:
    """A run with no highrisk.json (it changed nothing) read "High-Risk", as if the
    classifier had found it so (a user-audit)."""
    from app.tui.screens.evidence import risk

    assert risk(True, classified=False) == "never classified: held as High-Risk"
    assert (risk(True, classified=True), risk(False, classified=True)) == (
        "High-Risk",
        "not High-Risk",
    )


def _gate(screen: EvidenceScreen) -> str:
    return str(screen.query_one("#gate", Static).render())


def _status(screen: EvidenceScreen, run_id: str) -> str:
    return str(screen.query_one("#runs", DataTable).get_row(run_id)[1])


async def test_a_merged_run_reads_merged_and_is_offered_no_merge(
    make_app: Any, repo: Path, clock: ManualClock, tmp_path: Path
) -> None:
    """After m, r: the box said "✓ the gate holds: pressing m merges into main (no file
    changes)" (read after the merge, the plan's diff against main is empty), the list said
    merge_ready, and m answered "already merged" (a user audit). Merged, it says so, with
    the commit it was merged as and the files the run changed, and m is not offered."""
    make_run(repo, GOOD, green=True, clock=clock, data_dir=tmp_path / "data")
    async with _evidence(make_app) as (_, pilot, screen, seen):
        assert "merge" in {b.binding.action for b in screen.active_bindings.values()}
        assert _status(screen, GOOD) == "merge_ready"
        loaded = len(seen.of(RunLoaded))
        await pilot.press("m")
        await until(pilot, lambda: seen.of(MergeDone), what="the merge")
        await until(pilot, lambda: len(seen.of(RunLoaded)) > loaded, what="the run again")
        await settle(pilot)
        merge_commit = seen.of(MergeDone)[0].outcome.after_head
        assert merge_commit == _head(repo)

        def merged_everywhere() -> None:
            gate = _gate(screen)
            assert f"✓ merged into main @ {merge_commit[:12]}" in gate, gate
            assert "(src/parser.py)" in gate and "no file changes" not in gate, gate
            assert "pressing m" not in gate, gate
            head = str(screen.query_one("#run-head", Static).render())
            assert f"merged into main @ {merge_commit[:12]}" in head, head
            assert _status(screen, GOOD) == "merged"
            actions = {b.binding.action for b in screen.active_bindings.values()}
            assert "merge" not in actions, actions

        merged_everywhere()
        listed = len(seen.of(RunsListed))
        await pilot.press("r")  # the audit's reload
        await until(pilot, lambda: len(seen.of(RunsListed)) > listed, what="the list again")
        await until(pilot, lambda: seen.of(RunLoaded)[-1].view.merged, what="the run again")
        await settle(pilot)
        merged_everywhere()


async def test_a_run_merged_by_hand_reads_merged_and_no_longer_once_reset(
    make_app: Any, repo: Path, clock: ManualClock, tmp_path: Path
) -> None:
    """Git is the source (app/workspace/merged.py): a merge made with git says merged, as
    the merge itself would answer ("already merged"); a merge reset away says merge_ready
    again, whatever the audit once recorded."""
    from app.tui.evidence_data import load_run_view, runs

    make_run(repo, GOOD, green=True, clock=clock, data_dir=tmp_path / "data")
    before = _head(repo)
    _git(repo, "merge", "--no-ff", "--no-edit", f"switchyard/{GOOD}")
    by_hand = _head(repo)
    _git(repo, "commit", "-q", "--allow-empty", "-m", "later work")
    async with _evidence(make_app) as (app, _, screen, _):
        assert _status(screen, GOOD) == "merged"
        assert f"✓ merged into main @ {by_hand[:12]}" in _gate(screen)
        assert app.session is not None
        policy = app.session.policy
    _git(repo, "reset", "-q", "--hard", before)
    assert [r.status for r in runs(repo)] == ["merge_ready"]
    view = load_run_view(repo, GOOD, None, policy)
    assert view.merged is None


async def test_m_while_another_merge_holds_the_lock_says_it_waits_and_a_second_m_waits_too(
    make_app: Any, repo: Path, clock: ManualClock, tmp_path: Path
) -> None:
    """m while another merge held the repository's merge lock: up to 30 s of silence, the
    box still saying "pressing m merges…", and a second m cancelled the first (its worker
    was exclusive) and began another silent wait (a user audit). The wait is said at
    once; a second m is refused with a word, the first left to finish."""
    from textual.notifications import Notify

    waits = "waiting for another merge of this repository (up to 30 s)"
    make_run(repo, GOOD, green=True, clock=clock, data_dir=tmp_path / "data")
    async with _evidence(make_app) as (app, pilot, screen, seen):
        with _another_merge_half_way(repo):
            await pilot.press("m")
            await until(pilot, lambda: waits in _gate(screen), what="the wait to be said")
            assert "pressing m" not in _gate(screen)
            toasts = [m.notification.message for m in seen.of(Notify)]
            assert any(waits in t for t in toasts), toasts
            workers = [w for w in app.workers if w.group == "merge"]
            assert len(workers) == 1 and workers[0].is_running
            await pilot.press("m")
            await settle(pilot)
            toasts = [m.notification.message for m in seen.of(Notify)]
            assert any("a merge is already under way" in t for t in toasts), toasts
            assert [w for w in app.workers if w.group == "merge"] == workers
            assert workers[0].is_running and not workers[0].is_cancelled
            assert not seen.of(MergeDone)
            _git(repo, "commit", "-q", "--no-edit")  # the other merge lands, and lets go
        await until(pilot, lambda: seen.of(MergeDone), what="the merge answer")
        await settle(pilot)
        assert len(seen.of(MergeDone)) == 1
        outcome = seen.of(MergeDone)[0].outcome
        assert outcome.ok and outcome.already_merged, outcome


async def test_the_workbench_says_its_run_was_merged(
    make_app: Any, repo: Path, clock: ManualClock, tmp_path: Path
) -> None:
    """The header and the plan still said merge_ready and "(switchyard merge)" after the
    run was merged from the evidence screen (a user audit)."""
    from tests.tui.scenes import run_to_end
    from tests.tui.scripted import RUN_ID

    make_run(repo, RUN_ID, green=True, clock=clock, data_dir=tmp_path / "data")
    seen = Messages()
    app = make_app()
    async with app.run_test(size=(160, 48), message_hook=seen) as pilot:
        await run_to_end(pilot)
        home = app.home
        assert home.header.state == "merge_ready"
        await pilot.press("v")
        await until(pilot, lambda: seen.of(RunLoaded), what="the run")
        await settle(pilot)
        await pilot.press("m")
        await until(pilot, lambda: seen.of(MergeDone), what="the merge")
        await pilot.press("escape")
        await until(pilot, lambda: home.header.state == "merged", what="the header")
        await settle(pilot)
        said = f"merged into main @ {_head(repo)[:12]}"
        plan = str(home.plan.query_one("#plan-body", Static).render())
        assert said in plan and "switchyard merge" not in plan, plan
