"""What a run reads from, and leaves in, the local memory overlay (one SQLite file).

Reading: the brief's Memories (notes, commits, outcomes that match the task) and the ACE
playbook's top bullets. Writing: the curator's bullets and the run's outcome. Searching is
read-only; the memories a brief uses are then marked used, explicitly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.memory.store import MemoryStore
    from app.memory.types import Memory
    from app.pipeline.schemas import ReflectionPattern
    from app.router.session import Session

#: memories of earlier sessions in the brief (the playbook goes to Approach instead)
MEMORIES_IN_BRIEF = 5
BRIEF_MEMORY_KINDS = ("note", "commit", "outcome")
#: helpful playbook bullets in a brief (harmful ones: the policy's max_harmful_bullets)
HELPFUL_BULLETS = 5


@asynccontextmanager
async def _store(session: Session, *, create: bool) -> AsyncIterator[MemoryStore | None]:
    from app.memory.store import MemoryStore
    from app.paths import ensure_dir

    path = session.settings.memory_db
    if not create and not path.exists():
        yield None
        return
    ensure_dir(path.parent)
    async with MemoryStore.open(
        path, clock=session.router.clock, weights=session.policy.memory
    ) as store:
        yield store


async def recall_memories(session: Session, task: str, repo: Path) -> list[str]:
    """What earlier sessions learned about ``task`` in ``repo``, for the brief's Memories.

    TF-IDF and the dynamic score only: a run must not wait for torch to load an
    embedding model. The memory file is the user's, across repositories: a note is
    theirs anywhere, but a run's outcome and a commit belong to one repository. Another
    project's ("Run … failed: make the parser test pass") reached this one's planner,
    which made it this run's goal (a user-audit found it), and a cloud planner would
    have read another project's task. So an outcome counts only where its run's evidence
    is, and a commit only where git knows it.
    """
    async with _store(session, create=False) as store:
        if store is None:
            return []
        hits = await store.search(
            task, k=MEMORIES_IN_BRIEF * 4, kinds=BRIEF_MEMORY_KINDS, use_embeddings=False
        )
        ours = await asyncio.to_thread(_of_this_repo, [h.memory for h in hits], repo)
        hits = [h for h in hits if h.memory.id in ours][:MEMORIES_IN_BRIEF]
        await store.mark_used(h.memory.id for h in hits)
    return [f"[{h.memory.kind}] {h.memory.text}" for h in hits]


def _of_this_repo(memories: Sequence[Memory], repo: Path) -> set[int]:
    """The ids among ``memories`` that are ``repo``'s, or nobody's in particular."""
    from app.evidence.layout import runs_dir
    from app.workspace.git import run_git

    runs = runs_dir(repo)
    shas = {m.id: str(m.meta.get("sha") or "") for m in memories if m.kind == "commit"}
    known: set[str] = set()
    if any(shas.values()):
        asked = "".join(f"{sha}^{{commit}}\n" for sha in shas.values() if sha)
        out = run_git(repo, "cat-file", "--batch-check", input_text=asked, check=False).stdout
        # "<sha> commit <size>" for a commit this repository has, "<asked> missing" else
        known = {f[0] for f in (line.split() for line in out.splitlines()) if f[1:2] == ["commit"]}
    ours: set[int] = set()
    for m in memories:
        if m.kind == "outcome":
            run_id = str(m.meta.get("run_id") or "")
            if run_id and "/" not in run_id and (runs / run_id).is_dir():
                ours.add(m.id)
        elif m.kind == "commit":
            if shas[m.id] and shas[m.id] in known:
                ours.add(m.id)
        else:
            ours.add(m.id)
    return ours


async def playbook_bullets(session: Session) -> list[str]:
    """Top playbook bullets (ACE): helpful first, at most the policy's harmful ones."""
    async with _store(session, create=False) as store:
        if store is None:
            return []
        bullets = await store.playbook()
    helpful = [b.text for b in bullets if b.helpful >= b.harmful][:HELPFUL_BULLETS]
    harmful = [f"avoid: {b.text}" for b in bullets if b.harmful > b.helpful]
    return helpful + harmful[: session.policy.ace.max_harmful_bullets]


async def curate(session: Session, run_id: str, patterns: Sequence[ReflectionPattern]) -> int:
    """The ACE curator: patterns at the policy's confidence become playbook bullets.

    One bullet per pattern text, rated again when it recurs. Returns how many were kept.
    """
    keep = [p for p in patterns if p.confidence >= session.policy.ace.min_pattern_confidence]
    if not keep:
        return 0
    async with _store(session, create=True) as store:
        assert store is not None
        for p in keep:
            bullet = await store.add_bullet(
                p.pattern, tags=["ace"], source=run_id, source_key=f"ace:{p.pattern}"
            )
            await store.rate_bullet(bullet, helpful=int(p.helpful), harmful=int(not p.helpful))
    return len(keep)


async def remember_outcome(
    session: Session, run_id: str, task: str, outcome: str, reason: str
) -> None:
    """Keep the outcome as a memory the git harvester and later briefs can use."""
    async with _store(session, create=True) as store:
        assert store is not None
        await store.record_outcome(
            run_id,
            f"{task}: {outcome} ({reason})",
            outcome == "merge_ready",
            tags=["run", outcome],
        )
