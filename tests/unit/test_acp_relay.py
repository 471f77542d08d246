"""The ACP relay's mapping of bus events to session updates, and diffs as diff content.

The relay is fed the events the pipeline publishes, in the orders the pipeline can
publish them (including the ones a full run rarely shows: a reply with no usable change,
a repair turn of the same attempt, a change that did not apply, a run that ends mid-step).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.acp.auditview import UsageMeter
from app.acp.diffs import diff_contents
from app.acp.relay import RunRelay
from app.bus import (
    AuditAppended,
    DiffUpdated,
    Notice,
    PlanUpdated,
    RunFinished,
    StageChanged,
    TestLoopFinished,
    TestOutput,
)

RUN = "20260101-000000-abcdef"
OLD = "def parse(tokens):\n    for i in range(len(tokens) - 1):\n        yield tokens[i]\n"
DIFF = (
    "diff --git a/parser.py b/parser.py\n--- a/parser.py\n+++ b/parser.py\n"
    "@@ -1,3 +1,3 @@\n def parse(tokens):\n-    for i in range(len(tokens) - 1):\n"
    "+    for i in range(len(tokens)):\n         yield tokens[i]\n"
)


async def relay_of(events: list[Any], policy: Any) -> list[Any]:
    sent: list[Any] = []

    async def send(update: Any) -> None:
        sent.append(update)

    relay = RunRelay(send, Path("/repo"), None, UsageMeter(policy))
    for event in events:
        await relay.handle(event)
    return sent


def stage(stage: str, status: str = "started", **kw: Any) -> StageChanged:
    return StageChanged(session="s", run=RUN, stage=stage, status=status, **kw)  # type: ignore[arg-type]


def statuses(sent: list[Any], tid: str) -> list[str | None]:
    return [u.status for u in sent if getattr(u, "tool_call_id", None) == tid]


async def test_attempts_tests_and_a_run_that_ends_mid_step(policy: Any) -> None:
    events = [
        stage("stage0"),
        stage("stage0", "finished", detail="TASK_BRIEF.md written"),
        PlanUpdated(session="s", run=RUN, plan={"goal": "g", "steps": [{"title": "fix"}]}),
        stage("implementer"),
        stage("implementer", detail="attempt 1", model="m", runtime="vllm"),
        stage("implementer", detail="attempt 1", model="m", runtime="vllm"),  # repair turn
        stage("implementer", "failed", detail="attempt 2: the reply did not fit", model="m"),
        DiffUpdated(session="s", run=RUN, attempt=3, diff=DIFF),
        Notice(session="s", level="warning", text="attempt 3: the diff did not apply"),
        DiffUpdated(session="s", run=RUN, attempt=4, diff=DIFF),
        stage("tests", detail="pytest -q"),
        TestOutput(session="s", run=RUN, loop=0, text="1 passed\n"),
        TestLoopFinished(session="s", run=RUN, loop=0, passed=True, exit_code=0, runner="bwrap"),
        stage("implementer", "finished", detail="tests green after attempt 4"),
        stage("tests", detail="pytest -q"),
        RunFinished(session="s", run=RUN, outcome="stopped", reason="cancelled by the user"),
    ]
    sent = await relay_of(events, policy)
    starts = [u for u in sent if u.session_update == "tool_call"]
    assert [(u.tool_call_id.split(":")[1], u.kind) for u in starts] == [
        ("stage0", "search"),
        ("attempt-1", "edit"),
        ("attempt-2", "edit"),
        ("attempt-3", "edit"),
        ("attempt-4", "edit"),
        ("tests-0", "execute"),
        ("tests-1", "execute"),
    ]
    # attempt 1 (asked twice) never reached the tests; 2 had no change; 3 did not apply
    assert statuses(sent, f"{RUN}:attempt-1") == ["in_progress", "in_progress", "failed"]
    assert statuses(sent, f"{RUN}:attempt-2")[-1] == "failed"
    assert statuses(sent, f"{RUN}:attempt-3")[-1] == "failed"
    assert statuses(sent, f"{RUN}:attempt-4")[-1] == "completed"
    # a closed attempt keeps its diff: the closing update carries no content
    closing = [u for u in sent if getattr(u, "tool_call_id", "") == f"{RUN}:attempt-4"][-1]
    assert closing.content is None
    loop0 = [u for u in sent if getattr(u, "tool_call_id", "") == f"{RUN}:tests-0"][-1]
    assert loop0.raw_output == {"passed": True, "exit_code": 0, "runner": "bwrap"}
    assert "1 passed" in loop0.content[1].content.text
    # the run ended while loop 1 ran: closed as failed, with why
    assert statuses(sent, f"{RUN}:tests-1")[-1] == "failed"
    plans = [[e.status for e in u.entries] for u in sent if u.session_update == "plan"]
    assert plans == [["pending"], ["in_progress"], ["completed"]]


async def test_a_run_that_stops_mid_plan_leaves_no_entry_in_progress(policy: Any) -> None:
    """The plan's entries stayed "in_progress" after the run had stopped (ACP's plan has
    no "failed": "pending" is "not done"); a plan that completed stays so."""
    plan = PlanUpdated(session="s", run=RUN, plan={"goal": "g", "steps": [{"title": "fix"}]})
    stopped = RunFinished(session="s", run=RUN, outcome="stopped", reason="4 failed loops")
    sent = await relay_of([plan, stage("implementer"), stopped], policy)
    plans = [[e.status for e in u.entries] for u in sent if u.session_update == "plan"]
    assert plans == [["pending"], ["in_progress"], ["pending"]]
    ready = RunFinished(session="s", run=RUN, outcome="merge_ready", reason="green")
    done = stage("implementer", "finished", detail="tests green")
    sent = await relay_of([plan, stage("implementer"), done, ready], policy)
    plans = [[e.status for e in u.entries] for u in sent if u.session_update == "plan"]
    assert plans == [["pending"], ["in_progress"], ["completed"]]


async def test_audit_lines_become_chunks_and_calls_usage(policy: Any) -> None:
    def line(kind: str, **kw: Any) -> AuditAppended:
        return AuditAppended.of(session="s", line={"kind": kind, "session": "s", **kw})

    sent = await relay_of(
        [
            line("route", role="architect", to="qwen3-14b@vllm"),
            line("escalation", role="implementer", to="deepseek-reasoner"),
            line("denial", role="implementer", provenance={"approver": "acp:zed"}),
            line("call", to="qwen3-14b@vllm", values={"tokens_in": 100, "tokens_out": 20}),
            line(
                "call",
                to="gpt-5.1-high",
                values={"tokens_in": 10, "tokens_out": 5, "cost_usd": 0.5},
            ),
            line("consensus"),  # not shown
            # the decision that the plan needs no escalation: context, as a thought
            line(
                "check",
                role="architect",
                to="qwen3-14b@vllm",
                detail="the final plan (confidence 0.95 (self 0.95), 1 step, 0 open "
                "questions) fires no trigger: no escalation needed",
            ),
        ],
        policy,
    )
    kinds = [u.session_update for u in sent]
    assert kinds == [
        "agent_thought_chunk",
        "agent_message_chunk",
        "agent_message_chunk",
        "usage_update",
        "usage_update",
        "agent_thought_chunk",
    ]
    assert "by acp:zed" in sent[2].content.text
    assert sent[5].content.text.startswith("check architect: → qwen3-14b@vllm — the final plan")
    assert sent[5].content.text.endswith("fires no trigger: no escalation needed\n")
    first, second = sent[3], sent[4]
    assert (first.used, first.size, first.cost.amount) == (120, 32768, 0.0)
    assert second.used == 15 and second.cost.amount == 0.5 and second.cost.currency == "USD"


def test_a_diff_becomes_whole_files_or_its_own_hunks() -> None:
    contents, locations = diff_contents(DIFF, Path("/repo"), lambda rel: OLD.encode())
    (c,) = contents
    assert (c.type, c.path, c.old_text) == ("diff", "/repo/parser.py", OLD)
    assert c.new_text == OLD.replace("len(tokens) - 1", "len(tokens)")
    assert [(x.path, x.line) for x in locations] == [("/repo/parser.py", 1)]
    # the base does not match the hunk: the hunk's own lines, as the model proposed them
    (c,) = diff_contents(DIFF, Path("/repo"), lambda rel: b"something else\n")[0]
    assert "range(len(tokens) - 1)" in c.old_text and "range(len(tokens))" in c.new_text
    assert "something else" not in c.old_text
    # a new file has no old text
    new = (
        "diff --git a/n.py b/n.py\nnew file mode 100644\n"
        "--- /dev/null\n+++ b/n.py\n@@ -0,0 +1 @@\n+X = 1\n"
    )
    (c,) = diff_contents(new, Path("/repo"), lambda rel: None)[0]
    assert (c.path, c.old_text, c.new_text) == ("/repo/n.py", None, "X = 1\n")
    # not a diff at all: shown as it came
    (c,) = diff_contents("# no diff: the reply did not fit\n", Path("/repo"), lambda rel: None)[0]
    assert c.type == "content" and "no diff" in c.content.text


def test_a_diff_rebuilt_on_its_base_keeps_a_missing_final_newline_missing() -> None:
    """Without the attempt's commit the new text is rebuilt from the diff: a ``\\ No
    newline at end of file`` was ignored, and the editor showed a final newline added
    that the change did not hold (or kept one it took away)."""
    old, new = "def f(a, b):\n    return a - b", "def f(a, b):\n    return a + b"
    hunk = "@@ -1,2 +1,2 @@\n def f(a, b):\n-    return a - b\n"
    head = "diff --git a/f.py b/f.py\n--- a/f.py\n+++ b/f.py\n"
    marker = "\\ No newline at end of file\n"
    cases = [
        (old, new, head + hunk + marker + "+    return a + b\n" + marker),  # none, none
        (old, new + "\n", head + hunk + marker + "+    return a + b\n"),  # added
        (old + "\n", new, head + hunk + "+    return a + b\n" + marker),  # taken away
    ]
    # a form feed is no line break to git (str.splitlines took it for one)
    paged = "a\x0cb\nc\n"
    cases.append((paged, "a\x0cb\nC\n", "--- a/f.py\n+++ b/f.py\n@@ -2 +2 @@\n-c\n+C\n"))
    for before, after, diff in cases:
        (c,) = diff_contents(diff, Path("/repo"), lambda rel, b=before: b.encode())[0]
        assert (c.old_text, c.new_text) == (before, after)


async def test_a_cap_crossed_and_a_cloud_step_skipped_for_money_or_local_only_are_told(
    policy: Any,
) -> None:
    """The editor heard of neither: a ``budget`` line (a call that cost past a cap) was
    not shown, and every cloud step skipped for the budget or the local-only rule went
    out as a thought, so a user's ``/escalate`` under ``--local-only`` was served locally
    without a word (an ACP audit; GR-005). Each such skip is a message once per model in
    a turn (a run's steps skip it again and again), then a thought."""

    def skip(model: str, reason: str) -> AuditAppended:
        return AuditAppended.of(
            session="s",
            line={"kind": "skip", "session": "s", "to": model, "values": {"reason": reason}},
        )

    crossed = AuditAppended.of(
        session="s",
        line={
            "kind": "budget",
            "session": "s",
            "to": "gpt-5.1-high",
            "reason_codes": ["GR011_CAP_CROSSED"],
            "detail": "gpt-5.1-high cost more than its reservation: past the session cap",
        },
    )
    sent = await relay_of(
        [
            crossed,
            skip("gpt-5.1-high", "budget"),
            skip("gpt-5.1-high", "budget"),  # again in the same turn: a thought
            skip("deepseek-reasoner", "budget"),  # another model: told
            skip("deepseek-reasoner", "local_only"),  # another reason: told
            skip("kimi-k2", "unavailable"),  # no key: a thought, as before
        ],
        policy,
    )
    assert [u.session_update for u in sent] == [
        "agent_message_chunk",
        "agent_message_chunk",
        "agent_thought_chunk",
        "agent_message_chunk",
        "agent_message_chunk",
        "agent_thought_chunk",
    ]
    assert "**budget**" in sent[0].content.text and "GR011_CAP_CROSSED" in sent[0].content.text
    assert "past the session cap" in sent[0].content.text
    assert "**skip**" in sent[1].content.text and "gpt-5.1-high" in sent[1].content.text
    # a new turn (a new relay) tells it again
    again = await relay_of([skip("gpt-5.1-high", "budget")], policy)
    assert [u.session_update for u in again] == ["agent_message_chunk"]


async def test_another_sessions_lines_are_not_this_conversations(policy: Any) -> None:
    """A reservation of another session found expired by this one's ledger is written by
    this session's stores, in the other session: its budget line is not shown here (a
    review), nor counted in this session's usage."""
    sent: list[Any] = []

    async def send(update: Any) -> None:
        sent.append(update)

    relay = RunRelay(send, Path("/repo"), None, UsageMeter(policy), session="s")
    for session in ("other", "s"):
        await relay.handle(
            AuditAppended.of(
                session="s",
                line={"kind": "budget", "session": session, "detail": f"expired in {session}"},
            )
        )
        await relay.handle(
            AuditAppended.of(
                session="s",
                line={"kind": "call", "session": session, "values": {"tokens_in": 1}},
            )
        )
    assert [u.session_update for u in sent] == ["agent_message_chunk", "usage_update"]
    assert "expired in s" in sent[0].content.text
