"""A whole-repository sweep's sources, and the Librarian's tool actions (what it reads
and searches), which make it tool-heavy past the policy's ``[tool_use]`` bound."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from app.pipeline.librarian.notes import Source
from app.policy.schema import Policy


def sweep_sources(repo: Path, policy: Policy, rev: str | None = None) -> list[Source]:
    """Every chunk of the repository's corpus, in path order: ``(path:start-end, text)``;
    of the working tree, or of commit ``rev``'s tree (a run's: what it works on)."""
    from app.stage0.build import load_texts
    from app.stage0.engine import Stage0

    with Stage0(repo, policy, rev=rev) as engine:
        engine.refresh()
        index = engine.index
        rows = sorted(range(len(index)), key=lambda r: index.refs[r].sort_key())
        texts = load_texts(engine.cache, index, rows)
        return [
            (f"{index.refs[r].path}:{index.refs[r].start}-{index.refs[r].end}", texts[r])
            for r in rows
        ]


def tool_actions(sources: Sequence[Source], searches: int) -> int:
    """The Librarian's real tool actions for a job: each file it reads (a source id
    ``path:start-end`` names its file) and each search it runs."""
    files = {sid.rsplit(":", 1)[0] for sid, _ in sources if ":" in sid}
    return len(files) + searches


def tool_heavy(actions: int, policy: Policy) -> bool:
    return actions >= policy.tool_use.librarian_heavy_actions
