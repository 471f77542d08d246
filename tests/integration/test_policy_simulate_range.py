"""A simulation of a range (``--since``, ``--session``) reads the log from the first line
the range needs, not from the log's first, and must report exactly what a read of the
whole log reports for that range.

Each example writes a real log: sessions on one data dir (one audit file, one ledger),
opened one after another and taking turns, against loopback fakes of vLLM, the llama.cpp
server and the clouds, with tight session, day and provider caps (budget skips, stops),
while a clock moves on at every reading (each line a moment of its own, days going by)
and, in some examples, is set back an hour once. Then every line's moment is a
``--since`` (a boundary between any two lines), some days too, each session a
``--session``, and a line's moment with its session, each simulated under the policy in
force and under policies whose caps and thresholds differ.
"""

from __future__ import annotations

import asyncio
import tempfile
from contextlib import AsyncExitStack, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.audit.log import AuditLog
from app.audit.types import AuditLine
from app.backends.base import ChatRequest, Message
from app.clock import ManualClock
from app.config import Settings
from app.policy.loader import parse_policy
from app.policy.schema import Policy
from app.router.routed import RouteFailed, RouteRefused
from app.router.session import open_session
from app.router.simulate.report import PolicyRef, SimulationReport
from app.router.simulate.simulation import Filters, simulate
from app.router.simulate.source import read_log
from app.router.types import Signals
from tests.integration.sim_kit import SimFakes

#: the policy in force, then others whose caps and thresholds bind otherwise
VARIANTS = [
    [],
    [("deepseek = 5.0\n", "deepseek = 0.002\n"), ("threshold = 100000\n", "threshold = 40000\n")],
    [('threshold = 0.75\nseed = "§3 confidence <', 'threshold = 0.9\nseed = "§3 confidence <')],
]
#: a step's role that is none: the clock moves on eight hours
NIGHT = "night"
SESSIONS = ("s-one", "s-two", "s-three", "s-four", "s-five")


class TickingClock(ManualClock):
    """Every reading is ``step`` later than the one before; ``back_at``: the reading
    at which the clock is set back an hour."""

    def __init__(self, step: timedelta, back_at: int | None) -> None:
        super().__init__(datetime(2026, 12, 1, 20, 0, tzinfo=UTC))
        self._step = step
        self._back_at = back_at
        self.readings = 0

    def set(self, moment: datetime) -> None:
        """The clock put at ``moment`` (back or on)."""
        self.advance((moment - super().now()).total_seconds())

    def now(self) -> datetime:
        self.readings += 1
        if self.readings == self._back_at:
            self.advance(-3600)
        self.advance(self._step.total_seconds())
        return super().now()


STEP = st.tuples(
    st.integers(0, 2),
    st.sampled_from(["architect", "implementer", "librarian", "tutor"]),
    st.builds(
        Signals,
        confidence=st.sampled_from([None, 0.5, 0.8]),
        failed_loops=st.sampled_from([0, 2]),
        context_estimate=st.sampled_from([None, 120_000]),
        user_request=st.booleans(),
    ),
)
SCENARIO = st.fixed_dictionaries(
    {
        "steps": st.lists(STEP, min_size=6, max_size=16),
        "minutes": st.sampled_from([7, 41, 173]),
        "back_at": st.sampled_from([None, None, 9, 30]),
        "session_usd": st.sampled_from(["5.0", "0.03"]),
        "openai": st.sampled_from(["10.0", "0.02"]),
        "day_usd": st.sampled_from(["20.0", "0.012"]),
    }
)


def policies_of(text: str, data: Path, caps: dict[str, str]) -> list[Policy]:
    """The policy with ``caps`` (``session_usd``, ``day_usd``, ``openai``), then its
    variants."""
    for name, value in caps.items():
        default = {"session_usd": "5.0", "day_usd": "20.0", "openai": "10.0"}[name]
        text = text.replace(f"\n{name} = {default}\n", f"\n{name} = {value}\n")
    out = []
    for swaps in VARIANTS:
        variant = text
        for old, new in swaps:
            assert old in variant, old
            variant = variant.replace(old, new)
        out.append(parse_policy(variant, data / "policy.toml").policy)
    return out


