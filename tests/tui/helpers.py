"""Waiting on the app without sleeping a fixed time, and collecting its messages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from textual.message import Message
from textual.pilot import Pilot
from textual.widgets import Input

M = TypeVar("M", bound=Message)


class Messages:
    """A ``message_hook`` that keeps every message the app's pumps received."""

    def __init__(self) -> None:
        self.seen: list[Message] = []

    def __call__(self, message: Message) -> None:
        self.seen.append(message)

    def of(self, kind: type[M]) -> list[M]:
        # A message is seen once per pump it reaches; keep each object once.
        out: list[M] = []
        ids: set[int] = set()
        for m in self.seen:
            if isinstance(m, kind) and id(m) not in ids:
                ids.add(id(m))
                out.append(m)
        return out


async def until(
    pilot: Pilot[Any], predicate: Callable[[], object], seconds: float = 10.0, what: str = ""
) -> None:
    """Pause in small steps until ``predicate()`` is true; fail after ``seconds``."""
    steps = int(seconds / 0.02)
    for _ in range(steps):
        if predicate():
            return
        await pilot.pause(0.02)
    raise AssertionError(f"timed out waiting for {what or predicate}")


async def settle(pilot: Pilot[Any]) -> None:
    """Let queued messages, timers (the bridge's frame) and a repaint run."""
    await pilot.pause(0.1)
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()


async def palette(pilot: Pilot[Any], command: str) -> None:
    """Run ``command`` from the command palette (typed, its match let appear, entered)."""
    await pilot.press("ctrl+p", *command)
    await pilot.pause(0.3)
    await pilot.press("enter")
    await settle(pilot)


def freeze(pilot: Pilot[Any]) -> None:
    """No blinking cursor and no toasts: a snapshot must not depend on timing."""
    app = pilot.app
    for screen in app.screen_stack:
        for box in screen.query(Input):
            box.cursor_blink = False
    app.clear_notifications()
