"""A scripted session for the TUI's tests, snapshots and screenshots (test support).

The session is real (``open_session``: audit chain, budget ledger, approvals broker with a
BusDecider, all on the app's bus, in a temp data dir, on a ManualClock). Only the
pipeline is scripted: :class:`ScriptedRun` publishes what ``run_pipeline`` publishes, in
its order, and asks for its escalation through the real broker. :func:`make_repo` and
:func:`make_run` build a git repo with sealed evidence bundles for the evidence screen.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.backends.base import Message
from app.bus import (
    Bus,
    DiffUpdated,
    Event,
    PlanStepsChanged,
    PlanUpdated,
    RunFinished,
    StageChanged,
    TestLoopFinished,
    TestOutput,
    TokenDelta,
)
from app.clock import ManualClock
from app.config import Settings
from app.pipeline.control import RunControl
from app.pipeline.schemas import TutorTurn
from app.pipeline.structured import Answer
from app.pipeline.tutor import TutorSession
from app.policy import load_policy
from app.router.approvals import ApprovalRequest, BusDecider
from app.router.session import Session, open_session
from app.router.types import Signals

SESSION_ID = "3f2a9c1d7e0b"
RUN_ID = "20260101-120000-a1b2c3"
TASK = "make the failing parser test pass"
REQUEST_ID = "7c1e04b2d9aa4f0f"
START = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)

PLAN: dict[str, Any] = {
    "goal": "parse() must keep the last token; test_parse_tail fails today",
    "steps": [
        {"title": "read the failing test", "files": ["tests/test_parser.py"], "rationale": ""},
        {"title": "fix the off-by-one in parse()", "files": ["src/parser.py"], "rationale": ""},
        {"title": "add a regression test", "files": ["tests/test_parser.py"], "rationale": ""},
    ],
    "risks": ["other callers may rely on the dropped token"],
    "acceptance_tests": ["tests/test_parser.py::test_parse_tail"],
    "confidence": 0.81,
    "open_questions": [],
}

#: PLAN as the panes get it once grounded (app.pipeline.architect.publish_plan)
SHOWN_PLAN: dict[str, Any] = {
    **PLAN,
    "grounding": {"self_report": 0.81, "cap": 1.0, "value": 0.81, "reasons": []},
}

DIFF_1 = """\
diff --git a/src/parser.py b/src/parser.py
--- a/src/parser.py
+++ b/src/parser.py
@@ -38,7 +38,7 @@ def parse(tokens):
     \"\"\"Group tokens into (name, value) pairs.\"\"\"
     out = []
-    for i in range(len(tokens) - 1):
+    for i in range(0, len(tokens) - 1, 1):
         out.append(pair(tokens[i]))
     return out
"""

DIFF_2 = """\
diff --git a/src/parser.py b/src/parser.py
--- a/src/parser.py
+++ b/src/parser.py
@@ -38,7 +38,9 @@ def parse(tokens):
     \"\"\"Group tokens into (name, value) pairs.\"\"\"
     out = []
-    for i in range(len(tokens) - 1):
+    for i in range(len(tokens)):
+        if tokens[i] is None:
+            continue
         out.append(pair(tokens[i]))
     return out
diff --git a/tests/test_parser.py b/tests/test_parser.py
--- a/tests/test_parser.py
+++ b/tests/test_parser.py
@@ -20,3 +20,7 @@ def test_parse_tail():
     assert len(parse(["a=1", "b=2", "c=3", "d=4"])) == 4
+
+
+def test_parse_keeps_single_token():
+    assert parse(["a=1"]) == [("a", "1")]
"""

FAIL_LOG = """\
============================= test session starts ==============================
collected 14 items

tests/test_parser.py .........F....                                      [100%]

=================================== FAILURES ===================================
_______________________________ test_parse_tail ________________________________
    def test_parse_tail():
>       assert len(parse(["a=1", "b=2", "c=3", "d=4"])) == 4
E       assert 3 == 4
FAILED tests/test_parser.py::test_parse_tail - assert 3 == 4
========================= 1 failed, 13 passed in 0.21s =========================
"""

PASS_LOG = """\
============================= test session starts ==============================
collected 15 items

