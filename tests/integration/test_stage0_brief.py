"""The task brief: exact sections, copied sources, (empty ...) markers, stable files."""

from __future__ import annotations

import json
import re
from pathlib import Path

from app.policy.schema import Policy
from app.stage0.brief import (
    BRIEF_JSON,
    BRIEF_MD,
    EMPTY_BULLETS,
    EMPTY_MEMORIES,
    EMPTY_SPEC,
    NO_CONSTITUTION,
    SECTIONS,
    Brief,
)
from app.stage0.citations import Claim, validate_synthesis
from app.stage0.context import context_estimate
from app.stage0.engine import Stage0
from tests.integration.test_stage0_corpus import FILES, make_repo

TASK = "make the budget ledger refuse a negative reservation"


def _sections(md: str) -> dict[str, str]:
    parts = re.split(r"^## (.+)$", md, flags=re.M)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts), 2)}


def test_sections_are_exactly_these_in_this_order(tmp_path: Path, policy: Policy) -> None:
    repo = make_repo(tmp_path)
    with Stage0(repo, policy) as s0:
        s0.brief(TASK, tmp_path / "out")
    md = (tmp_path / "out" / BRIEF_MD).read_text()
    assert re.findall(r"^## (.+)$", md, flags=re.M) == list(SECTIONS)
    assert md.startswith("# Task brief\n\n**Task:** make the budget ledger")


def test_empty_sections_are_marked_never_filled(tmp_path: Path, policy: Policy) -> None:
    repo = make_repo(tmp_path)
    with Stage0(repo, policy) as s0:
        brief = s0.brief(TASK, tmp_path / "out")
    sec = _sections((tmp_path / "out" / BRIEF_MD).read_text())
    assert sec["Project constitution"].startswith("From `CONSTITUTION.md`:")
    assert "Compile and tests are truth." in sec["Project constitution"]
    assert sec["Spec snapshot"] == EMPTY_SPEC
    assert sec["Memories"] == EMPTY_MEMORIES
    assert (
        sec["Risks"]
        == sec["Approach"]
        == EMPTY_BULLETS
        == ("(empty: no memories or playbook bullets matched)")
    )
    assert brief.risks == [] and brief.approach == []
    assert "pkg/ledger.py:" in sec["Code context"] and "```python" in sec["Code context"]
    assert "docs/guide.md:" in sec["Docs"] and "pkg/" not in sec["Docs"]


def test_no_constitution_file_says_none_found(tmp_path: Path, policy: Policy) -> None:
    files = {k: v for k, v in FILES.items() if k != "CONSTITUTION.md"}
    repo = make_repo(tmp_path, files)
    with Stage0(repo, policy) as s0:
        brief = s0.brief(TASK, tmp_path / "out")
    assert brief.constitution is None
    assert _sections(brief.to_markdown())["Project constitution"] == NO_CONSTITUTION


def test_spec_memories_and_bullets_are_copied_as_given(tmp_path: Path, policy: Policy) -> None:
    repo = make_repo(tmp_path)
    spec = tmp_path / "spec.md"
    spec.write_text("# Spec\n\nNegative amounts raise ValueError.\n")
    with Stage0(repo, policy) as s0:
        brief = s0.brief(
            TASK,
            tmp_path / "out",
            spec=spec,
            memories=["Ledger tests run against real SQLite."],
            risks=["A refused reservation must leave no row behind."],
            approach=["Validate before the INSERT."],
        )
    sec = _sections(brief.to_markdown())
    assert "Negative amounts raise ValueError." in sec["Spec snapshot"]
    assert sec["Memories"] == "- Ledger tests run against real SQLite."
    assert sec["Risks"] == "- A refused reservation must leave no row behind."
    assert sec["Approach"] == "- Validate before the INSERT."
    assert brief.metadata.reserved_tokens == context_estimate(
        [
            brief.constitution.text if brief.constitution else "",
            brief.spec.text if brief.spec else "",
            *brief.memories,
            *brief.risks,
            *brief.approach,
            TASK,
        ]
    )


def test_metadata_and_brief_json_are_complete_and_stable(tmp_path: Path, policy: Policy) -> None:
    repo = make_repo(tmp_path)
    with Stage0(repo, policy) as s0:
        brief = s0.brief(TASK, tmp_path / "a")
    with Stage0(repo, policy) as s0:
        s0.brief(TASK, tmp_path / "b")
    for name in (BRIEF_MD, BRIEF_JSON):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    raw = (tmp_path / "a" / BRIEF_JSON).read_text()
    assert Brief.model_validate_json(raw) == brief
    assert list(json.loads(raw)) == sorted(json.loads(raw))
    meta_md = _sections(brief.to_markdown())["Metadata"]
    meta = json.loads(meta_md.removeprefix("```json").removesuffix("```"))
    assert meta["query"] == TASK
    assert meta["corpus_hash"] == brief.metadata.corpus_hash and len(meta["corpus_hash"]) == 16
    assert meta["params"]["mmr_lambda"] == 0.7 and meta["params"]["top_k"] == 15
    assert meta["chunk_ids"] == [c.id for c in brief.chunks] != []


def test_a_synthesis_over_the_brief_is_checked_against_it(tmp_path: Path, policy: Policy) -> None:
    repo = make_repo(tmp_path)
    with Stage0(repo, policy) as s0:
        brief = s0.brief(TASK, None)
    ledger = next(c for c in brief.code if c.symbol == "BudgetLedger.reserve")
    good = [Claim(text="negatives raise", cites=[ledger.id], quote='raise ValueError("negative')]
    assert validate_synthesis(good, brief).ok
    assert not validate_synthesis([Claim(text="x", cites=["0123456789ab"])], brief).ok


def test_a_small_reader_window_keeps_the_brief_inside_it(tmp_path: Path, policy: Policy) -> None:
    repo = make_repo(tmp_path)
    with Stage0(repo, policy) as s0:
        brief = s0.brief(TASK, None, context_window=600)
    meta = brief.metadata
    assert meta.params.budget_tokens == 300
    assert meta.reserved_tokens + meta.budget_used <= 300


def test_a_task_that_matches_nothing_gives_marked_empty_chunk_sections(
    tmp_path: Path, policy: Policy
) -> None:
    repo = make_repo(tmp_path)
    with Stage0(repo, policy) as s0:
        brief = s0.brief("zzqx vvkw", None)
    sec = _sections(brief.to_markdown())
    assert sec["Code context"] == "(empty: no code chunk matched the task within the budget)"
    assert sec["Docs"] == "(empty: no doc chunk matched the task within the budget)"
    assert brief.metadata.chunk_ids == []
