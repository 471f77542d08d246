"""R7: a secret that lives in the repository never reaches a file Switchyard writes, nor
a cloud model.

The demo repository gets a ``.env`` and a settings module holding three secrets: the
DeepSeek key (also exported, in a shape no pattern knows: only the environment net can
catch it), an ``APP_SECRET`` (only the ``.env`` shape knows it) and an AWS key id (only
its shape). The task names both files, so Stage0 quotes them into the brief; the test
command prints both, so the test log holds them; the local Implementer's diffs touch the
settings module, so the secrets are in the diffs' context; the local critic and the
local ACE reflector quote what they saw. A full ``switchyard run`` escalates the plan to
OpenAI (the brief), the High-Risk Judge to OpenAI (the diff and the test log) and the
second opinion to Anthropic; then the run is merged and the audit exported.

Afterwards no secret is in any file under the repository's ``.switchyard`` (the evidence
bundle: brief, test logs, diffs, plan, verdicts, critique, second opinion, exported
audit; the Stage0 cache and its vocabulary), in the data dir (audit, ledger and memory
databases with their WAL files, the ``audit export``), or in any request body a cloud
fake received; each kind of file shows the masked secret where the secret was, each
cloud call line counts what it masked, the local models did get the real text, and
the merge brought the real change (not the masked copy) into the checkout.

Not searched: the user's inputs, which Switchyard reads and never writes: the spec (it
names the AWS key id too, and is copied into the brief as it is), the repository's own
files, its ``.git`` and the run's worktree (a git checkout of the repository under
``.switchyard/worktrees``): the secrets live there by the user's choice, and the tests
must run against them.
"""

from __future__ import annotations

import json
import re
import sqlite3
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.audit.masking import REDACTED
from tests.fakes.anthropic_server import FakeAnthropicServer
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.policy import policy_pointing
from tests.fakes.spec import seed_spec
from tests.reliability.kit import (
    LOCAL_MODELS,
    TASK,
    closed_port,
    diff_of,
    git,
    impl_json,
    make_repo,
    no_traceback,
    plan_json,
    run_cli,
    run_json,
    verdict_json,
)

# High-Risk (the cloud Judge and the second opinion are asked); the Tutor role is the
# critic sidecar's, exercised so the critic runs
SPEC = seed_spec(hr="YES", roles={"Tutor": "YES"})
REPO_TASK = (
    f"{TASK} The settings module settings.py and the .env file (DEEPSEEK_KEY, APP_SECRET,"
    " AWS_KEY_ID) must keep loading."
)
#: prints both files, then the demo's check (exit 0 once parse() keeps the last token)
PRINTING_TEST = (
    f"{sys.executable} -c \"import sys; print(open('.env').read());"
    " print(open('settings.py').read());"
    " sys.exit('len(tokens) - 1' in open('parser.py').read())\""
)
SHOWN = re.compile(r'DEEPSEEK_KEY = "([^"\n]*)"')


def settings_module(key: str, aws: str) -> str:
    return (
        '"""Settings of the parser demo: DEEPSEEK_KEY, APP_SECRET, AWS_KEY_ID."""\n\n'
        "DEBUG = False\n"
        f'DEEPSEEK_KEY = "{key}"\n'
        f'AWS_KEY_ID = "{aws}"\n'
    )


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    tag = uuid.uuid4().hex
    found = {
        # exported and in the repository; no shape knows it
        "deepseek": f"canary-deepseek-{tag}",
        # only in the repository: the .env shape and the AWS shape know them
        "app_secret": f"appsecret{tag[:16]}",
        "aws": "AKIA" + tag[:16].upper(),
        # exported only (the other cloud keys), in shapes no pattern knows
        "openai": f"canary-openai-{tag}",
        "anthropic": f"canary-anthropic-{tag}",
    }
    monkeypatch.setenv("DEEPSEEK_API_KEY", found["deepseek"])
    monkeypatch.setenv("OPENAI_API_KEY", found["openai"])
    monkeypatch.setenv("ANTHROPIC_API_KEY", found["anthropic"])
    # no MOONSHOT_API_KEY: Kimi is unavailable, so the ACE reflector stays local
    monkeypatch.setenv("SPEC_KIT_CRITIC", "true")
    return found


