"""A cancel that comes with the human's "merge" answer: the merge runs to its end and the
turn is told it ran (the audit found the merge done in git while the user was told
"nothing was merged")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from app.acp import merging
from app.workspace.merge import MergeOutcome


class _Plan:
    run_id = "20261206-000000-abcdef"
    already_merged = False
    target_ref = "refs/heads/main"
    repo = "."
    files: tuple[str, ...] = ()
    # (what the report describes)
    task = "fix the parser"
    branch = "switchyard/run"
    tip = before_head = "0" * 40
    facts = None
    notes: tuple[str, ...] = ()

    def blockers(self) -> list[str]:
        return []


def _locked(
    monkeypatch: pytest.MonkeyPatch, execute: Callable[..., Awaitable[MergeOutcome]]
) -> None:
    """The plan "read under the merge lock" is _Plan, and its merge is ``execute``."""

    class Locked:
        plan = _Plan()
        held = True

        async def execute(self, **kwargs: Any) -> MergeOutcome:
            return await execute(self.plan, **kwargs)

    @asynccontextmanager
    async def locked_plan(*args: Any, **kwargs: Any) -> AsyncIterator[Locked]:
        yield Locked()

    monkeypatch.setattr(merging, "locked_plan", locked_plan)


async def test_a_cancel_while_the_merge_runs_waits_for_it_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started, release, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()
    reported: list[MergeOutcome] = []

    async def ask(*args: Any, **kwargs: Any) -> tuple[bool, str]:
        return True, "merge"

    async def execute(plan: Any, **kwargs: Any) -> MergeOutcome:
        started.set()
        await release.wait()
        finished.set()
        return MergeOutcome(run_id=plan.run_id, ok=True, merged=True)

    async def report(plan: Any, outcome: MergeOutcome, *args: Any, **kwargs: Any) -> None:
        reported.append(outcome)

    _locked(monkeypatch, execute)
    monkeypatch.setattr(merging, "_ask", ask)
    monkeypatch.setattr(merging, "_report", report)
    settled: list[MergeOutcome] = []

    async def nothing(*args: Any) -> None:
        return None

    turn = asyncio.create_task(
        merging.offer_merge(
            Path("."),
            _Plan.run_id,
            audit=None,  # type: ignore[arg-type]
            lines=[],
            send=nothing,
            ask=nothing,
            approver="acp:test",
            timeout_s=5,
            policy=None,  # type: ignore[arg-type]
            settled=settled,
        )
    )
    await started.wait()
    turn.cancel()  # the user's Stop, right after their Merge
    await asyncio.sleep(0)
    turn.cancel()  # and the hang-up's stop after it: the merge still runs to its end
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await turn
    assert finished.is_set()  # the merge ran to its end ...
    assert [o.merged for o in settled] == [True]  # ... the turn knows it ran ...
    assert [o.merged for o in reported] == [True]  # ... and the user was told


async def test_a_merge_allowed_on_a_checkout_that_moved_is_offered_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two sessions on one repository, both merges allowed: the second found the checkout
    moved (the first had landed) and told the user "try again", which an editor cannot
    (an ACP audit). It is prepared and offered again on the new head; after
    ``REOFFERS`` more offers the last outcome stands as it is."""
    asked: list[str] = []
    said: list[str] = []
    moved = MergeOutcome(
        run_id=_Plan.run_id,
        ok=False,
        reasons=[f"{merging.MOVED}; try again"],
    )

    async def ask(plan: Any, tid: str, *args: Any, **kwargs: Any) -> tuple[bool, str]:
        asked.append(tid)
        return True, "merge"

    async def send(update: Any) -> None:
        text = getattr(getattr(update, "content", None), "text", None)
        if text:
            said.append(text)

    async def offer(outcomes: list[MergeOutcome]) -> tuple[MergeOutcome, list[MergeOutcome]]:
        """offer_merge with git's part answering ``outcomes`` in turn."""

        async def execute(plan: Any, **kwargs: Any) -> MergeOutcome:
            return outcomes.pop(0)

        _locked(monkeypatch, execute)
        settled: list[MergeOutcome] = []
        asked.clear()
        said.clear()
        done = await merging.offer_merge(
            Path("."),
            _Plan.run_id,
            audit=None,  # type: ignore[arg-type]
            lines=[],
            send=send,
            ask=send,
            approver="acp:test",
            timeout_s=5,
            policy=None,  # type: ignore[arg-type]
            settled=settled,
        )
        return done, settled

    monkeypatch.setattr(merging, "_ask", ask)
    landed = MergeOutcome(run_id=_Plan.run_id, ok=True, merged=True)
    done, settled = await offer([moved, landed])
    assert done.merged and settled == [landed]  # (the turn's outcome: the last offer's)
    assert asked == [f"{_Plan.run_id}:merge", f"{_Plan.run_id}:merge-2"]  # one id each
    assert "offered again" in said[0] and "try again" not in said[0]
    assert said[1].strip().startswith(f"Merged run {_Plan.run_id}")

    # the checkout moving every time: offered 1 + REOFFERS times, the last said as it is
    done, settled = await offer([moved] * (merging.REOFFERS + 1))
    assert not done.merged and len(asked) == merging.REOFFERS + 1 and settled == [moved]
    assert "try again" in said[-1] and "offered again" not in said[-1]

    # a decline is never offered again (the gate refuses it before the checkout is read)
    declined = MergeOutcome(run_id=_Plan.run_id, ok=False, reasons=["HUMAN: declined"])
    done, settled = await offer([declined])
    assert settled == [declined] and len(asked) == 1