tests/test_parser.py ...............                                     [100%]

============================== 15 passed in 0.19s ==============================
"""

ESCALATION_REASON: dict[str, Any] = {
    "code": "IMPLEMENTER_FAILED_LOOPS",
    "trigger": "implementer_failed_loops",
    "signal": "failed_loops",
    "op": "ge",
    "value": 2,
    "threshold": 2.0,
    "text": "2 failed compile/test loops (≥ 2) → deepseek-reasoner",
}


def _usage(cap: float | None, spent: float) -> dict[str, float | None]:
    return {
        "cap_usd": cap,
        "spent_usd": spent,
        "reserved_usd": 0.0,
        "left_usd": None if cap is None else round(cap - spent, 6),
    }


#: a run's cost.json as the runner writes it: the session's ledger snapshot at its end
COST_SNAPSHOT = {
    "session": "s1",
    "day": "2026-01-01",
    "ts": "2026-01-01T11:04:00.000Z",
    "per_session": _usage(5.0, 0.0094),
    "per_day": _usage(20.0, 0.0094),
    "per_provider": {"deepseek": _usage(4.0, 0.0094)},
    "reserved_usd": 0.0,
    "calls": 6,
    "failed": 1,
    "by_role": {"implementer": 0.0094},
    "by_model": {"deepseek-reasoner": 0.0094},
    "by_provider": {"deepseek": 0.0094},
}


def scripted_connect(
    data_dir: Path,
    clock: ManualClock,
    *,
    approval_timeout_s: float = 60.0,
    session_id: str = SESSION_ID,
) -> Any:
    """A real session (shipped policy, BusDecider) in ``data_dir`` on ``clock``."""

    @asynccontextmanager
    async def connect(bus: Bus) -> AsyncIterator[Session]:
        settings = Settings(data_dir=data_dir, approval_timeout_s=approval_timeout_s)
        policy = load_policy().policy
        async with open_session(
            settings,
            policy,
            decider=BusDecider(bus),
            bus=bus,
            session_id=session_id,
            clock=clock,
        ) as session:
            yield session

    return connect


@dataclass
class ScriptOutcome:
    run_id: str
    outcome: str
    reason: str
    decision: str | None = None


@dataclass
class ScriptedRun:
    """Publishes a realistic run. ``stop_before`` names a step to wait at (see ``reached``)."""

    clock: ManualClock
    flood: int = 0
    stop_before: str | None = None
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    go_on: asyncio.Event = field(default_factory=asyncio.Event)
    decision: str | None = None

    async def _at(self, step: str) -> None:
        if step == self.stop_before:
            self.reached.set()
            await self.go_on.wait()

    async def __call__(self, session: Session, task: str, control: RunControl) -> ScriptOutcome:
        bus = session.bus
        assert bus is not None
        sid, run = session.id, RUN_ID
        audit, ledger = session.audit, session.ledger

        async def pub(event: Event) -> None:
            await bus.publish(event)

        def tick(seconds: float = 1.0) -> None:
            self.clock.advance(seconds)

        async def stage(
            name: str, status: str, role: str = "", model: str = "", rt: str = "", detail: str = ""
        ) -> None:
            await pub(
                StageChanged(
                    session=sid,
                    run=run,
                    stage=name,
                    status=status,  # type: ignore[arg-type]
                    role=role,
                    model=model,
                    runtime=rt,
                    detail=detail,
                )
            )

        async def local_call(role: str, model: str, tin: int, tout: int) -> None:
            await ledger.record_call(
                session=sid,
                run=run,
                role=role,
                model=model,
                provider="local",
                tokens_in=tin,
                tokens_out=tout,
                latency_ms=900.0,
                cost_usd=0.0,
            )
            await audit.append(
                "call",
                session=sid,
                run=run,
                role=role,
                to=f"{model}@vllm",
                values={"tokens_in": tin, "tokens_out": tout},
                detail=f"{tin} in / {tout} out, $0",
            )

        await audit.append(
            "run", session=sid, run=run, reason_codes=["RUN_STARTED"], detail=f"run started: {task}"
        )
        await stage("stage0", "started", detail="TF-IDF + MMR over 42 files")
        tick(2)
        await stage("stage0", "finished", detail="brief: 6 chunks, 3 files")

        # Architect: vLLM is down, the runtime chain falls back to llama.cpp (audited).
        control.current_role = "architect"
        await audit.append(
            "runtime_fallback",
            session=sid,
            run=run,
            role="architect",
            from_="qwen3-14b@vllm",
            to="qwen3-14b@llamacpp_server",
            reason_codes=["GR005_RUNTIME_FALLBACK"],
            detail="qwen3-14b on vLLM unreachable → qwen3-14b llama.cpp server",
        )
        await stage("architect", "started", "architect", "qwen3-14b", "llamacpp_server")
        await pub(TokenDelta(session=sid, role="architect", model="qwen3-14b", text='{"goal": '))
        tick(3)
        await local_call("architect", "qwen3-14b", 2140, 412)
        # as the Architect publishes its final plan: the grounded confidence, and how
        await pub(PlanUpdated(session=sid, run=run, plan=SHOWN_PLAN))

        async def steps(status: str, detail: str) -> None:
            # as the runner publishes them (app/pipeline/plan_status.py)
            n = len(PLAN["steps"])
            await pub(PlanStepsChanged(session=sid, run=run, statuses=[status] * n, detail=detail))

        await steps("pending", "planned")
        await stage("architect", "finished", "architect", "qwen3-14b", "llamacpp_server")

        # Implementer: two failed loops.
        control.current_role = "implementer"
        await audit.append(
            "route",
            session=sid,
            run=run,
            role="implementer",
            to="qwen2.5-coder-32b@vllm",
            reason_codes=["DEFAULT"],
            detail="implementer → qwen2.5-coder-32b (vLLM)",
        )
        await stage("implementer", "started", "implementer", "qwen2.5-coder-32b", "vllm")
        await steps("active", "the Implementer is at work")
        for loop, diff in ((1, DIFF_1), (2, DIFF_1)):
            tick(4)
            await local_call("implementer", "qwen2.5-coder-32b", 3810, 266)
            await pub(DiffUpdated(session=sid, run=run, attempt=loop, diff=diff))
            for chunk in _chunks(FAIL_LOG):
                await pub(TestOutput(session=sid, run=run, loop=loop, text=chunk))
            await pub(
                TestLoopFinished(
                    session=sid, run=run, loop=loop, passed=False, exit_code=1, runner="bwrap"
                )
            )
        for n in range(self.flood):
            await audit.append(
                "retry", session=sid, run=run, role="implementer", detail=f"flood line {n}"
            )

        await self._at("escalation")
        tick(1)
        await audit.append(
            "escalation",
            session=sid,
            run=run,
            role="implementer",
            from_="qwen2.5-coder-32b",
            to="deepseek-reasoner",
            reason_codes=["IMPLEMENTER_FAILED_LOOPS"],
            values={"failed_loops": 2, "est_cost_usd": 0.012},
            detail="2 failed loops → deepseek-reasoner",
        )
        decision = await session.approvals.request(
            ApprovalRequest(
                request_id=REQUEST_ID,
                session=sid,
                run=run,
                role="implementer",
                model="deepseek-reasoner",
                provider="deepseek",
                reasons=[ESCALATION_REASON],
                values={"failed_loops": 2},
                est_cost_usd=0.012,
                budget_left_usd=5.0,
            )
        )
        self.decision = decision.decision
        if not decision.allowed:
            await stage("implementer", "failed", "implementer", "qwen2.5-coder-32b", "vllm")
            reason = f"escalation denied ({decision.decided_by}) after 2 failed loops"
            await steps("failed", reason)
            await pub(RunFinished(session=sid, run=run, outcome="stopped", reason=reason))
            return ScriptOutcome(run, "stopped", reason, self.decision)

        # approved: the cloud call is out (its stage event comes with its reply, as a real
        # cloud call's audit line does)
        await self._at("cloud call")
        await stage("implementer", "started", "implementer", "deepseek-reasoner", "cloud")
        reservation = await ledger.reserve(
            session=sid,
            provider="deepseek",
            role="implementer",
            model="deepseek-reasoner",
            amount_usd=0.012,
            run=run,
        )
        tick(6)
        await ledger.settle(
            reservation.id, actual_usd=0.0094, tokens_in=5210, tokens_out=880, latency_ms=6100.0
        )
        await audit.append(
            "call",
            session=sid,
            run=run,
            role="implementer",
            to="deepseek-reasoner",
            values={"cost_usd": 0.0094},
            detail="5210 in / 880 out, $0.0094",
        )
        await pub(DiffUpdated(session=sid, run=run, attempt=3, diff=DIFF_2))
        for chunk in _chunks(PASS_LOG):
            await pub(TestOutput(session=sid, run=run, loop=3, text=chunk))
        await pub(
            TestLoopFinished(session=sid, run=run, loop=3, passed=True, exit_code=0, runner="bwrap")
        )
        await stage("implementer", "finished", "implementer", "deepseek-reasoner", "cloud")
        await steps("done", "tests green")
        await stage("judge", "skipped", detail="not High-Risk: the Judge is optional")
        await audit.append(
            "run",
            session=sid,
            run=run,
            reason_codes=["MERGE_READY"],
            detail="evidence bundle sealed (merge_ready, 14 files)",
        )
        await pub(RunFinished(session=sid, run=run, outcome="merge_ready"))
        return ScriptOutcome(run, "merge_ready", "", self.decision)


def _chunks(text: str, size: int = 97) -> list[str]:
    """Output as a sandbox streams it: cut anywhere, mid-line included."""
    return [text[i : i + size] for i in range(0, len(text), size)]


TUTOR_TURN = TutorTurn(
    questions=[
        "What does range(n - 1) yield for n = 4, and which index is missing?",
        "Which test input would show the last token being dropped?",
    ],
    hint="Compare the loop bound with the indices the list actually has.",
    answer="range(len(tokens) - 1) stops one short; iterate over range(len(tokens)).",
)


def scripted_tutor(session: Session, repo: Path, *, max_turns: int | None = None) -> TutorSession:
    """The real core conversation (cap, memory, questions first); only the model is scripted."""

    async def model(messages: list[Message], signals: Signals) -> Answer[TutorTurn]:
        return Answer(TUTOR_TURN, None)

    return TutorSession(session.router, max_turns=max_turns, model=model)


# ── a repo with evidence ─────────────────────────────────────────────────────────────────

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Dev",
    "GIT_AUTHOR_EMAIL": "dev@example.com",
    "GIT_COMMITTER_NAME": "Dev",
    "GIT_COMMITTER_EMAIL": "dev@example.com",
    "GIT_AUTHOR_DATE": "2026-01-01T12:00:00+00:00",
    "GIT_COMMITTER_DATE": "2026-01-01T12:00:00+00:00",
}

PARSER = '''def pair(token):
    name, _, value = token.partition("=")
    return (name, value)


def parse(tokens):
    """Group tokens into (name, value) pairs."""
    out = []
    for i in range(len(tokens) - 1):
        out.append(pair(tokens[i]))
    return out
'''

TEST = """from src.parser import parse


