"""``switchyard acp`` driven by the SDK's own client side (issue 15).

The agent is a real subprocess; vLLM (the local roles), OpenAI (the Architect's
escalation) and DeepSeek (the Implementer's) are loopback fakes answering by role. The
repository, the worktree, the sandboxed test loops, the audit chain, the ledger, the
evidence bundle and the merge are real. The test command is the reliability kit's
one-line check (configured in the repo's .switchyard/config.toml), so a run takes seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from acp import text_block

from app.evidence.bundle import verify_bundle
from app.paths import repo_state_dir
from app.workspace.worktree import checkout_fingerprint
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.policy import policy_pointing
from tests.integration.acp_kit import (
    CLIENT_NAME,
    ScriptedClient,
    agent_env,
    initialize,
    spawned,
    task_prompt,
)
from tests.reliability.kit import (
    FAST_TEST,
    LOCAL_MODELS,
    TASK,
    closed_port,
    diff_of,
    fix_diff,
    impl_json,
    make_repo,
    plan_json,
    role_of,
    verdict_json,
)

ESCALATION_OPTIONS = [
    ("y", "allow_once"),
    ("a", "allow_always"),
    ("n", "reject_once"),
    ("d", "reject_always"),
]
MERGE_OPTIONS = [("merge", "allow_once"), ("keep", "reject_once")]
APPROVER = f"acp:{CLIENT_NAME}"
MARKER = "UNSAVED-BUFFER-MARKER-7f3"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = make_repo(tmp_path)
    # the repo's own state dir (git-ignored) names the fast test command
    (repo_state_dir(repo) / "config.toml").write_text(f"test_command = {json.dumps(FAST_TEST)}\n")
    return repo


@pytest.fixture
def world(
    repo: Path, tmp_path: Path, fake_openai_factory: Callable[..., FakeOpenAIServer]
) -> Callable[..., dict[str, Any]]:
    """Fakes scripted by role: ``world(plan=0.9, local_impl=[diff, ...])``."""

    def build(
        plan: float = 0.9, local_impl: list[str] | None = None, tutor_turns: int = 6
    ) -> dict[str, Any]:
        fix = fix_diff(repo)
        wrong = diff_of(repo, '"""Split ``text``', '"""Split the ``text``')  # applies, red
        script = {"wrong": wrong, "fix": fix}
        impl = [script[k] for k in (local_impl or ["fix"])]

        def local(body: dict[str, Any]) -> str:
            role = role_of(body)
            if role == "architect":
                return plan_json(plan)
            if role == "implementer":
                return impl_json(impl.pop(0) if impl else wrong)
            if role == "judge":
                return verdict_json("approve")
            system = str(body["messages"][0]["content"])
            if "tutor" in system:
                return json.dumps(
                    {
                        "questions": ["What does range(n - 1) leave out?"],
                        "hint": "count the loop's iterations",
                        "answer": "range(len(tokens)) visits every token",
                    }
                )
            return json.dumps({"patterns": []})

        vllm = fake_openai_factory("vllm", models=LOCAL_MODELS)
        vllm.script.respond_with(local)
        cloud = fake_openai_factory("openai")
        cloud.script.respond_with(
            lambda body: plan_json(0.95) if role_of(body) == "architect" else verdict_json()
        )
        deepseek = fake_openai_factory("deepseek")
        deepseek.script.respond_with(lambda body: impl_json(fix, 0.9))
        policy = policy_pointing(tmp_path, openai=cloud.base_url, deepseek=deepseek.base_url)
        text = policy.read_text()
        assert "max_turns = 6" in text
        policy.write_text(text.replace("max_turns = 6", f"max_turns = {tutor_turns}"))
        env = agent_env(
            SWITCHYARD_VLLM_URL=vllm.base_url,
            SWITCHYARD_LLAMACPP_SERVER_URL=f"http://127.0.0.1:{closed_port()}/v1",
            OPENAI_API_KEY="sk-canary-openai-0000000000000000",
            DEEPSEEK_API_KEY="sk-canary-deepseek-000000000000000",
            # a key for Kimi too: nobody is asked to approve a model that has none
            MOONSHOT_API_KEY="sk-canary-moonshot-000000000000000",
        )
        return {"policy": policy, "env": env, "vllm": vllm, "cloud": cloud, "deepseek": deepseek}

    return build


def bundle_of(repo: Path) -> Path:
    (bundle,) = (repo / ".switchyard" / "runs").iterdir()
    return bundle


def audit_of(bundle: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (bundle / "audit.jsonl").read_text().splitlines()]


def no_protocol_noise(caplog: pytest.LogCaptureFixture) -> None:
    """The client's SDK logs every stdout line that is not JSON: there must be none."""
    bad = [r.getMessage() for r in caplog.records if "JSON-RPC" in r.getMessage()]
    assert bad == []


