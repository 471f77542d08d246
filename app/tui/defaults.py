"""The real core behind the app: a session on the bus, the pipeline, the tutor.

The app takes each as a callable, so tests and screenshots plug a scripted session in.
Core modules are imported inside the functions: the first frame must not wait for them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.bus import Bus
    from app.config import ApproveMode, Settings
    from app.pipeline.control import RunControl
    from app.pipeline.tutor import TutorSession
    from app.policy.schema import Policy
    from app.router.session import Session

#: Runs one task to its end; its return value is shown when it ends (a RunOutcome).
Runner = Callable[["Session", str, "RunControl"], Awaitable[Any]]
#: Opens a tutor conversation on the session, about the repository in view.
Tutor = Callable[["Session", Path], "TutorSession"]
#: Opens the session the app works in, wired to the app's bus.
Connect = Callable[["Bus"], AbstractAsyncContextManager["Session"]]


def connect_default(*, local_only: bool = False, policy: Path | None = None) -> Connect:
    """The user's settings and policy; approvals answered in the TUI (a BusDecider)."""

    @asynccontextmanager
    async def connect(bus: Bus) -> AsyncIterator[Session]:
        from app.config import load_settings
        from app.policy import load_policy
        from app.router.approvals import BusDecider
        from app.router.session import open_session

        settings = load_settings(policy=policy)
        loaded = load_policy(settings.policy)
        async with open_session(
            settings,
            loaded.policy,
            decider=BusDecider(bus),
            bus=bus,
            local_only=local_only,
        ) as session:
            yield session

    return connect


def connect_with(
    settings: Settings,
    policy: Policy,
    *,
    approve: ApproveMode | None = None,
    local_only: bool = False,
) -> Connect:
    """A session on settings and a policy already loaded (``serve --tui``): approvals are
    answered in the TUI (a BusDecider), unless ``approve`` is allow or deny."""

    @asynccontextmanager
    async def connect(bus: Bus) -> AsyncIterator[Session]:
        from app.router.approvals import decider_for
        from app.router.session import open_session

        decider = decider_for(approve or "ask", bus)  # ask, with a bus: the modal
        async with open_session(
            settings, policy, decider=decider, bus=bus, local_only=local_only
        ) as session:
            yield session

    return connect


def pipeline_runner(repo: Path) -> Runner:
    """The real pipeline (``app.pipeline.runner.run_pipeline``) on ``repo``."""

    async def run(session: Session, task: str, control: RunControl) -> Any:
        from app.pipeline.runner import RunOptions, run_pipeline

        options = RunOptions(repo=repo)
        return await run_pipeline(session, task, options, control)

    return run


def open_tutor(session: Session, repo: Path) -> TutorSession:
    """The core's :class:`~app.pipeline.tutor.TutorSession` (turn cap, memory, questions
    first), grounded in ``repo``; the app keeps one per conversation."""
    from app.pipeline.tutor import TutorSession

    return TutorSession.for_session(session, repo=repo)