def test_parse_tail():
    assert len(parse(["a=1", "b=2", "c=3", "d=4"])) == 4
"""


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV}
    done = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def make_repo(path: Path) -> Path:
    """A small git repo (main) with the off-by-one bug and its failing test."""
    (path / "src").mkdir(parents=True, exist_ok=True)
    (path / "tests").mkdir(exist_ok=True)
    (path / "src" / "__init__.py").write_text("")
    (path / "src" / "parser.py").write_text(PARSER)
    (path / "tests" / "test_parser.py").write_text(TEST)
    _git(path, "init", "-q")
    _git(path, "add", "-A")
    _git(path, "commit", "-q", "-m", "parser with an off-by-one")
    return path


def make_run(
    repo: Path, run_id: str, *, green: bool, clock: ManualClock, data_dir: Path | None = None
) -> Path:
    """A sealed bundle for ``run_id`` with its branch, its seal line in the audit log of
    ``data_dir`` (the session's) when given. ``green``: tests pass on the tip and the
    change is not High-Risk, so the gate holds; else the last loop failed."""
    from app.evidence.bundle import EvidenceBundle
    from app.policy.gate import VerdictRecord
    from app.workspace.sandbox import SandboxResult

    base = _git(repo, "rev-parse", "HEAD")
    branch = f"switchyard/{run_id}"
    _git(repo, "checkout", "-q", "-b", branch)
    fixed = PARSER.replace("range(len(tokens) - 1)", "range(len(tokens))")
    broken = fixed.replace("len(tokens)", "len(tokens) - 2")
    (repo / "src" / "parser.py").write_text(fixed if green else broken)
    _git(repo, "commit", "-q", "-am", f"switchyard: {run_id}")
    head = _git(repo, "rev-parse", "HEAD")
    _git(repo, "checkout", "-q", "main")

    bundle = EvidenceBundle.create(repo, run_id, task=TASK, session=SESSION_ID, clock=clock)
    brief = f"# Task\n\n{TASK}\n\n## Context\n\n- src/parser.py: parse()\n"
    bundle.write_text("TASK_BRIEF.md", brief + "- tests/test_parser.py: test_parse_tail\n")
    bundle.write_json("plan.json", PLAN)
    bundle.write_diff(1, DIFF_2)
    result = SandboxResult(
        argv=["python", "-m", "pytest", "-q"],
        cwd=str(repo),
        exit_code=0 if green else 1,
        output=PASS_LOG if green else FAIL_LOG,
        timed_out=False,
        runner="bwrap",
        degraded=False,
        reason="",
        duration_s=0.4,
        timeout_s=300.0,
        memory_mb=2048,
    )
    bundle.write_test_loop(1, result, attempt=1, commit=head)
    bundle.write_json("highrisk.json", {"high_risk": False, "rules": []})
    bundle.write_verdicts(
        [
            {
                **VerdictRecord(
                    model="qwen2.5-coder-32b",
                    provider="local",
                    local=True,
                    verdict="approve",
                    citations_resolved=True,
                ).model_dump(),
                "summary": "The loop bound now covers the last token.",
                "findings": [
                    {"severity": "info", "message": "bound fixed", "cite": "src/parser.py:9"},
                    {
                        "severity": "minor",
                        "message": "regression test added",
                        "cite": "test:test_parse_tail",
                    },
                ],
            },
        ]
    )
    bundle.write_json("cost.json", COST_SNAPSHOT)
    bundle.write_json(
        "second_opinion.json",
        {
            "advisory": True,
            "opinions": [
                {
                    "occasion": "user_request",
                    "model": "claude-sonnet-4.6",
                    "opinion": {
                        "assessment": "the bound fix is right; add a test for an empty input",
                        "likely_causes": [],
                        "risks": [],
                        "suggestions": ["test parse('')"],
                        "confidence": 0.8,
                    },
                }
            ],
        },
    )
    status = "merge_ready" if green else "failed"
    bundle.finalize(
        status=status,
        base=base,
        branch=branch,
        head=head,
        policy_version="1.0.0",
        session=SESSION_ID,
        reason="" if green else "tests still fail after 3 loops",
    )
    if data_dir is not None:
        _seal(data_dir, bundle, clock)
    return bundle.path


def _seal(data_dir: Path, bundle: Any, clock: ManualClock) -> None:
    """The seal line a run writes when its bundle is sealed: without it nothing merges."""
    from concurrent.futures import ThreadPoolExecutor

    from app.audit.log import AuditLog
    from app.config import Settings
    from app.evidence.bundle import bundle_seal_line, read_manifest

    async def write() -> None:
        db = Settings(data_dir=data_dir).audit_db
        db.parent.mkdir(parents=True, exist_ok=True)
        line = bundle_seal_line(read_manifest(bundle.path), bundle.manifest_sha256)
        async with AuditLog.open(db, clock=clock, policy_version="1.0.0") as log:
            await log.append(**line, session=SESSION_ID)

    # its own thread: make_run is called from async tests as well as plain ones
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, write()).result()
