"""An ACP session is kept to the working directory its editor gave (an ACP audit).

ACP's ``cwd`` "establishes the file system context for the session" and "SHOULD serve
as a boundary for tool operations on the file system"; an editor opened on a sub-folder
of a monorepo had the run's edits, and the merge, land anywhere in the repository. Here
the editor opens ``app/`` of a monorepo (through a symlink, as a user's project link
would be) and the models are loopback fakes scripted by role: an edit that reaches
``lib/`` is refused whole and said, and a merge that would write there is refused
without asking. The agent is a real subprocess driven by the SDK's client side; the
repository, worktree, sandboxed test loops, audit chain, evidence and merge are real.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from acp import text_block

from app.paths import repo_state_dir
from app.resources import data_dir
from app.workspace.worktree import checkout_fingerprint
from tests.fakes.demo_repo import diff_of, git
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.policy import policy_pointing
from tests.integration.acp_kit import ScriptedClient, agent_env, initialize, spawned
from tests.integration.test_acp_agent import audit_db, audit_of, bundle_of
from tests.reliability.kit import (
    LOCAL_MODELS,
    TASK,
    closed_port,
    impl_json,
    plan_json,
    role_of,
    verdict_json,
)

LIB = "LIB = 1\n"
#: exits 0 once app/parser.py keeps the last token (run at the top of the run's worktree)
APP_TEST = (
    f'{sys.executable} -c "import sys; '
    f"sys.exit('len(tokens) - 1' in open('app/parser.py').read())\""
)


@pytest.fixture
def mono(tmp_path: Path) -> Path:
    """A monorepo: the demo project in ``app/``, another in ``lib/``."""
    repo = tmp_path / "mono"
    shutil.copytree(data_dir("examples") / "parser-bug", repo / "app")
    (repo / "lib").mkdir()
    (repo / "lib" / "util.py").write_text(LIB)
    (repo / "README.md").write_text("# mono\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Test")
    git(repo, "config", "user.email", "test@example.invalid")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "mono")
    (repo_state_dir(repo) / "config.toml").write_text(f"test_command = {json.dumps(APP_TEST)}\n")
    return repo


def editor_link(mono: Path) -> Path:
    """The folder the editor opened: ``app/``, through a symlink to it."""
    link = mono.parent / "project-link"
    if not link.is_symlink():
        link.symlink_to(mono / "app", target_is_directory=True)
    return link


def world(
    mono: Path,
    factory: Callable[..., FakeOpenAIServer],
    tmp_path: Path,
    implementer: Callable[[], str],
) -> dict[str, Any]:
    """Fakes by role; the Implementer's replies come from ``implementer()``."""
    plan = plan_json(0.9).replace('"parser.py"', '"app/parser.py"')

    def local(body: dict[str, Any]) -> str:
        role = role_of(body)
        if role == "architect":
            return plan
        if role == "implementer":
            return implementer()
        if role == "judge":
            return verdict_json("approve")
        return json.dumps({"patterns": []})

    vllm = factory("vllm", models=LOCAL_MODELS)
    vllm.script.respond_with(local)
    cloud = factory("openai")
    cloud.script.respond_with(lambda body: verdict_json())
    policy = policy_pointing(tmp_path, openai=cloud.base_url)
    env = agent_env(
        SWITCHYARD_VLLM_URL=vllm.base_url,
        SWITCHYARD_LLAMACPP_SERVER_URL=f"http://127.0.0.1:{closed_port()}/v1",
    )
    return {"policy": policy, "env": env, "vllm": vllm}


def real(path: Path) -> str:
    return str(path.resolve())


def app_fix(mono: Path) -> str:
    return diff_of(mono, "range(len(tokens) - 1)", "range(len(tokens))", path="app/parser.py")


async def merge_else_deny(client: ScriptedClient) -> str:
    """Merge when asked to merge; deny any escalation (stay local)."""
    return "merge" if ("merge", "allow_once") in client.permissions[-1].options else "d"


async def run_one_task(mono: Path, w: dict[str, Any]) -> tuple[ScriptedClient, Any]:
    client = ScriptedClient(answers=[merge_else_deny] * 6)
    args = ("--policy", str(w["policy"]))
    async with spawned(client, cwd=mono / "app", env=w["env"], args=args) as conn:
        await initialize(conn, fs=False)
        session = await conn.new_session(cwd=str(editor_link(mono)), mcp_servers=[])
        done = await conn.prompt(session_id=session.session_id, prompt=[text_block(TASK)])
    return client, done


