"""GR-001: single-owner stages, the legacy consensus flag ignored with one warning, the critic."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from app.audit.types import AuditLine, AuditSink
from app.config import load_settings
from app.errors import SwitchyardError
from app.policy import consensus
from app.policy.consensus import (
    LEGACY_WARNING,
    UnknownStage,
    consensus_requested,
    critic_enabled,
    expected_agents_for_stage,
    run_spec_consensus,
)
from app.policy.schema import Policy


class RecordingSink:
    """An AuditSink that keeps what it was given."""

    def __init__(self) -> None:
        self.lines: list[AuditLine] = []

    async def append(
        self,
        kind: str,
        *,
        session: str,
        run: str | None = None,
        role: str | None = None,
        from_: str | None = None,
        to: str | None = None,
        reason_codes: Sequence[str] = (),
        values: Mapping[str, Any] | None = None,
        provenance: Mapping[str, Any] | None = None,
        detail: str = "",
    ) -> AuditLine:
        line = AuditLine(
            seq=len(self.lines) + 1,
            ts="2026-01-01T00:00:00Z",
            session=session,
            run=run,
            kind=kind,
            role=role,
            from_=from_,
            to=to,
            reason_codes=list(reason_codes),
            values=dict(values or {}),
            provenance=dict(provenance or {}),
            detail=detail,
            prev_hash="0" * 64,
            hash="1" * 64,
        )
        self.lines.append(line)
        return line


@pytest.fixture(autouse=True)
def _fresh_warning_flag() -> Iterator[None]:
    consensus._reset_for_tests()
    yield
    consensus._reset_for_tests()


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


def _with_consensus(policy: Policy, *, enabled: bool, critic: bool = False) -> Policy:
    flags = policy.consensus.model_copy(update={"enabled": enabled, "critic": critic})
    return policy.model_copy(update={"consensus": flags})


# ── expected_agents_for_stage ───────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("stage", "agents"),
    [
        ("architect", ["qwen3-14b"]),
        ("implementer", ["qwen2.5-coder-32b"]),
        ("judge", ["gpt-5.1-high"]),
        ("tier2", ["claude-sonnet-4.6"]),  # the alias notebooklm, resolved
        ("stage0", []),  # deterministic retrieval: no model owns it
    ],
)
def test_expected_agent_is_the_roles_default(policy: Policy, stage: str, agents: list[str]) -> None:
    assert expected_agents_for_stage(policy, stage) == agents
    assert expected_agents_for_stage(_with_consensus(policy, enabled=True), stage) == agents


def test_every_pipeline_stage_has_at_most_one_owner(policy: Policy) -> None:
    for stage in policy.consensus.pipeline:
        assert len(expected_agents_for_stage(policy, stage)) <= 1


def test_unknown_stage_is_a_clear_error(policy: Policy) -> None:
    with pytest.raises(UnknownStage, match="'planner'") as info:
        expected_agents_for_stage(policy, "planner")
    assert isinstance(info.value, SwitchyardError)
    assert info.value.exit_code == 2


# ── run_spec_consensus ──────────────────────────────────────────────────────────────────


async def test_disabled_skips_and_writes_one_audit_line(
    policy: Policy, sink: RecordingSink
) -> None:
    audit: AuditSink = sink
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning would fail the test
        out = await run_spec_consensus(
            policy, "architect", enabled=False, audit=audit, session="s1", run="r1"
        )
    assert (out.consensus_ok, out.skipped, out.mode, out.warning) == (
        True,
        True,
        "single_owner",
        None,
    )
    assert out.agents == ["qwen3-14b"]
    (line,) = sink.lines
    assert line.kind == "consensus"
    assert line.reason_codes == ["GR001_SINGLE_OWNER"]
    assert (line.session, line.run, line.role, line.to) == ("s1", "r1", "architect", "qwen3-14b")
    assert "consensus skipped" in line.detail
    assert line.values == {"consensus_flag": False, "mode": "single_owner", "agents": ["qwen3-14b"]}


async def test_legacy_flag_warns_once_per_process(policy: Policy, sink: RecordingSink) -> None:
    with pytest.warns(DeprecationWarning, match="SPEC_KIT_CONSENSUS=true is deprecated"):
        first = await run_spec_consensus(
            policy, "implementer", enabled=True, audit=sink, session="s1"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        second = await run_spec_consensus(policy, "judge", enabled=True, audit=sink, session="s1")
    assert [w for w in caught if issubclass(w.category, DeprecationWarning)] == []

    for out in (first, second):
        assert (out.consensus_ok, out.skipped, out.mode) == (True, True, "legacy_ignored")
        assert out.warning == LEGACY_WARNING  # every outcome explains itself
        assert len(out.agents) == 1  # still one owner: there is no voting
    assert len(sink.lines) == 2
    assert all(line.reason_codes == ["GR001_SINGLE_OWNER"] for line in sink.lines)
    assert all(line.values["consensus_flag"] is True for line in sink.lines)
    assert "deprecated" in sink.lines[0].detail

    consensus._reset_for_tests()
    with pytest.warns(DeprecationWarning):
        await run_spec_consensus(policy, "judge", enabled=True, audit=sink, session="s1")


async def test_stage_without_a_model(policy: Policy, sink: RecordingSink) -> None:
    out = await run_spec_consensus(policy, "stage0", enabled=False, audit=sink, session="s1")
    assert out.consensus_ok and out.agents == []
    assert sink.lines[0].to is None
    assert "deterministic" in sink.lines[0].detail


async def test_unknown_stage_writes_nothing(policy: Policy, sink: RecordingSink) -> None:
    with pytest.raises(UnknownStage):
        await run_spec_consensus(policy, "synthesizer", enabled=False, audit=sink, session="s1")
    assert sink.lines == []


# ── flags ───────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("in_policy", "from_env", "expected"),
    [(False, False, False), (True, False, True), (False, True, True), (True, True, True)],
)
def test_critic_and_consensus_flags(
    policy: Policy, in_policy: bool, from_env: bool, expected: bool
) -> None:
    p = _with_consensus(policy, enabled=in_policy, critic=in_policy)
    assert critic_enabled(p, from_env) is expected
    assert consensus_requested(p, from_env) is expected


def test_spec_kit_env_flags_reach_the_helpers(
    policy: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not critic_enabled(policy, load_settings().critic)
    monkeypatch.setenv("SPEC_KIT_CRITIC", "true")
    monkeypatch.setenv("SPEC_KIT_CONSENSUS", "true")
    settings = load_settings()
    assert critic_enabled(policy, settings.critic)
    assert consensus_requested(policy, settings.consensus)
