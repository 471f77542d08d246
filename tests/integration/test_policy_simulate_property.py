"""Property: simulating a policy against itself changes nothing, with 0 unsimulated
decisions, on any log written by this router.

Each example is a real session (``open_session``: audit chain, ledger, approvals broker,
the backend registry) against loopback fakes of vLLM, the llama.cpp server, OpenAI,
DeepSeek, Moonshot and Anthropic (whose key is unset), running a drawn sequence of
requests: any role, its triggers on or off, the human's answers (allow, allow for the
session, deny, deny all), cloud faults (a provider failing every try), vLLM dropping a
connection (the runtime fallback), a provider with no key, tight caps (budget skips and
stops) and local_only. The replay under the same policy must end every request where
the router ended it, spend what it spent per provider, and ask as many approvals; and
under other policies, reading decisions from the log must give what making them again
gives.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.backends.base import ChatRequest, Message
from app.clock import ManualClock
from app.config import Settings
from app.policy.loader import parse_policy
from app.router.approvals import ApprovalDecision, ApprovalRequest, DecisionKind
from app.router.routed import RouteFailed, RouteRefused
from app.router.session import open_session
from app.router.simulate.report import PolicyRef
from app.router.simulate.simulation import simulate
from app.router.simulate.source import read_log
from app.router.types import Signals
from tests.integration.sim_kit import SimFakes

CHAT = "/v1/chat/completions"
#: other policies each log is also replayed under (fast and slow replays must agree)
VARIANTS = [
    [('threshold = 0.75\nseed = "§3 confidence <', 'threshold = 0.9\nseed = "§3 confidence <')],
    [("threshold = 100000\n", "threshold = 40000\n"), ("deepseek = 5.0\n", "deepseek = 0.002\n")],
    [('fallback = ["gpt-5.1-high", "deepseek-r2"]', 'fallback = ["claude-opus-4.7"]')],
    [("price_out_usd_per_mtok = 10.0\n", "price_out_usd_per_mtok = 90.0\n")],
]
ROLES = (
    "architect",
    "implementer",
    "librarian",
    "tutor",
    "judge",
    "ace",
    "second_opinion",
    "tier2",
)


class ScriptedDecider:
    """The human's answers, in turn (then: allow once)."""

    name = "test:scripted"

    def __init__(self, answers: list[DecisionKind]) -> None:
        self.answers = list(answers)
        self.asked = 0

    async def decide(self, req: ApprovalRequest) -> ApprovalDecision:
        answer = self.answers.pop(0) if self.answers else "allow_once"
        self.asked += 1
        return ApprovalDecision(decision=answer, decided_by=self.name)


def signals_for(role: str) -> st.SearchStrategy[Signals]:
    user = st.booleans()
    if role == "architect":
        return st.builds(
            Signals,
            confidence=st.sampled_from([0.5, 0.7, 0.8, 0.95]),
            open_questions=st.integers(0, 3),
            user_request=user,
        )
    if role == "implementer":
        return st.builds(
            Signals,
            failed_loops=st.integers(0, 3),
            self_check_confidence=st.sampled_from([None, 0.3, 0.9]),
            user_request=user,
        )
    if role == "librarian":
        return st.builds(
            Signals,
            context_estimate=st.sampled_from([None, 50_000, 120_000]),
            tool_heavy=st.booleans(),
            user_request=user,
        )
    if role in ("judge", "second_opinion"):
        return st.builds(Signals, high_risk=st.booleans(), user_request=user)
    if role == "ace":
        return st.builds(Signals, interesting_failure=st.booleans(), user_request=user)
    if role == "tier2":
        return st.builds(Signals, tier2_opt_in=st.booleans(), user_request=user)
    return st.builds(Signals, user_request=user)


#: before a request: nothing, OpenAI failing every try, or vLLM dropping the connection
FAULTS = st.sampled_from([None, None, None, "openai_down", "vllm_reset"])
STEP = st.sampled_from(ROLES).flatmap(
    lambda role: st.tuples(st.just(role), signals_for(role), FAULTS)
)
SCENARIO = st.fixed_dictionaries(
    {
        "steps": st.lists(STEP, min_size=1, max_size=8),
        "answers": st.lists(
            st.sampled_from(["allow_once", "allow_session", "deny", "deny_all"]), max_size=8
        ),
        "session_usd": st.sampled_from(["5.0", "0.03", "0.08"]),
        "openai_day": st.sampled_from(["10.0", "0.05"]),
        "local_only": st.sampled_from([False, False, False, True]),
    }
)