async def test_an_edit_outside_the_editors_folder_is_refused_whole_and_said(
    mono: Path, fake_openai_factory: Callable[..., FakeOpenAIServer], tmp_path: Path
) -> None:
    fix = app_fix(mono)
    reach = diff_of(mono, "LIB = 1", "LIB = 2", path="lib/util.py")
    replies = [fix + reach, fix]  # the fix with a change to lib/; then the fix alone
    w = world(mono, fake_openai_factory, tmp_path, lambda: impl_json(replies.pop(0)))
    head = git(mono, "rev-parse", "HEAD").strip()

    client, done = await run_one_task(mono, w)
    assert done.stop_reason == "end_turn"

    # the refusal, audited and said to the editor as it came, then the failed loop
    bundle = bundle_of(mono)
    lines = audit_of(bundle)
    (refusal,) = [a for a in lines if a["kind"] == "refusal"]
    assert refusal["role"] == "implementer" and refusal["reason_codes"] == ["EDIT_OUTSIDE_CWD"]
    assert refusal["values"]["within"] == "app"
    assert refusal["values"]["outside"] == ["lib/util.py"]
    assert refusal["values"]["files"] == ["app/parser.py", "lib/util.py"]
    loops = [a for a in lines if "IMPLEMENTER_EDITS_REFUSED" in a["reason_codes"]]
    assert [a["values"]["attempt"] for a in loops] == [1]
    said = client.text()
    assert "**refusal**" in said and "[EDIT_OUTSIDE_CWD]" in said
    # the plan at 0.9 escalates nothing: the editor's user reads that decision as a thought
    thoughts = client.text("agent_thought_chunk")
    assert "check architect:" in thoughts and "fires no trigger: no escalation needed" in thoughts
    assert "check architect:" not in said
    assert "outside app/, the folder the change is kept to: lib/util.py" in said
    # nothing of attempt 1 was applied: no diff of it, its tool call failed
    assert (bundle / "diffs" / "attempt-1.diff").read_text().startswith("# no diff: ")
    first_edit = client.tool_calls("edit")[0]
    assert client.final_status(first_edit.tool_call_id) == "failed"
    # the models were told the folder; the second attempt why the first was refused
    asks = [b for b in w["vllm"].chat_requests if role_of(b) in ("architect", "implementer")]
    assert all("Only files under app/ may change" in json.dumps(b) for b in asks)
    implementer_asks = [b for b in asks if role_of(b) == "implementer"]
    assert "outside app/" in json.dumps(implementer_asks[1])

    # the second attempt, inside app/, was tested, judged and merged: lib/ untouched
    assert f"Merged run {bundle.name} into main" in said
    merged = git(mono, "diff", "--name-only", head, "HEAD").split()
    assert merged == ["app/parser.py"]
    assert (mono / "lib" / "util.py").read_text() == LIB
    assert "range(len(tokens) - 1)" not in (mono / "app" / "parser.py").read_text()


async def test_a_merge_that_would_write_outside_the_editors_folder_is_refused_unasked(
    mono: Path, fake_openai_factory: Callable[..., FakeOpenAIServer], tmp_path: Path
) -> None:
    """The run changes only app/; but the branch the user has checked out when it ends
    lacks a commit of the run's base that changed lib/, which the merge would write."""
    (mono / "lib" / "util.py").write_text("LIB = 2\n")
    git(mono, "commit", "-q", "-am", "lib moves on")
    fix = app_fix(mono)

    def implementer() -> str:
        # while the run works in its worktree, the user checks out an older branch
        git(mono, "checkout", "-q", "-b", "older", "HEAD~1")
        return impl_json(fix)

    w = world(mono, fake_openai_factory, tmp_path, implementer)
    before = checkout_fingerprint(mono)
    client, done = await run_one_task(mono, w)
    assert done.stop_reason == "end_turn"
    assert checkout_fingerprint(mono) != before  # (the user's own checkout of older)
    moved = checkout_fingerprint(mono)

    bundle = bundle_of(mono)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["status"] == "merge_ready"
    # never asked: nothing but the folder blocked it, and that is no question for a human
    assert [p for p in client.permissions if ("merge", "allow_once") in p.options] == []
    (merge,) = await audit_db("merge")
    assert merge["values"]["outcome"] == "refused" and "OUTSIDE" in merge["reason_codes"]
    assert "outside app/" in merge["detail"] and "lib/util.py" in merge["detail"]
    said = client.text()
    assert "Not merged (nothing in the checkout changed): OUTSIDE: outside app/" in said
    assert checkout_fingerprint(mono) == moved and (mono / "lib" / "util.py").read_text() == LIB
    assert git(mono, "rev-parse", "--abbrev-ref", "HEAD").strip() == "older"


async def test_a_folders_session_is_listed_on_that_folder_and_loaded_only_there(
    mono: Path, fake_openai_factory: Callable[..., FakeOpenAIServer], tmp_path: Path
) -> None:
    """``session/list`` named the repository's top as every session's cwd, and its
    ``cwd`` ("filter sessions by working directory") listed every folder's sessions; a
    session kept to ``app/``, loaded later from the top, came back kept to the whole
    repository and shown as the top's."""
    from acp import RequestError

    fix = app_fix(mono)
    w = world(mono, fake_openai_factory, tmp_path, lambda: impl_json(fix))
    _, done = await run_one_task(mono, w)
    assert done.stop_reason == "end_turn"
    manifest = json.loads((bundle_of(mono) / "manifest.json").read_text())
    assert manifest["extra"] == {"within": "app"}

    later = ScriptedClient(answers=[])
    args = ("--policy", str(w["policy"]))
    async with spawned(later, cwd=mono, env=w["env"], args=args) as conn:
        await initialize(conn, fs=False)
        on_app = await conn.list_sessions(cwd=str(editor_link(mono)))
        on_top = await conn.list_sessions(cwd=str(mono))
        (info,) = on_app.sessions
        with pytest.raises(RequestError) as refused:
            await conn.load_session(cwd=str(mono), session_id=info.session_id, mcp_servers=[])
        loaded = await conn.load_session(
            cwd=str(editor_link(mono)), session_id=info.session_id, mcp_servers=[]
        )
        everywhere = await conn.list_sessions()  # (the open sessions' repositories)
    real_top, real_app = real(mono), real(mono / "app")
    assert info.cwd == real_app and on_top.sessions == []
    assert [(i.session_id, i.cwd) for i in everywhere.sessions] == [(info.session_id, real_app)]
    assert refused.value.code == -32602
    assert f"was made on {real_app}, not on {real_top}" in str(refused.value)
    assert loaded is not None  # and its run replayed as the conversation
    assert f"**Run {bundle_of(mono).name}: merge_ready**" in later.text()
