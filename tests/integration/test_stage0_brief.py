"""The task brief: exact sections, copied sources, (empty ...) markers, stable files."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

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
    BriefOutError,
    out_dir_problem,
    write_brief,
)
from app.stage0.citations import Claim, validate_synthesis
from app.stage0.context import context_estimate
from app.stage0.engine import Stage0
from tests.integration.test_stage0_corpus import FILES, git, make_repo, small_files_policy

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


def test_a_symlinked_constitution_is_not_followed_in_the_tree_nor_in_a_commit(
    tmp_path: Path, policy: Policy
) -> None:
    """A committed CONSTITUTION.md -> /some/file outside the repository was copied into
    the brief (and so to a model). A link is skipped, as the corpus skips it: the next
    of the policy's constitution_files is used."""
    outside = tmp_path / "outside.md"
    outside.write_text("OUTSIDE SECRET\n")
    files = {k: v for k, v in FILES.items() if k != "CONSTITUTION.md"}
    files["docs/CONSTITUTION.md"] = "# Real constitution\n\nTests are truth.\n"
    repo = make_repo(tmp_path, files)
    os.symlink(outside, repo / "CONSTITUTION.md")
    os.symlink("docs/CONSTITUTION.md", repo / "constitution.md")  # inside: a link all the same
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "links")
    head = git(repo, "rev-parse", "HEAD").strip()
    for rev in (None, head):
        with Stage0(repo, policy, rev=rev, cache_dir=tmp_path / "cache") as s0:
            brief = s0.brief(TASK)
        assert brief.constitution is not None, rev
        assert brief.constitution.path == "docs/CONSTITUTION.md"
        assert "OUTSIDE" not in brief.to_markdown() and str(outside) not in brief.to_markdown()


def test_a_constitution_larger_than_max_file_bytes_is_not_read(
    tmp_path: Path, policy: Policy
) -> None:
    repo = make_repo(tmp_path, {**FILES, "CONSTITUTION.md": "rule\n" * 1000})
    small = small_files_policy(policy, 2048)
    for rev in (None, "HEAD"):
        with Stage0(repo, small, rev=rev, cache_dir=tmp_path / "cache") as s0:
            assert s0.brief(TASK).constitution is None, rev


def test_a_folder_the_brief_cannot_be_written_to_is_one_error_naming_it(
    tmp_path: Path, policy: Policy
) -> None:
    repo = make_repo(tmp_path)
    afile = tmp_path / "afile"
    afile.write_text("x\n")
    assert out_dir_problem(afile) == "not a folder"
    assert out_dir_problem(afile / "sub") == "a file is in the way"
    assert out_dir_problem(tmp_path / "new" / "dir") is None
    with Stage0(repo, policy) as s0:
        brief = s0.brief(TASK)
    for bad in (afile, afile / "sub"):
        with pytest.raises(BriefOutError, match=f"^{re.escape(str(bad))}: cannot write"):
            write_brief(brief, bad)
    assert afile.read_text() == "x\n"


def test_the_two_brief_files_are_replaced_together_or_not_at_all(
    tmp_path: Path, policy: Policy
) -> None:
    """A brief.json that could not be written left the new Markdown beside the old JSON."""
    repo = make_repo(tmp_path)
    out = tmp_path / "out"
    (out / "brief.json").mkdir(parents=True)
    (out / "TASK_BRIEF.md").write_text("the old brief\n")
    with Stage0(repo, policy) as s0:
        brief = s0.brief(TASK)
    with pytest.raises(BriefOutError, match=r"brief\.json is a folder"):
        write_brief(brief, out)
    assert (out / "TASK_BRIEF.md").read_text() == "the old brief\n"
    assert sorted(p.name for p in out.iterdir()) == ["TASK_BRIEF.md", "brief.json"]