def strings(obj: Any) -> str:
    """Every string in a JSON body (system prompts, messages, content blocks), joined."""
    if isinstance(obj, str):
        return obj
    if isinstance(obj, dict):
        return "\n".join(strings(v) for v in obj.values())
    if isinstance(obj, list):
        return "\n".join(strings(v) for v in obj)
    return ""


def shown(body: dict[str, Any]) -> str:
    """What the request showed of the settings line: the key, or what stands for it."""
    m = SHOWN.search(strings(body))
    return m.group(1) if m else "(not shown)"


def role(body: dict[str, Any]) -> str:
    text = strings(body.get("system", "")) + strings(body.get("messages", [])[:1])
    for marker, name in (
        ("Socratic", "interrogate"),
        ("Architect", "architect"),
        ("Implementer", "implementer"),
        ("Judge", "judge"),
        ("You are a critic", "critic"),
        ("ACE reflector", "reflector"),
        ("second opinion", "second_opinion"),
    ):
        if marker in text:
            return name
    return "other"


@pytest.fixture
def world(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    secrets: dict[str, str],
    fake_openai_factory: Callable[..., FakeOpenAIServer],
    fake_anthropic_factory: Callable[..., FakeAnthropicServer],
) -> Iterator[dict[str, Any]]:
    repo = make_repo(tmp_path)
    (repo / ".env").write_text(
        "APP_NAME=parser-demo\n"
        f"APP_SECRET={secrets['app_secret']}\n"
        f"DEEPSEEK_API_KEY={secrets['deepseek']}\n"
    )
    (repo / "settings.py").write_text(settings_module(secrets["deepseek"], secrets["aws"]))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "settings")
    touch = diff_of(repo, "DEBUG = False", "DEBUG = False  # checked", path="settings.py")
    wrong = diff_of(repo, '"""Split ``text``', '"""Split the ``text``') + touch
    fix = diff_of(repo, "range(len(tokens) - 1)", "range(len(tokens))") + touch
    assert f'DEEPSEEK_KEY = "{secrets["deepseek"]}"' in touch  # in the diffs' context
    attempts = [impl_json(wrong, 0.8), impl_json(fix, 0.9)]

    def local(body: dict[str, Any]) -> str:
        """A local model: it sees the real text, and quotes it."""
        seen, name = shown(body), role(body)
        if name == "interrogate":
            return "Q: is it the loop bound? A: yes."
        if name == "architect":
            draft = json.loads(plan_json(0.6))
            draft["goal"] = f"parse() keeps every token; DEEPSEEK_KEY = {seen} stays"
            return json.dumps(draft)
        if name == "implementer":
            return attempts.pop(0) if attempts else impl_json(fix, 0.9)
        if name == "critic":
            return json.dumps({"risks": [f"settings.py keeps DEEPSEEK_KEY = {seen}"]})
        if name == "reflector":
            pattern = f"never print settings.py (it holds {secrets['deepseek']})"
            return json.dumps(
                {"patterns": [{"pattern": pattern, "helpful": True, "confidence": 0.9}]}
            )
        if name == "judge":
            return verdict_json()
        return '{"patterns": []}'

    def openai_reply(body: dict[str, Any]) -> str:
        """The cloud Architect and Judge: they quote what they were shown."""
        name = role(body)
        if name == "judge":
            verdict = json.loads(verdict_json())
            verdict["summary"] = f"the fix is right; settings.py shows DEEPSEEK_KEY = {shown(body)}"
            return json.dumps(verdict)
        if name == "interrogate":
            return "Q: is it the loop bound? A: yes."
        return plan_json(0.9)

    def anthropic_reply(body: dict[str, Any]) -> str:
        if role(body) == "second_opinion":
            return json.dumps(
                {
                    "assessment": f"check the test output; it printed {shown(body)}",
                    "risks": ["the test command prints the settings files"],
                    "confidence": 0.6,
                }
            )
        return verdict_json()

    vllm = fake_openai_factory("vllm", models=LOCAL_MODELS)
    vllm.script.respond_with(local)
    openai = fake_openai_factory("openai")
    openai.script.respond_with(openai_reply)
    deepseek = fake_openai_factory("deepseek")
    deepseek.script.respond_with(lambda body: impl_json(fix, 0.95))
    anthropic = fake_anthropic_factory()
    anthropic.script.respond_with(anthropic_reply)
    policy = policy_pointing(
        tmp_path,
        openai=openai.base_url,
        deepseek=deepseek.base_url,
        anthropic=anthropic.base_url,
    )
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", f"http://127.0.0.1:{closed_port()}/v1")
    monkeypatch.setenv("COLUMNS", "200")
    spec = tmp_path / "spec.md"
    # the spec is copied into the brief as it is (not through Stage0's masked index)
    spec.write_text(f"{SPEC}\nStaging deploys with the key id {secrets['aws']}.\n")
    yield {
        "repo": repo,
        "policy": policy,
        "spec": spec,
        "vllm": vllm,
        "clouds": {"openai": openai, "deepseek": deepseek, "anthropic": anthropic},
    }