async def write_log(
    fakes: SimFakes,
    data: Path,
    policy: Policy,
    clock: TickingClock,
    steps: list[tuple[str, str, Signals]],
) -> Path:
    """Each step a request of its session (opened at its first), in turn, or a night
    (:data:`NIGHT`: eight hours later); the log's path."""
    env = Settings(
        data_dir=data, vllm_url=fakes.vllm.base_url, llamacpp_server_url=fakes.llamacpp.base_url
    )
    async with AsyncExitStack() as stack:
        sessions: dict[str, Any] = {}
        for sid, role, signals in steps:
            if role == NIGHT:
                clock.advance(8 * 3600)
                continue
            if sid not in sessions:
                sessions[sid] = await stack.enter_async_context(
                    open_session(env, policy, approve="allow", session_id=sid, clock=clock)
                )
            request = ChatRequest(messages=[Message(role="user", content="go")], max_tokens=400)
            with suppress(RouteRefused, RouteFailed):
                await sessions[sid].router.complete(role, request, signals)
    return env.audit_db


async def compare(log_path: Path, policies: list[Policy], ranges: list[Filters]) -> list[int]:
    """Each range simulated from its own read and from the whole log's, under each policy:
    the same report. The lines each range was read from."""
    ref = PolicyRef(path="p.toml", version=policies[0].version)
    starts = []
    async with AuditLog.open(log_path, policy_version="test") as audit:
        whole = await read_log(audit)
        assert whole.start == 1
        for filters in ranges:
            part = await read_log(audit, since=filters.since, session=filters.session)
            starts.append(part.start)
            if part.start == 1:  # the whole log: what is compared is range reads
                assert part.lines == whole.lines
                continue
            for other in policies:
                got = simulate(
                    part, other, policies[0], new_ref=ref, against_ref=ref, filters=filters
                )
                want = simulate(
                    whole, other, policies[0], new_ref=ref, against_ref=ref, filters=filters
                )
                assert same(got, want), (filters, part.start)
    return starts


async def lines_of(path: Path) -> list[AuditLine]:
    async with AuditLog.open(path, policy_version="test") as audit:
        return await audit.lines()


