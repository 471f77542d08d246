"""A cancel that comes with the human's "merge" answer: the merge runs to its end and the
turn is told it ran (the audit found the merge done in git while the user was told
"nothing was merged")."""

from __future__ import annotations

import asyncio
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

    def blockers(self) -> list[str]:
        return []


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

    monkeypatch.setattr(merging, "prepare_merge", lambda *a, **k: _Plan())
    monkeypatch.setattr(merging, "_ask", ask)
    monkeypatch.setattr(merging, "execute_merge", execute)
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
