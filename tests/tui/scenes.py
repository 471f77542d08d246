"""Drive the app to each screen worth a picture (test support, shared by the snapshot
tests and ``python -m app.tui.screenshots``). Each scene waits on the app's state,
never on a fixed sleep."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Input

from app.tui.screens.approval import ApprovalScreen
from app.tui.screens.evidence import EvidenceScreen
from app.tui.screens.policy import PolicyScreen
from app.tui.screens.tutor import TutorScreen
from tests.tui.helpers import freeze, settle, until

Scene = Callable[[Pilot[Any]], Awaitable[None]]


async def session_open(pilot: Pilot[Any]) -> None:
    app: Any = pilot.app
    await until(pilot, lambda: app.session is not None, what="the session")


async def approval(pilot: Pilot[Any]) -> None:
    app = pilot.app
    await until(pilot, lambda: isinstance(app.screen, ApprovalScreen), what="the modal")
    await settle(pilot)


async def run_to_end(pilot: Pilot[Any]) -> None:
    app: Any = pilot.app
    await approval(pilot)
    # as a person answers: after the pause the modal waits for (0 s in the tests)
    await pilot.pause(ApprovalScreen.TYPING_PAUSE_S)
    await pilot.press("y")
    await until(pilot, lambda: not app.running, what="the run to end")
    await until(pilot, lambda: app.home.header.state == "merge_ready", what="merge_ready")
    await settle(pilot)


async def evidence(pilot: Pilot[Any]) -> None:
    app: Any = pilot.app
    await session_open(pilot)
    await pilot.press("escape", "v")
    await until(
        pilot,
        lambda: isinstance(app.screen, EvidenceScreen) and app.screen.view is not None,
        what="a run",
    )
    await settle(pilot)


async def evidence_verdict(pilot: Pilot[Any]) -> None:
    await evidence(pilot)
    pilot.app.screen.query_one("#run-tabs").active = "tab-verdict"  # type: ignore[attr-defined]
    await settle(pilot)


async def evidence_diffs(pilot: Pilot[Any]) -> None:
    await evidence(pilot)
    await pilot.press("3")
    await settle(pilot)


async def enter_text(pilot: Pilot[Any], selector: str, text: str) -> None:
    """``text`` put in the input ``selector`` and entered. Not typed: a key press a
    character was most of a tutor test's time (the cap's scene: 12 s), and what the
    scenes show is what enter does with it."""
    pilot.app.screen.query_one(selector, Input).value = text
    await pilot.press("enter")


async def tutor(pilot: Pilot[Any]) -> None:
    app: Any = pilot.app
    await session_open(pilot)
    await pilot.press("escape", "t")
    await until(pilot, lambda: isinstance(app.screen, TutorScreen), what="the tutor")
    await enter_text(pilot, "#tutor-input", "why does parse drop the last token?")
    await until(pilot, lambda: app.screen.turn is not None, what="the answer")
    await settle(pilot)


async def tutor_at_cap(pilot: Pilot[Any]) -> None:
    """The tutor after every turn the policy allows: the input is off, the screen says why."""
    app: Any = pilot.app
    await tutor(pilot)
    while not app.tutor.capped:
        used = app.tutor.turns_used
        await pilot.press("slash")
        await enter_text(pilot, "#tutor-input", f"my reply number {used}")
        await until(pilot, lambda used=used: app.tutor.turns_used > used, what="a turn")
    await until(pilot, lambda: app.screen.query_one("#tutor-input").disabled, what="the cap")
    await settle(pilot)


async def policy(pilot: Pilot[Any]) -> None:
    app = pilot.app
    await session_open(pilot)
    app.push_screen(PolicyScreen())
    await until(pilot, lambda: isinstance(app.screen, PolicyScreen), what="the policy")
    await settle(pilot)


def still(scene: Scene) -> Scene:
    """The scene, then no blinking cursor and no toasts: a picture that never varies."""

    async def run(pilot: Pilot[Any]) -> None:
        await scene(pilot)
        await settle(pilot)
        freeze(pilot)
        await settle(pilot)

    return run


#: name → (scene, starts the scripted run?, needs evidence bundles?)
SCENES: dict[str, tuple[Scene, bool, bool]] = {
    "main": (run_to_end, True, False),
    "approval": (approval, True, False),
    "evidence": (evidence, False, True),
    "tutor": (tutor, False, False),
    "policy": (policy, False, False),
}