def test_a_range_reads_from_its_first_needed_line_and_reports_as_the_whole_log(
    tmp_path: Path, sim_fakes: SimFakes
) -> None:
    read_later: list[int] = []
    kinds: dict[str, int] = {}

    @settings(
        max_examples=6,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(scenario=SCENARIO)
    def check(scenario: dict[str, Any]) -> None:
        data = Path(tempfile.mkdtemp(dir=tmp_path))
        caps = {k: scenario[k] for k in ("session_usd", "day_usd", "openai")}
        policies = policies_of(sim_fakes.policy_text, data, caps)
        clock = TickingClock(timedelta(minutes=scenario["minutes"]), scenario["back_at"])
        count = len(scenario["steps"])
        # a session opens at its first request, the later ones later on
        steps = [
            (SESSIONS[min(n * len(SESSIONS) // count + offset, 4)], role, signals)
            for n, (offset, role, signals) in enumerate(scenario["steps"])
        ]
        read_later.extend(asyncio.run(run(data, policies, clock, steps)))

    async def run(
        data: Path, policies: list[Policy], clock: TickingClock, steps: list[Any]
    ) -> list[int]:
        path = await write_log(sim_fakes, data, policies[0], clock, steps)
        lines = await lines_of(path)
        for line in lines:
            key = f"{line.kind}:{(line.values or {}).get('reason', '')}"
            kinds[key] = kinds.get(key, 0) + 1
        ranges = [Filters(since=t) for t in sorted({line.ts for line in lines})]
        ranges += [Filters(since=line.ts[:10]) for line in lines[::7]]
        ranges += [Filters(session=sid) for sid in {line.session for line in lines}]
        ranges += [Filters(since=line.ts, session=line.session) for line in lines[::5]]
        return await compare(path, policies, ranges)

    check()
    # the ranges were read from later lines, not every one from the first: the test
    # compares range reads, not the whole log's twice
    assert max(read_later) > 1
    # and the logs had what binds a replay: escalations, cloud calls, budget skips
    assert kinds.get("escalation:") and kinds.get("skip:budget"), kinds


def test_a_later_session_is_replayed_under_the_day_spent_before_it(
    tmp_path: Path, sim_fakes: SimFakes
) -> None:
    """The day's cap was spent by a session that ended before the range: its calls are
    read though no line of it is in the range (the day's first line on), and the later
    session's escalation stops at the cap as it did."""
    # a DeepSeek call costs $0.00013 here: the early session's spend the day's cap
    policies = policies_of(sim_fakes.policy_text, tmp_path, {"day_usd": "0.0005"})
    escalate = Signals(user_request=True)
    steps = [("s-before", "architect", escalate), ("", NIGHT, escalate)]
    steps += [("s-early", "architect", escalate)] * 6 + [("s-early", "tutor", Signals())]
    steps += [("s-late", "tutor", Signals()), ("s-late", "architect", escalate)]
    clock = TickingClock(timedelta(minutes=3), None)
    path = asyncio.run(write_log(sim_fakes, tmp_path, policies[0], clock, steps))

    got = asyncio.run(lines_of(path))
    early = next(line for line in got if line.session == "s-early")
    late = next(line for line in got if line.session == "s-late")
    assert early.ts[:10] == late.ts[:10] > got[0].ts[:10]
    spent = [line.values["cost_usd"] for line in got if line.kind == "call"]
    assert sum(1 for usd in spent if usd) >= 3
    # the late session's escalation found the day spent: no cloud call of it
    assert not any(line.kind == "call" and "@" not in str(line.to) for line in got[late.seq :])
    ranges = [Filters(since=late.ts), Filters(session="s-late")]
    starts = asyncio.run(compare(path, policies, ranges))
    # from the day's first line (the early session's), not the log's nor the range's
    assert starts == [early.seq, early.seq] and 1 < early.seq < late.seq


def same(got: SimulationReport, want: SimulationReport) -> bool:
    """Equal but for the line the range was read from."""
    return got.model_dump(exclude={"read_from_seq"}) == want.model_dump(exclude={"read_from_seq"})


def test_a_clock_set_back_into_the_day_before_reads_that_day(
    tmp_path: Path, sim_fakes: SimFakes
) -> None:
    """A session spends the day's cap on 12-01; another writes at 12-02 00:10; the clock
    is then set back to 12-01 23:10 and a third escalates. `--since 23:10` matches the
    12-02 line first (by seq), but the set-back line's day is 12-01, whose spend binds
    it: the read starts at that day's first line (the least ts of the range's lines),
    not at the day of its first line (a review: untested until then)."""
    policies = policies_of(sim_fakes.policy_text, tmp_path, {"day_usd": "0.0005"})
    escalate = Signals(user_request=True)
    clock = TickingClock(timedelta(seconds=20), None)

    async def write() -> Path:
        steps = [("s-spend", "architect", escalate)] * 6
        path = await write_log(sim_fakes, tmp_path, policies[0], clock, steps)
        clock.set(datetime(2026, 12, 2, 0, 10, tzinfo=UTC))
        await write_log(sim_fakes, tmp_path, policies[0], clock, [("s-mid", "tutor", Signals())])
        clock.set(datetime(2026, 12, 1, 23, 10, tzinfo=UTC))  # set back
        await write_log(
            sim_fakes, tmp_path, policies[0], clock, [("s-late", "architect", escalate)]
        )
        return path

    path = asyncio.run(write())

    got = asyncio.run(lines_of(path))
    late = next(line for line in got if line.session == "s-late")
    mid = next(line for line in got if line.session == "s-mid")
    assert mid.seq < late.seq and late.ts < "2026-12-02" < mid.ts
    since = late.ts
    # the read must begin on 12-01 (line 1 here: the spending session's)
    assert asyncio.run(compare(path, policies, [Filters(since=since)])) == [1]
