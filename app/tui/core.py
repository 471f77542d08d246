"""The app's link to the core: the session, the run, approvals, the tutor, evidence.

Everything that waits on the core runs in a worker (``exit_on_error=False``); every
worker is started here, on the app, so one ``Worker.StateChanged`` handler sees every
failure. Results come back as typed messages posted to whoever asked. The UI touches
the core only through the session's handles: the bus (via the bridge), the approvals
broker's ``resolve``, the run's :class:`RunControl`, the audit log for a merge line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterable
from contextlib import AsyncExitStack
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.message_pump import MessagePump
from textual.worker import Worker, WorkerState

from app import heap
from app.clock import Clock, SystemClock
from app.errors import SwitchyardError
from app.pipeline.control import RunControl
from app.tui.safe import clean

if TYPE_CHECKING:
    from textual.notifications import SeverityLevel
    from textual.screen import Screen

    from app.bus import Bus
    from app.pipeline.schemas import TutorTurn
    from app.pipeline.tutor import TutorReply, TutorSession
    from app.router.approvals import DecisionKind
    from app.router.session import Session
    from app.tui.defaults import Connect, Runner, Tutor
    from app.tui.evidence_data import RunView
    from app.tui.gateway import GatewaySpec
    from app.workspace.merge import MergeOutcome
    from app.workspace.merged import Merged

log = logging.getLogger("switchyard.tui")

DECIDED_BY = "tui:keypress"

#: What the session needs and the first frame does not: the bus and its event models
#: (pydantic builds them: ~90 ms), the bridge, the approvals broker's types, and what a
#: connect opens a session with (settings, the policy, the session). Loaded in a thread
#: once the first frame is drawn (see :meth:`CoreApp.open_session`), so the drawn layout
#: answers keys meanwhile.
CORE_MODULES = (
    "app.bus",
    "app.tui.bridge",
    "app.router.approvals",
    "app.config",
    "app.policy",
    "app.router.session",
)


def load_core() -> None:
    for name in CORE_MODULES:
        import_module(name)


# ── results, as messages ─────────────────────────────────────────────────────────────────


class SessionReady(Message):
    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session


class RunStarted(Message):
    def __init__(self, task: str) -> None:
        super().__init__()
        self.task = task


class RunStopping(Message):
    """The user asked the run to stop: it ends when the model call in progress does."""


class RunDone(Message):
    """The runner returned (its RunOutcome, or whatever a scripted runner returns)."""

    def __init__(self, result: Any) -> None:
        super().__init__()
        self.result = result


class TutorAnswered(Message):
    """One tutor turn came back (the core's reply: turn n of max, questions first)."""

    def __init__(self, reply: TutorReply) -> None:
        super().__init__()
        self.reply = reply

    @property
    def question(self) -> str:
        return self.reply.question

    @property
    def turn(self) -> TutorTurn:
        return self.reply.turn


class RunLoaded(Message):
    def __init__(self, view: RunView) -> None:
        super().__init__()
        self.view = view


class RunsListed(Message):
    def __init__(self, runs: list[Any]) -> None:
        super().__init__()
        self.runs = runs


class MergeDone(Message):
    def __init__(self, outcome: MergeOutcome) -> None:
        super().__init__()
        self.outcome = outcome


class MergeWaiting(Message):
    """The merge asked waits for another merge of the repository (its lock), up to
    ``wait_s``: said at once, where it waited in silence (a user audit)."""

    def __init__(self, run_id: str, wait_s: float) -> None:
        super().__init__()
        self.run_id = run_id
        self.wait_s = wait_s


class RunMerged(Message):
    """A run is merged into the branch checked out (git says so after a merge here): the
    workbench's header and plan stop offering it as merge_ready."""

    def __init__(self, run_id: str, merged: Merged) -> None:
        super().__init__()
        self.run_id = run_id
        self.merged = merged


class WorkFailed(Message):
    """A worker failed; ``group`` says which kind of work ("run", "tutor", …)."""

    def __init__(self, group: str, text: str) -> None:
        super().__init__()
        self.group = group
        self.text = text


def describe_error(error: BaseException | None) -> str:
    if isinstance(error, SwitchyardError):
        return str(error) or type(error).__name__
    if isinstance(error, ModuleNotFoundError) and (error.name or "").startswith("app."):
        return f"{error.name} is not available in this build"
    if error is None:
        return "unknown error"
    return f"{type(error).__name__}: {error}"


# ── the base app ─────────────────────────────────────────────────────────────────────────


class CoreApp(App[int]):
    """Holds the session and starts every worker. Screens call these methods."""

    BINDINGS: ClassVar[list[BindingType]] = [
        # before any screen's escape (a priority binding), and only while the palette's
        # Keys panel is open (check_action): it stayed until the palette hid it, and esc
        # meanwhile did the screen's own thing, even deny on the approval modal
        Binding("escape", "close_keys", "close keys", show=False, priority=True),
    ]

    def __init__(
        self,
        *,
        connect: Connect,
        runner: Runner,
        tutor: Tutor,
        repo: Path,
        clock: Clock | None = None,
        start_task: str | None = None,
        start_notice: str | None = None,
        gateway: GatewaySpec | None = None,
    ) -> None:
        super().__init__()
        self._bus: Bus | None = None
        self.repo = repo
        self.clock: Clock = clock or SystemClock()
        self.session: Session | None = None
        #: why the session could not open (then nothing can run; the UI says so)
        self.session_error: str | None = None
        #: the policy file the Simulate screen is replaying (app.tui.screens.simulate):
        #: on the app, as a new screen must not start a second replay beside it
        self.simulating: Path | None = None
        #: the id of the run in progress, once its events name it: its bundle is not
        #: sealed yet, which the evidence review called broken (a user-audit)
        self.live_run: str | None = None
        #: the exit code the session's failure calls for (2: a bad policy or config),
        #: once the user quits the workbench that showed it; None while none failed
        self.session_exit_code: int | None = None
        self.control: RunControl | None = None
        self.start_task = start_task
        #: said once the screen is up (e.g. the demo fell back to the current directory)
        self.start_notice = start_notice
        self._connect = connect
        self._runner = runner
        self._tutor = tutor
        self._tutor_session: TutorSession | None = None
        self._stack = AsyncExitStack()
        #: where session and run results go (the main screen, once mounted)
        self.home: MessagePump | None = None
        #: serve the HTTP gateway on the session (``switchyard serve --tui``)
        self.gateway = gateway
        #: where the gateway listens, once it does (``http://host:port``)
        self.gateway_address: str | None = None
        #: start-up's heap was frozen by :meth:`end_startup` (given back on unmount)
        self._froze = False
        #: the question the tutor is answering now (None: none)
        self.tutor_asking: str | None = None

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """Every notification is plain text: they carry error messages, a run's reason
        to stop, a client's name (``[/x]`` in one raised MarkupError; app/shown.py).
        ``markup`` is accepted, as widgets pass it, and ignored."""
        super().notify(
            clean(message),
            title=clean(title, one_line=True),
            severity=severity,
            timeout=timeout,
            markup=False,
        )

    @property
    def bus(self) -> Bus:
        """The app's bus, made on first use (its module builds the event models)."""
        if self._bus is None:
            from app.bus import Bus

            self._bus = Bus()
        return self._bus

    # ── session ──────────────────────────────────────────────────────────────────────────

    @work(exclusive=True, group="session", exit_on_error=False)
    async def open_session(self, subscribe: Callable[[], None] | None = None) -> None:
        """Open the session; ``subscribe`` (the screen's bridge) is called on the bus
        first, so no event of the session is missed. Started after the first frame: the
        core's modules load in a thread meanwhile, so the drawn layout stays responsive."""
        await asyncio.to_thread(load_core)
        if subscribe is not None:
            subscribe()
        session = await self._stack.enter_async_context(self._connect(self.bus))
        self.session = session
        if self.home is not None:
            self.home.post_message(SessionReady(session))
        self._first_budget(session)
        if self.start_task:
            self.start_run(self.start_task)
        if self.gateway is not None:
            self._serve_gateway(session, self.gateway)

    @work(group="budget", exit_on_error=False)
    async def _first_budget(self, session: Session) -> None:
        """The meter starts from the budget as it stands when anything is spent or held
        (the day's spend by this machine's other sessions): it said "no spend yet" until
        this session's own first reservation (a long-life audit). Published on the bus
        as the ledger's own snapshots are; a session with nothing said stays quiet."""
        from app.bus import BudgetUpdated

        snap = await session.ledger.snapshot(session.id)
        used = [snap.per_session, snap.per_day, *snap.per_provider.values()]
        if snap.per_user is not None:
            used.append(snap.per_user)
        if any(u.spent_usd or u.reserved_usd for u in used):
            await self.bus.publish(BudgetUpdated(session=session.id, snapshot=snap.model_dump()))

    def end_startup(self) -> None:
        """The session is on screen (or failed to open): start-up's objects are frozen
        and the collector's thresholds put back, if the command held them (app/heap.py)."""
        if not self._froze and heap.end_startup():
            self._froze = True

    def on_mount(self) -> None:
        self._take_signals(install=True)

    def _take_signals(self, *, install: bool) -> None:
        """SIGTERM (a service manager, ``kill``) and SIGINT from outside end the workbench
        as its quit key does: a run is stopped and its evidence sealed, the terminal put
        back, and the exit code is 143 or 130, as ``run``'s. SIGTERM killed it outright:
        the bundle unsealed, the terminal left raw (a user-audit found it)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                if install:
                    loop.add_signal_handler(sig, self.exit, 128 + sig)
                else:
                    loop.remove_signal_handler(sig)

    def action_help_quit(self) -> None:
        """Textual's ctrl+c hint, in plain text: its markup showed as "[b]ctrl+q[/b]",
        as every notification here is plain (:meth:`notify`)."""
        for key, active in self.active_bindings.items():
            if active.binding.action in ("quit", "app.quit"):
                self.notify(f"Press {key} to quit the app", title="Do you want to quit?")
                return

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "close_keys":  # (else the key goes on to the focus and the screen)
            return bool(self.screen.query("HelpPanel"))
        return True

    def action_close_keys(self) -> None:
        self.action_hide_help_panel()

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """Textual's, with its Screenshot taking :meth:`action_screenshot`: Textual's own
        (8.2.8) calls ``deliver_screenshot`` directly, which failed without a
        ``~/Downloads`` and said where it saved in markup (a user-audit)."""
        for command in super().get_system_commands(screen):
            if command.title == "Screenshot":
                # (after a tenth of a second, as Textual's: the palette is gone by then)
                command = command._replace(
                    callback=lambda: self.set_timer(0.1, self.action_screenshot)
                )
            yield command

    def action_screenshot(self, filename: str | None = None, path: str | None = None) -> None:
        """The palette's Screenshot, said in plain words: Textual's toast showed its
        markup (``[$text-success]'…'``), and a missing ``~/Downloads`` gave no reason.
        Saved in ``~/Downloads`` when there is one, else in the working folder."""
        if path is None:
            downloads = Path.home() / "Downloads"
            path = str(downloads if downloads.is_dir() else Path.cwd())
        try:
            saved = self.save_screenshot(filename, path)
        except OSError as exc:
            self.notify(f"screenshot not saved in {path}: {exc.strerror or exc}", severity="error")
            return
        self.notify(f"screenshot saved: {saved}")

    async def on_unmount(self) -> None:
        # Workers were cancelled; let them unwind before the session's stores close.
        for worker in list(self.workers):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(worker.wait(), timeout=5)
        # (after them: uvicorn's worker, in `serve --tui`, puts back on its way out the
        # handler it found, ours; removed first, the signals were ignored from then on)
        self._take_signals(install=False)
        await self._stack.aclose()
        if self._froze:
            heap.thaw_heap()

    # ── the run ──────────────────────────────────────────────────────────────────────────

    @property
    def running(self) -> bool:
        return any(w.group == "run" and w.is_running for w in self.workers)

    def start_run(self, task: str) -> bool:
        """Start ``task``; False (and a notice) when there is no session or a run is on."""
        if self.session is None:
            why = self.session_error or "the session is still opening"
            self.notify(f"cannot start a run: {why}", severity="warning")
            return False
        if self.running:
            self.notify("a run is in progress: press x to stop it first", severity="warning")
            return False
        self.control = RunControl()
        self.live_run = None  # named by the run's first stage event (MainScreen)
        if self.home is not None:
            self.home.post_message(RunStarted(task))
        self._run(self.session, task, self.control)
        return True

    @work(exclusive=True, group="run", exit_on_error=False)
    async def _run(self, session: Session, task: str, control: RunControl) -> None:
        result = await self._runner(session, task, control)
        if self.home is not None:
            self.home.post_message(RunDone(result))

    def escalate(self, role: str | None = None) -> str:
        """The user's explicit escalation request for the role at work (§3)."""
        if self.control is None or not self.running:
            self.notify("no run in progress: nothing to escalate", severity="warning")
            return ""
        from app.pipeline.control import ESCALATABLE

        asked = role or self.control.current_role
        if asked and asked not in ESCALATABLE:
            # it said "escalation requested for stage0: it asks…", and nothing ever read it
            self.notify(
                f"{asked} calls no model: press e while the Architect, the Implementer or "
                "the Judge is at work",
                severity="warning",
            )
            return ""
        target = self.control.request_escalation(asked or None)
        session = self.session
        keyed = (
            session is not None
            and target in session.policy.roles
            and any(
                session.policy.is_cloud(m) and m not in session.backends.unavailable()
                for m in session.policy.chain(target)
            )
        )
        if target and session is not None and session.local_only:
            # it promised a cloud request the router then skipped (SKIP_LOCAL_ONLY)
            self.notify(
                f"escalation requested for {target}, but local_only is on: nothing leaves "
                "this machine, it stays local",
                severity="warning",
            )
        elif target and session is not None and session.approvals.is_session_denied(session.id):
            # it said "it asks" and the request was then denied without asking (after `d`)
            self.notify(
                f"escalation requested for {target}, but this session denied every "
                "escalation (d: deny all, stay local): it stays local",
                severity="warning",
            )
        elif target and not keyed:
            # it said "it asks before leaving the machine", and every step was then skipped
            # for want of a key, with no modal ever shown
            self.notify(
                f"escalation requested for {target}, but no cloud model of its chain has a "
                "key set: each is skipped, and it stays local",
                severity="warning",
            )
        elif target:
            self.notify(f"escalation requested for {target}: it asks before leaving the machine")
        else:
            self.notify("no role is at work yet", severity="warning")
        return target

    def stop_run(self) -> None:
        """Ask the run to stop before its next model call."""
        if self.control is None or not self.running:
            self.notify("no run in progress", severity="warning")
            return
        self.control.request_stop()
        if self.home is not None:
            self.home.post_message(RunStopping())
        self.notify(
            "stop requested: the run stops when the model call in progress ends "
            "(ctrl+q quits at once)"
        )

    # ── approvals ────────────────────────────────────────────────────────────────────────

    def resolve_approval(self, request_id: str, decision: DecisionKind, reason: str) -> bool:
        """Answer the broker (on the app's loop, which is the broker's)."""
        if self.session is None:
            return False
        from app.router.approvals import ApprovalDecision

        done = self.session.approvals.resolve(
            request_id, ApprovalDecision(decision=decision, decided_by=DECIDED_BY, reason=reason)
        )
        if not done:
            self.notify("that request was already decided (timeout?)", severity="warning")
        return done

    # ── the gateway ──────────────────────────────────────────────────────────────────────

    @work(exclusive=True, group="gateway", exit_on_error=False)
    async def _serve_gateway(self, session: Session, spec: GatewaySpec) -> None:
        """The HTTP gateway on the app's loop; cancelled (and so stopped) when the app quits.
        Its requests' approvals reach the modal through the bus like a run's."""
        from app.tui.gateway import GatewayListening, GatewayStopped, host

        def ready(address: str) -> None:
            self.gateway_address = address
            self.sub_title = address
            log.info("gateway listening on %s", address)
            if self.home is not None:
                self.home.post_message(GatewayListening(address))

        await host(spec, session, ready)
        self.gateway_address = None
        if self.home is not None:
            self.home.post_message(GatewayStopped())

    # ── tutor ────────────────────────────────────────────────────────────────────────────

    @property
    def tutor(self) -> TutorSession | None:
        """The tutor conversation in progress (opened on first use); None without a session."""
        if self.session is None:
            return None
        if self._tutor_session is None:
            self._tutor_session = self._tutor(self.session, self.repo)
        return self._tutor_session

    def new_tutor(self) -> bool:
        """Forget the conversation: the next question starts a new one, with a fresh cap."""
        if any(w.group == "tutor" and w.is_running for w in self.workers):
            self.notify("the tutor is still answering", severity="warning")
            return False
        self._tutor_session = None
        return True

    def ask_tutor(self, question: str, reply_to: MessagePump, escalate: bool = False) -> None:
        """Ask; the answer goes to the tutor screen open when it comes (the one that asked
        may be gone: left and opened again, the new one stayed blank and the answer was
        lost until the next visit, a TUI audit); ``tutor_asking`` says what is being
        answered meanwhile, for a screen opened then, and for the next question, which
        drops this one. It is set here, not when the worker starts: a question asked
        again before then dropped this one without a word (a review)."""
        self.tutor_asking = question
        self._ask_tutor(question, reply_to, escalate)

    @work(exclusive=True, group="tutor", exit_on_error=False)
    async def _ask_tutor(self, question: str, reply_to: MessagePump, escalate: bool) -> None:
        try:
            tutor = self.tutor
            if tutor is None:
                raise SwitchyardError(self.session_error or "the session is still opening")
            reply = await tutor.ask(question, escalate=escalate)
        finally:
            # (a question cancelled by the next one ends after the next began: it leaves
            # the next one's mark alone)
            if self.tutor_asking is question:
                self.tutor_asking = None
        open_now: list[MessagePump] = [s for s in self.screen_stack if type(s) is type(reply_to)]
        for screen in open_now or [reply_to]:
            screen.post_message(TutorAnswered(reply))

    # ── evidence ─────────────────────────────────────────────────────────────────────────

    @work(exclusive=True, group="evidence", exit_on_error=False)
    async def list_runs(self, reply_to: MessagePump) -> None:
        from app.tui.evidence_data import runs

        reply_to.post_message(RunsListed(await asyncio.to_thread(runs, self.repo)))

    @work(exclusive=True, group="evidence", exit_on_error=False)
    async def load_run(self, run_id: str, reply_to: MessagePump) -> None:
        from app.tui.evidence_data import load_run_view

        seal = await self._sealed(run_id)
        policy = self.session.policy if self.session is not None else None
        view = await asyncio.to_thread(load_run_view, self.repo, run_id, seal, policy)
        reply_to.post_message(RunLoaded(view))

    @property
    def merging(self) -> bool:
        """A merge asked here has not ended (pending counts: two m in one turn of the loop
        both found none running)."""
        return any(w.group == "merge" and not w.is_finished for w in self.workers)

    def merge(self, run_id: str, reply_to: MessagePump) -> bool:
        """Merge ``run_id`` (the keypress is the human's approval); False, with a word,
        while a merge asked here is still under way. Its worker is never cancelled by the
        next ``m``: an exclusive worker's cancel restarted a wait for the lock without a
        word, and a merge is a commit point (app/commit_point.py)."""
        if self.merging:
            self.notify(
                "a merge is already under way: its answer comes when it ends",
                severity="warning",
            )
            return False
        self._merge(run_id, reply_to)
        return True

    @work(group="merge", exit_on_error=False)
    async def _merge(self, run_id: str, reply_to: MessagePump) -> None:
        """The gate and the checkout decide; a refused merge is still executed as
        "refused", so it leaves its audit line. The plan is read under the repository's
        merge lock, as ``switchyard merge`` reads it (merge_run): beside another merge it
        described that merge half way. A wait for that lock is said at once
        (:class:`MergeWaiting`)."""
        from app.workspace.merge import LOCK_WAIT_S, merge_run
        from app.workspace.merged import merged_run

        if self.session is None:  # no audit log to find the seal in, no policy: no merge
            self.notify("the session is not open: nothing can merge", severity="error")
            return
        seal = await self._sealed(run_id)
        outcome = await merge_run(
            self.repo,
            run_id,
            audit=self.session.audit,
            approved=True,
            approver=DECIDED_BY,
            sealed_sha256=seal,
            policy=self.session.policy,
            on_wait=lambda: reply_to.post_message(MergeWaiting(run_id, LOCK_WAIT_S)),
        )
        reply_to.post_message(MergeDone(outcome))
        if outcome.ok and self.home is not None:
            merged = await asyncio.to_thread(merged_run, self.repo, outcome.run_id)
            if merged is not None:
                self.home.post_message(RunMerged(outcome.run_id, merged))

    async def _sealed(self, run_id: str) -> str | None:
        if self.session is None:
            return None
        from app.evidence.bundle import sealed_hash

        # every chain of the store: a run sealed by another process (switchyard run, the
        # ACP agent, an earlier workbench) has its seal line in its own chain on the team store
        found = sealed_hash(await self.session.audit.run_lines(run_id), run_id)
        return found[0] if found else None

    # ── the one error handler ────────────────────────────────────────────────────────────

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "run" and self.home is not None:
            self.refresh_bindings()  # ("x stop run" is shown while a run goes)
        if event.state != WorkerState.ERROR:
            return
        group = event.worker.group
        error = event.worker.error
        text = describe_error(error)
        if group == "session":
            self.session_error = text
            # a bad policy shown in the workbench still ends it with the CLI's code (2),
            # not 0 as if all had been well (a user-audit)
            self.session_exit_code = error.exit_code if isinstance(error, SwitchyardError) else 1
        if not isinstance(error, SwitchyardError):
            log.error("worker %s failed", group, exc_info=error)
        self.notify(text, title=f"{group} failed", severity="error", timeout=8)
        failed = WorkFailed(group, text)
        if self.home is not None:
            self.home.post_message(failed)
        if self.screen is not self.home:
            self.screen.post_message(WorkFailed(group, text))