def test_repository_secrets_reach_no_file_and_no_cloud_model(
    tmp_path: Path,
    world: dict[str, Any],
    secrets: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo: Path = world["repo"]
    policy = ["--policy", str(world["policy"])]
    rc, out, err = run_json(
        [
            "run",
            REPO_TASK,
            "--repo",
            str(repo),
            "--spec",
            str(world["spec"]),
            "--approve",
            "allow",
            "--test-command",
            PRINTING_TEST,
            *policy,
        ],
        capsys,
    )
    no_traceback(err)
    assert rc == 0 and out["outcome"] == "merge_ready", (out, err[-3000:])
    run_id = out["run_id"]
    export = tmp_path / "data" / "export.jsonl"
    for argv in (
        ["merge", run_id, "--repo", str(repo), "--yes"],
        ["audit", "export", "-o", str(export)],
        ["audit", "verify"],
        ["evidence", "verify", run_id, "--repo", str(repo)],
    ):
        code, _, stderr = run_cli(argv, capsys)
        no_traceback(stderr)
        assert code == 0, (argv, stderr)

    deepseek_key = secrets["deepseek"]
    repo_secrets = (deepseek_key, secrets["app_secret"], secrets["aws"])
    needles = _needles(secrets.values())

    # ── cloud request bodies: masked, and they did carry the masked text ──────────────────
    bodies = {
        name: [r.body for r in fake.requests if r.method == "POST"]
        for name, fake in world["clouds"].items()
    }
    assert bodies["openai"] and bodies["anthropic"]
    for name, sent in bodies.items():
        for body in sent:
            text = json.dumps(body, ensure_ascii=False)
            assert not [n for n in needles if n.decode() in text], (name, text[:2000])
    architect = [b for b in bodies["openai"] if role(b) == "architect"]
    judge = [b for b in bodies["openai"] if role(b) == "judge"]
    second = [b for b in bodies["anthropic"] if role(b) == "second_opinion"]
    assert architect and judge and second
    assert shown(architect[0]) == REDACTED  # the brief quoted settings.py, masked
    assert f"APP_SECRET={REDACTED}" in strings(judge[-1])  # the test log, masked
    # the local models got the real text (local runtimes are not masked: by design)
    local = json.dumps(world["vllm"].chat_requests, ensure_ascii=False)
    assert all(s in local for s in repo_secrets)

    # ── every file written ────────────────────────────────────────────────────────────────
    files = [p for p in _written_files(tmp_path, repo) if p != world["spec"]]  # the user's
    assert any(p.name == "cache.sqlite" for p in files)  # the Stage0 cache was searched
    leaks = [
        f"{p.relative_to(tmp_path)}: {n.decode()}"
        for p in files
        for n in needles
        if n in p.read_bytes()
    ]
    assert leaks == []

    # ── each kind holds the masked secret where the secret was ────────────────────────────
    bundle = repo / ".switchyard" / "runs" / run_id
    brief_md = (bundle / "TASK_BRIEF.md").read_text()
    assert f'DEEPSEEK_KEY = "{REDACTED}"' in brief_md
    assert f"Staging deploys with the key id {REDACTED}." in brief_md
    assert REDACTED in (bundle / "brief.json").read_text()
    log = (bundle / "tests" / "loop-1.log").read_text()
    assert f"APP_SECRET={REDACTED}" in log
    assert f'DEEPSEEK_KEY = "{REDACTED}"' in log and f'AWS_KEY_ID = "{REDACTED}"' in log
    for attempt in (1, 2):
        diff = (bundle / "diffs" / f"attempt-{attempt}.diff").read_text()
        assert f' DEEPSEEK_KEY = "{REDACTED}"' in diff  # a context line, masked
    assert f"DEEPSEEK_KEY = {REDACTED}" in (bundle / "critique.json").read_text()
    assert f"DEEPSEEK_KEY = {REDACTED}" in (bundle / "verdict.json").read_text()
    assert f"printed {REDACTED}" in (bundle / "second_opinion.json").read_text()
    memories = _memory_texts(tmp_path / "data" / "memory.sqlite3")
    assert [t for t in memories if f"it holds {REDACTED}" in t]

    # ── the audit counts what was masked, never what it was ───────────────────────────────
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    calls = [x for x in lines if x["kind"] == "call" and x["run"] == run_id]
    cloud = [x for x in calls if x["values"].get("secrets_masked") is not None]
    masked = {x["role"]: x["values"]["secrets_masked"] for x in cloud}
    # the Judge was sent the test log and the diff, the second opinion the diff, the
    # Architect the brief: its spec snapshot (Stage0's code chunks are masked already)
    assert masked["judge"] >= 3 and masked["second_opinion"] >= 1, masked
    assert masked["architect"] >= 1, masked
    local_calls = [x for x in calls if x not in cloud]
    assert local_calls and not [x for x in local_calls if "secrets_masked" in x["values"]]

    # ── the merge brought the real change, not the bundle's masked copy ───────────────────
    merged = (repo / "settings.py").read_text()
    assert "DEBUG = False  # checked" in merged and deepseek_key in merged
    assert "range(len(tokens))" in (repo / "parser.py").read_text()


def _needles(values: Any) -> list[bytes]:
    """Each secret as written, lower-cased (the Stage0 vocabulary is lower case), and its
    long parts (the tokenizer splits at '-')."""
    out: set[bytes] = set()
    for value in values:
        for form in (value, value.lower()):
            out.add(form.encode())
            out.update(p.encode() for p in re.split(r"[-_]", form) if len(p) >= 16)
    return sorted(out)


def _written_files(root: Path, repo: Path) -> list[Path]:
    """Every file under the test's directory but the repository itself (its files, its
    .git, the run's worktree: a checkout of it)."""
    state = repo / ".switchyard"
    out = []
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        if path.is_relative_to(repo) and not path.is_relative_to(state):
            continue
        if path.is_relative_to(state / "worktrees"):
            continue
        out.append(path)
    assert len(out) > 20, out
    return out


def _memory_texts(db: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [str(r[0]) for r in conn.execute("SELECT text FROM memories")]
    finally:
        conn.close()
