"""`policy diff` sees what routes differently: the order of a role's triggers (the first
that fires chooses the target), and a High-Risk rule id given twice is refused (diff
matches rules by id: the second went unseen)."""

from __future__ import annotations

from pathlib import Path

from app.errors import PolicyError
from app.policy import load_policy
from app.policy.diff import diff_policies
from app.resources import default_policy_path

SEED = default_policy_path().read_text(encoding="utf-8")
FAILED = SEED[SEED.index('[[triggers]]\nid = "implementer_failed_loops"') :]
FAILED = FAILED[: FAILED.index("[[triggers]]", 1)]
LOW = SEED[SEED.index('[[triggers]]\nid = "implementer_low_self_check"') :]
LOW = LOW[: LOW.index("[[triggers]]", 1)]


def test_swapped_triggers_of_a_role_are_a_difference(tmp_path: Path) -> None:
    swapped = SEED.replace(FAILED + LOW, LOW + FAILED)
    assert swapped != SEED
    path = tmp_path / "swapped.toml"
    path.write_text(swapped, encoding="utf-8")
    diff = diff_policies(load_policy().policy, load_policy(path).policy)
    (entry,) = diff.entries
    assert entry.path == "triggers.order.implementer" and entry.category == "thresholds"
    assert entry.old[:2] == ["implementer_failed_loops", "implementer_low_self_check"]
    assert entry.new[:2] == ["implementer_low_self_check", "implementer_failed_loops"]


def test_a_high_risk_rule_id_given_twice_is_refused(tmp_path: Path) -> None:
    extra = (
        '[[high_risk.rules]]\nid = "public_api"\ntitle = "again"\npaths = ["**/*.sql"]\n'
        "lines = []\nrequires_cross_module = false\n\n"
    )
    path = tmp_path / "twice.toml"
    path.write_text(SEED.replace("[[high_risk.rules]]", extra + "[[high_risk.rules]]", 1))
    try:
        load_policy(path)
    except PolicyError as exc:
        assert any("duplicate rule id 'public_api'" in p for p in exc.problems), exc.problems
    else:
        raise AssertionError("a duplicate rule id was accepted")


def test_a_trigger_of_every_role_moved_among_a_roles_own_is_a_difference(tmp_path: Path) -> None:
    """decide() reads a role's triggers and every role's ('*') in one file order: moving
    user_request above the Judge's High-Risk trigger changed the Judge's order unseen."""
    start = SEED.index('[[triggers]]\nid = "user_request"')
    end = SEED.index("[[", start + 2)
    block = SEED[start:end]
    moved = SEED.replace(block, "").replace(
        '[[triggers]]\nid = "judge_high_risk"', block + '[[triggers]]\nid = "judge_high_risk"'
    )
    path = tmp_path / "moved.toml"
    path.write_text(moved, encoding="utf-8")
    diff = diff_policies(load_policy().policy, load_policy(path).policy)
    judge = [e for e in diff.entries if e.path == "triggers.order.judge"]
    assert judge and judge[0].old.index("judge_high_risk") < judge[0].old.index("user_request")
    assert judge[0].new.index("user_request") < judge[0].new.index("judge_high_risk")
