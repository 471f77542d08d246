"""What a run reads from, and leaves in, the local memory overlay (one SQLite file).

Reading: the brief's Memories (notes, commits, outcomes that match the task) and the ACE
playbook's top bullets. Writing: the curator's bullets and the run's outcome. Searching is
read-only; the memories a brief uses are then marked used, explicitly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.memory.store import MemoryStore
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


async def recall_memories(session: Session, task: str) -> list[str]:
    """What earlier sessions learned about ``task``, for the brief's Memories section.

    TF-IDF and the dynamic score only: a run must not wait for torch to load an
    embedding model.
    """
    async with _store(session, create=False) as store:
        if store is None:
            return []
        hits = await store.search(
            task, k=MEMORIES_IN_BRIEF, kinds=BRIEF_MEMORY_KINDS, use_embeddings=False
        )
        await store.mark_used(h.memory.id for h in hits)
    return [f"[{h.memory.kind}] {h.memory.text}" for h in hits]


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