async def test_a_full_run_asks_for_each_escalation_and_the_merge(
    repo: Path, world: Callable[..., dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    w = world(plan=0.6, local_impl=["wrong", "wrong", "fix"])
    parser = repo / "parser.py"
    unsaved = parser.read_text() + f"# {MARKER}\n"
    client = ScriptedClient(answers=["y", "d", "merge"], buffers={str(parser): unsaved})
    async with spawned(client, cwd=repo, env=w["env"], args=("--policy", str(w["policy"]))) as conn:
        init = await initialize(conn, fs=True)
        assert init.protocol_version == 1 and init.agent_info.name == "switchyard"
        assert init.agent_capabilities.load_session
        session = await conn.new_session(cwd=str(repo), mcp_servers=[])
        assert [m.id for m in session.modes.available_modes] == ["run", "tutor"]
        before = checkout_fingerprint(repo)
        done = await conn.prompt(session_id=session.session_id, prompt=task_prompt(TASK, parser))
    assert done.stop_reason == "end_turn"
    no_protocol_noise(caplog)

    # the permissions: the Architect's escalation (y), DeepSeek's for the failed loops (d:
    # deny all, stay local: ACE's reflection on them is denied without asking), the merge
    escalations, merge = client.permissions[:2], client.permissions[2:]
    assert [p.options for p in escalations] == [ESCALATION_OPTIONS] * 2
    assert [p.answer for p in client.permissions] == ["y", "d", "merge"]
    arch, impl = (p.raw_input for p in escalations)
    assert (arch["role"], arch["model"]) == ("architect", "gpt-5.1-high")
    assert arch["provider"] == "openai" and arch["values"] == {"confidence": 0.6}
    assert arch["triggers"][0]["code"] == "ARCHITECT_LOW_CONFIDENCE"
    assert arch["est_cost_usd"] > 0 and arch["budget_left_usd"] > 0 and arch["timeout_s"] == 60
    assert (impl["role"], impl["model"]) == ("implementer", "deepseek-reasoner")
    assert impl["triggers"][0]["signal"] == "failed_loops" and impl["values"]["failed_loops"] == 2
    assert merge[0].options == MERGE_OPTIONS and merge[0].title.endswith("into main?")
    # the escalation tool calls end as decided
    approvals = [u.tool_call_id for u in client.tool_calls("fetch")]
    assert [client.final_status(t) for t in approvals] == ["completed", "failed"]

    # the updates, in order: Stage0 (search) → plan → attempts (edit) and loops (execute)
    kinds = client.kinds()
    assert kinds.index("tool_call:search") < kinds.index("plan") < kinds.index("tool_call:edit")
    stage0 = client.tool_calls("search")[0]
    assert client.final_status(stage0.tool_call_id) == "completed"
    plans = client.of("plan")
    assert [e.status for e in plans[0].entries] == ["pending"]
    assert [e.status for e in plans[-1].entries] == ["completed"]
    # the plan first came from the local model, then from the approved escalation
    assert {e.status for p in plans for e in p.entries} == {"pending", "in_progress", "completed"}
    edits = client.tool_calls("edit")[:3]
    assert [client.final_status(e.tool_call_id) for e in edits] == ["completed"] * 3
    updates = client.progress(edits[2].tool_call_id)
    (diff,) = [c for u in updates for c in u.content or [] if c.type == "diff"]
    assert diff.path == str(parser)
    assert "range(len(tokens) - 1)" in diff.old_text
    assert "range(len(tokens) - 1)" not in diff.new_text and "range(len(tokens))" in diff.new_text
    loops = client.tool_calls("execute")
    outcomes = [client.final_status(t.tool_call_id) for t in loops]
    assert outcomes == ["failed", "failed", "failed", "completed"]  # baseline, 2 wrong, fix
    last = [u for u in client.progress(loops[-1].tool_call_id) if u.raw_output]
    assert last[-1].raw_output["passed"] is True and last[-1].raw_output["exit_code"] == 0

    # the audit lines the user sees live (GR-005)
    thoughts, said = client.text("agent_thought_chunk"), client.text()
    assert "route architect:" in thoughts
    assert "**escalation** · escalation architect:" in said and "gpt-5.1-high" in said
    assert "**approval**" in said and f"by {APPROVER}" in said
    assert "**denial**" in said and "DENIED_ALL" in said
    usage = client.of("usage_update")
    assert usage and usage[-1].cost.currency == "USD" and usage[-1].cost.amount > 0
    # the final message: the Judge's verdict and the bundle; then the merge
    bundle = bundle_of(repo)
    assert f"evidence bundle `{bundle.name}`: {bundle}" in said
    assert "Judge: approve by" in said and "merge_ready" in said
    assert f"Merged run {bundle.name} into main" in said

    # the unsaved buffer reached the planner, read through the client; nothing written
    assert client.reads == [str(parser)] and client.writes == []
    planner = [b for b in w["vllm"].chat_requests if role_of(b) == "architect"]
    assert MARKER in json.dumps(planner[0])
    assert MARKER in (bundle / "editor_context.md").read_text()

    # the evidence: sealed, merge-ready, every decision audited with the ACP approver
    assert verify_bundle(bundle).ok
    assert json.loads((bundle / "manifest.json").read_text())["status"] == "merge_ready"
    lines = audit_of(bundle)
    decided = [
        (a["kind"], a["role"], a["reason_codes"], a["provenance"].get("approver"))
        for a in lines
        if a["kind"] in ("approval", "denial")
    ]
    assert decided == [
        ("approval", "architect", ["APPROVED_ONCE"], APPROVER),
        ("denial", "implementer", ["DENIED_ALL"], APPROVER),
        ("denial", "ace", ["DENIED_ALL_REUSED"], "session-denial"),
    ]
    assert w["deepseek"].chat_requests == []  # denied: nothing went to DeepSeek
    # the merge took the sealed commit into the user's branch, approved by the client
    merges = await audit_db("merge")
    assert [(m["values"]["outcome"], m["values"]["approver"]) for m in merges] == [
        ("merging", APPROVER),
        ("merged", APPROVER),
    ]
    assert checkout_fingerprint(repo) != before
    assert "range(len(tokens) - 1)" not in parser.read_text()


async def test_the_merge_refused_leaves_the_checkout_and_a_client_without_fs_reads_disk(
    repo: Path, world: Callable[..., dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    w = world()
    parser = repo / "parser.py"
    client = ScriptedClient(answers=["keep"])
    before = checkout_fingerprint(repo)
    async with spawned(client, cwd=repo, env=w["env"], args=("--policy", str(w["policy"]))) as conn:
        await initialize(conn, fs=False)
        session = await conn.new_session(cwd=str(repo), mcp_servers=[])
        done = await conn.prompt(session_id=session.session_id, prompt=task_prompt(TASK, parser))
    assert done.stop_reason == "end_turn"
    no_protocol_noise(caplog)
    # no escalation: the merge is the one permission, refused
    (merge,) = client.permissions
    assert merge.options == MERGE_OPTIONS and merge.answer == "keep"
    assert client.final_status(client.tool_calls("edit")[-1].tool_call_id) == "failed"
    assert checkout_fingerprint(repo) == before
    bundle = bundle_of(repo)
    merges = await audit_db("merge")
    assert [m["values"]["outcome"] for m in merges] == ["refused"]
    assert merges[0]["reason_codes"] == ["HUMAN"] and merges[0]["run"] == bundle.name
    # who said no, and how (a decline is not a timeout nor a failed request)
    assert merges[0]["values"]["answer"] == f"acp:{CLIENT_NAME}: declined (keep)"
    assert "Not merged (nothing in the checkout changed)" in client.text()
    # no fs capability: the agent never asked the client, it read the file from disk
    assert client.reads == [] and client.writes == []
    assert "## From the editor" in (bundle / "editor_context.md").read_text()

    # session/list and session/load find the session again in the evidence
    again = ScriptedClient()
    async with spawned(again, cwd=repo, env=w["env"], args=("--policy", str(w["policy"]))) as conn:
        await initialize(conn, fs=False)
        listed = await conn.list_sessions(cwd=str(repo))
        assert [(s.session_id, s.title) for s in listed.sessions] == [(session.session_id, TASK)]
        loaded = await conn.load_session(
            cwd=str(repo), session_id=session.session_id, mcp_servers=[]
        )
        assert loaded.modes.current_mode_id == "run"
    assert again.kinds() == ["user_message_chunk", "agent_message_chunk"]
    assert again.text("user_message_chunk") == TASK
    assert f"Run {bundle.name}: merge_ready" in again.text()


async def test_a_merge_withdrawn_by_a_cancel_is_audited_as_refused(
    repo: Path, world: Callable[..., dict[str, Any]]
) -> None:
    """session/cancel while the merge permission was on screen told the editor and left
    no merge line (a keep, a dismissal or a timeout each leave one: an ACP audit)."""
    w = world()
    before = checkout_fingerprint(repo)
    client, done = await cancelled_at_the_first_permission(repo, w, fs=False)
    assert done.stop_reason == "cancelled"
    (merge,) = client.permissions
    assert merge.options == MERGE_OPTIONS
    assert checkout_fingerprint(repo) == before
    (line,) = await audit_db("merge")
    assert line["values"]["outcome"] == "refused" and line["reason_codes"] == ["HUMAN"]
    assert line["values"]["answer"] == f"acp:{CLIENT_NAME}: withdrawn (the turn was cancelled)"
    assert line["run"] == bundle_of(repo).name


async def cancelled_at_the_first_permission(
    repo: Path, w: dict[str, Any], *, fs: bool
) -> tuple[ScriptedClient, Any]:
    """A task's turn, where the editor's stop button is pressed while the first
    permission is on screen: session/cancel, then the pending permission answers
    "cancelled" as the protocol asks. The client, and the prompt's response."""
    session_id: list[str] = []

    async def cancel_then_answer(client: ScriptedClient) -> None:
        await client.conn.cancel(session_id=session_id[0])
        return None

    client = ScriptedClient(answers=[cancel_then_answer])
    async with spawned(client, cwd=repo, env=w["env"], args=("--policy", str(w["policy"]))) as conn:
        await initialize(conn, fs=fs)
        session = await conn.new_session(cwd=str(repo), mcp_servers=[])
        session_id.append(session.session_id)
        done = await conn.prompt(session_id=session.session_id, prompt=[text_block(TASK)])
    return client, done


async def audit_db(kind: str) -> list[dict[str, Any]]:
    """Lines of ``kind`` in the test's audit chain (the merge comes after the bundle's seal)."""
    from app.audit import AuditLog
    from app.config import load_settings

    async with AuditLog.open(load_settings().audit_db) as log:
        assert (await log.verify()).ok
        lines = await log.lines()
    return [x.model_dump(mode="json", by_alias=True) for x in lines if x.kind == kind]


async def test_cancel_in_the_middle_of_a_run_seals_the_evidence(
    repo: Path, world: Callable[..., dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    w = world(plan=0.6)
    before = checkout_fingerprint(repo)
    client, done = await cancelled_at_the_first_permission(repo, w, fs=True)
    assert done.stop_reason == "cancelled"
    no_protocol_noise(caplog)
    (asked,) = client.permissions
    assert asked.options == ESCALATION_OPTIONS and asked.answer is None
    (approval,) = client.tool_calls("fetch")
    assert client.final_status(approval.tool_call_id) == "failed"
    # every tool call the run opened is closed
    opened = {u.tool_call_id for u in client.of("tool_call")}
    assert all(client.final_status(t) in ("completed", "failed") for t in opened)
    bundle = bundle_of(repo)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["status"] == "stopped" and "cancelled" in manifest["reason"]
    assert verify_bundle(bundle).ok
    assert checkout_fingerprint(repo) == before  # nothing half-applied
    assert w["cloud"].chat_requests == []  # the escalation never left the machine
    assert f"Run {bundle.name}: stopped" in client.text()
    assert not [t for t in (repo / ".switchyard" / "worktrees").glob("*") if t.is_dir()]


@pytest.mark.parametrize("how", ["hang-up", "SIGTERM", "crash"])
async def test_an_editor_that_goes_away_mid_run_leaves_sealed_evidence(
    repo: Path, world: Callable[..., dict[str, Any]], how: str
) -> None:
    """``crash``: the editor died, both pipes closed. The SDK's send loop ended at the
    first broken pipe and left every later send waiting, so the agent never exited (an
    ACP audit: alive after 150 s, its stores open, reparented to init)."""
    w = world(plan=0.6)

    async def go_away(client: ScriptedClient) -> None:
        # at the escalation's permission request, the editor goes and never answers
        if how == "hang-up":
            client.proc.stdin.close()  # the thread was closed, or the editor quit
        elif how == "crash":
            client.proc.stdin.close()
            client.proc._transport.get_pipe_transport(1).close()  # nobody reads stdout
        else:
            client.proc.send_signal(signal.SIGTERM)
        await asyncio.Event().wait()

    client = ScriptedClient(answers=[go_away])
    before = checkout_fingerprint(repo)
    async with spawned(client, cwd=repo, env=w["env"], args=("--policy", str(w["policy"]))) as conn:
        await initialize(conn, fs=False)
        session = await conn.new_session(cwd=str(repo), mcp_servers=[])
        if how == "hang-up":
            # stdin closed, stdout still read: the turn stops and is answered before the
            # agent goes (it went without a word, as for SIGTERM)
            done = await conn.prompt(session_id=session.session_id, prompt=[text_block(TASK)])
            assert done.stop_reason == "cancelled"
        elif how == "crash":  # nobody hears the answer: the agent is only to end
            turn = asyncio.create_task(
                conn.prompt(session_id=session.session_id, prompt=[text_block(TASK)])
            )
            assert await asyncio.wait_for(client.proc.wait(), 60) == 0
            turn.cancel()
        else:
            with pytest.raises(ConnectionError):  # the agent ended the turn by going away
                await conn.prompt(session_id=session.session_id, prompt=[text_block(TASK)])
        # SIGTERM ends it with 143, as every command it stops (it was 0: an ACP audit)
        assert await asyncio.wait_for(client.proc.wait(), 60) == (143 if how == "SIGTERM" else 0)
    bundle = bundle_of(repo)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["status"] == "stopped" and "cancelled" in manifest["reason"]
    # why, as it was: not the user's cancel (a crash read "cancelled by the user")
    assert manifest["reason"] == (
        "cancelled: the agent was terminated (SIGTERM)"
        if how == "SIGTERM"
        else "cancelled: the editor closed the connection"
    )
    assert verify_bundle(bundle).ok
    assert checkout_fingerprint(repo) == before
    assert w["cloud"].chat_requests == []
    assert not [t for t in (repo / ".switchyard" / "worktrees").glob("*") if t.is_dir()]


async def test_no_answer_within_the_timeout_or_a_dismissed_request_denies(
    repo: Path, world: Callable[..., dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    w = world(plan=0.6)

    async def never(client: ScriptedClient) -> str | None:
        await asyncio.Event().wait()  # the editor never answers
        return None

    # the architect's escalation: no answer (a timeout denies the rest of its chain too:
    # nobody is there to ask); the next request, the second opinion's: dismissed
    client = ScriptedClient(answers=[never, None])
    env = {**w["env"], "SWITCHYARD_APPROVAL_TIMEOUT_S": "1"}
    async with spawned(client, cwd=repo, env=env, args=("--policy", str(w["policy"]))) as conn:
        await initialize(conn, fs=False)
        session = await conn.new_session(cwd=str(repo), mcp_servers=[])
        done = await conn.prompt(session_id=session.session_id, prompt=[text_block(TASK)])
    assert done.stop_reason == "end_turn"
    first = client.tool_calls("fetch")[0]
    assert client.permissions[0].answer is None  # still waiting when the broker gave up
    assert client.final_status(first.tool_call_id) == "failed"
    (timed_out, dismissed, *rest) = [
        (d["role"], d["reason_codes"], d["provenance"]["approver"], d["detail"])
        for d in audit_of(bundle_of(repo))
        if d["kind"] == "denial"
    ]
    assert timed_out[:3] == ("architect", ["APPROVAL_TIMEOUT"], "timeout")
    assert dismissed == ("second_opinion", ["DENIED"], APPROVER, "cancelled by the client: denied")
    assert all(codes == ["DENIED_ALL"] and who == APPROVER for _, codes, who, _ in rest)
    assert w["cloud"].chat_requests == [] and w["deepseek"].chat_requests == []


async def test_tutor_mode_runs_the_tutor_with_its_turn_cap(
    repo: Path, world: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    from acp.schema import McpServerStdio

    w = world(tutor_turns=2)
    client = ScriptedClient()
    # an editor's MCP server: not started, and said so once (it was dropped unsaid)
    mcp = McpServerStdio(name="github", command="/bin/true", args=[], env=[])
    async with spawned(client, cwd=repo, env=w["env"], args=("--policy", str(w["policy"]))) as conn:
        await initialize(conn, fs=False)
        session = await conn.new_session(cwd=str(repo), mcp_servers=[mcp])
        assert session.modes.current_mode_id == "run"
        await conn.set_session_mode(session_id=session.session_id, mode_id="tutor")
        sid = session.session_id
        first = await conn.prompt(session_id=sid, prompt=[text_block("why is a token lost?")])
        first_text = client.text()
        second = await conn.prompt(session_id=sid, prompt=[text_block("range stops early?")])
        third = await conn.prompt(session_id=sid, prompt=[text_block("and then?")])
    assert (first.stop_reason, second.stop_reason) == ("end_turn", "end_turn")
    assert third.stop_reason == "max_turn_requests"
    assert [u.current_mode_id for u in client.of("current_mode_update")] == ["tutor"]
    assert "What does range(n - 1) leave out?" in first_text
    assert "does not start this editor's MCP servers (github)" in first_text
    assert client.text().count("MCP servers") == 1
    assert "held back" in first_text and "range(len(tokens)) visits" not in first_text
    said = client.text()
    assert "**Answer:** range(len(tokens)) visits every token" in said
    assert "roles.tutor.max_turns = 2" in said
    assert not (repo / ".switchyard" / "runs").exists()  # no pipeline run in tutor mode


@contextlib.asynccontextmanager
async def a_slow_tutor_turn(
    repo: Path, w: dict[str, Any], seconds: float
) -> AsyncIterator[tuple[Any, str, asyncio.Future[Any], ScriptedClient]]:
    """A tutor turn whose model call takes ``seconds``, yielded once that call has begun:
    the connection, the session, the turn's prompt and the editor. (Later calls answer at
    once.)"""
    asked = threading.Event()

    def slow(body: dict[str, Any]) -> str:
        first = not asked.is_set()
        asked.set()
        if first:
            time.sleep(seconds)
        return json.dumps({"questions": ["q?"], "hint": "h", "answer": "a"})

    w["vllm"].script.respond_with(slow)
    client = ScriptedClient()
    async with spawned(client, cwd=repo, env=w["env"], args=("--policy", str(w["policy"]))) as conn:
        await initialize(conn, fs=False)
        session = await conn.new_session(cwd=str(repo), mcp_servers=[])
        sid = session.session_id
        await conn.set_session_mode(session_id=sid, mode_id="tutor")
        turn = asyncio.ensure_future(conn.prompt(session_id=sid, prompt=[text_block("why?")]))
        assert await asyncio.to_thread(asked.wait, 60), "the tutor never called its model"
        yield conn, sid, turn, client


async def test_a_tutor_turn_cancelled_mid_call_is_answered_cancelled(
    repo: Path, world: Callable[..., dict[str, Any]]
) -> None:
    """Only a pipeline turn turned its cancellation into "cancelled": a tutor turn
    cancelled while its model call ran left the prompt without any answer."""
    async with a_slow_tutor_turn(repo, world(), 2) as (conn, sid, turn, _):
        await conn.cancel(session_id=sid)
        done = await asyncio.wait_for(turn, 60)
    assert done.stop_reason == "cancelled"


async def test_a_prompt_while_a_turn_runs_is_refused_and_the_turn_goes_on(
    repo: Path, world: Callable[..., dict[str, Any]]
) -> None:
    """ACP v1 has one turn at a time per session ("once a prompt turn completes, the
    Client may send another"); Zed cancels the running turn and waits for its answer
    before it sends the next. A second prompt meanwhile was answered -32600, "the JSON
    sent is not a valid Request object", which it is: it is the agent's refusal (-32603,
    said why), and the running turn ends as it would have."""
    from acp import RequestError

    async with a_slow_tutor_turn(repo, world(), 3) as (conn, sid, turn, client):
        with pytest.raises(RequestError) as refused:
            await conn.prompt(session_id=sid, prompt=[text_block("and now?")])
        assert not turn.done()
        done = await asyncio.wait_for(turn, 60)
        # once it has answered, the session takes the next prompt
        again = await conn.prompt(session_id=sid, prompt=[text_block("and now?")])
    assert refused.value.code == -32603
    assert "a prompt is already running in this session" in str(refused.value)
    assert refused.value.data == {"sessionId": sid, "reason": "busy"}
    assert (done.stop_reason, again.stop_reason) == ("end_turn", "end_turn")
    assert client.text().count("q?") == 2