def test_a_policy_against_itself_changes_nothing(tmp_path: Path, sim_fakes: SimFakes) -> None:
    vllm, llamacpp, clouds = sim_fakes.vllm, sim_fakes.llamacpp, sim_fakes.clouds
    base = sim_fakes.policy_text

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(scenario=SCENARIO)
    def check(scenario: dict[str, Any]) -> None:
        for server in (vllm, llamacpp, *clouds.values()):
            server.clear_faults()
        text = base.replace("session_usd = 5.0\n", f"session_usd = {scenario['session_usd']}\n")
        text = text.replace("openai = 10.0\n", f"openai = {scenario['openai_day']}\n")
        data = Path(tempfile.mkdtemp(dir=tmp_path))
        policy = parse_policy(text, data / "policy.toml").policy
        report = asyncio.run(run(scenario, policy, data, text))
        assert report.unsimulated.count == 0, report.unsimulated
        assert report.decisions == report_requests(report)
        assert report.changed == 0
        assert report.against_differs_from_recorded == 0, report.differs_seqs
        assert report.cloud_usd_new == report.cloud_usd_against
        for row in report.roles:
            assert row.approvals_new == row.approvals_against
        assert [b for b in report.blocked if b.policy == "new"] == [
            b.model_copy(update={"policy": "new"}) for b in report.blocked if b.policy == "against"
        ]

    async def run(scenario: dict[str, Any], policy: Any, data: Path, policy_text: str) -> Any:
        env = Settings(
            data_dir=data,
            vllm_url=vllm.base_url,
            llamacpp_server_url=llamacpp.base_url,
        )
        decider = ScriptedDecider(scenario["answers"])
        recorded_cost: dict[str, float] = {}
        async with open_session(
            env, policy, decider=decider, clock=ManualClock(), local_only=scenario["local_only"]
        ) as session:
            for role, signals, fault in scenario["steps"]:
                if fault == "openai_down":
                    clouds["openai"].fail_next("500", 6, path=CHAT)
                elif fault == "vllm_reset":
                    vllm.fail_next("reset", 1, path=CHAT)
                request = ChatRequest(
                    messages=[Message(role="user", content="go on")], max_tokens=400
                )
                try:
                    result = await session.router.complete(role, request, signals)
                except (RouteRefused, RouteFailed):
                    continue
                if result.escalated:
                    recorded_cost[result.provider] = (
                        recorded_cost.get(result.provider, 0) + result.cost_usd
                    )
            collected = await read_log(session.audit)
            asked: dict[str, int] = {}
            for line in await session.audit.lines():
                if line.kind in ("approval", "denial") and line.role is not None:
                    asked[line.role] = asked.get(line.role, 0) + 1
        ref = PolicyRef(path="p.toml", version=policy.version)
        # every decision made again (the walk through each request is what is tested) …
        remade = simulate(
            collected, policy, policy, new_ref=ref, against_ref=ref, trust_record=False
        )
        # … and as the CLI runs it: a decision made under this policy read from its line
        report = simulate(collected, policy, policy, new_ref=ref, against_ref=ref)
        assert remade == report
        # another policy: reading the unchanged roles' decisions from the record gives
        # what making them again gives
        for swaps in VARIANTS:
            text = policy_text
            for old, new in swaps:
                text = text.replace(old, new)
            other = parse_policy(text, data / "variant.toml").policy
            fast = simulate(collected, other, policy, new_ref=ref, against_ref=ref)
            slow = simulate(
                collected, other, policy, new_ref=ref, against_ref=ref, trust_record=False
            )
            assert fast == slow
        # the approvals the replay asks are the ones the human was asked
        replayed = {r.role: r.approvals_against for r in report.roles if r.approvals_against}
        assert replayed == asked
        spent = {s.provider: s.against_usd for s in report.spend}
        for provider, usd in recorded_cost.items():
            assert abs(spent.get(provider, 0.0) - usd) < 1e-6, (provider, spent, recorded_cost)
        return report

    def report_requests(report: Any) -> int:
        return sum(r.decisions for r in report.roles)

    check()
