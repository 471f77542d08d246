"""R6 (GR-010): the sandbox fails closed, through full ``switchyard run``s.

No sandbox is simulated, never uninstalled: a directory early on PATH holds a ``bwrap``
and an ``unshare`` that refuse to run (as on a kernel without unprivileged user
namespaces), or ``shutil.which`` does not find them (not installed); the probe's cache is
dropped so that the run probes this machine afresh.

* Neither works: the run stops before any test runs (the test command would leave a
  marker file; there is none), with an audited refusal, exit 1, the user's checkout
  untouched and the evidence bundle sealed and verifying.
* With the opt-in (the flag, or the policy's setting) the command runs with no sandbox,
  audited as a downgrade before it runs; under local_only it is refused even so.
* Only ``unshare -rn`` works: the run goes on with no network, audited as a downgrade
  before the first test, with no opt-in, under local_only too.
* A canary provider key exported in Switchyard's environment never reaches the test
  command's environment (the command prints it), and local_only gives the command the
  hub-offline variables.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.pipeline import testloop
from app.workspace import sandbox_probe
from app.workspace.sandbox import SandboxResult
from app.workspace.worktree import checkout_fingerprint
from tests.ci import missing
from tests.fakes.openai_server import FakeOpenAIServer
from tests.reliability.kit import (
    CLOUD_KEY_VARS,
    LOCAL_MODELS,
    TASK,
    audit_lines,
    closed_port,
    fix_diff,
    green_reply,
    make_repo,
    no_traceback,
    run_cli,
    run_json,
)

#: what a sandbox tool says where the kernel forbids unprivileged user namespaces
REFUSING_TOOL = "#!/bin/sh\necho '{name}: setting up uid map: Permission denied' >&2\nexit 1\n"


@pytest.fixture
def world(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
) -> dict[str, Any]:
    repo = make_repo(tmp_path)
    fix = fix_diff(repo)

    vllm = fake_openai_factory("vllm", models=LOCAL_MODELS)
    vllm.script.respond_with(green_reply(fix))
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", f"http://127.0.0.1:{closed_port()}/v1")
    monkeypatch.setenv("COLUMNS", "200")
    marker = tmp_path / "the-test-command-ran"
    # exits 0 once parse() keeps the last token; leaves a marker outside the worktree
    # (which only a run with no sandbox can write)
    code = (
        "import pathlib, sys; pathlib.Path(sys.argv[1]).touch(); "
        "sys.exit('len(tokens) - 1' in open('parser.py').read())"
    )
    command = f'{sys.executable} -c "{code}" {marker}'
    return {"repo": repo, "marker": marker, "command": command, "tmp": tmp_path, "vllm": vllm}


def no_sandbox_tools(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, how: str) -> None:
    """bwrap and unshare are missing (``how="missing"``) or refuse to run ("refusing")."""
    if how == "missing":
        real_which = shutil.which

        def which(name: str, *args: Any, **kwargs: Any) -> str | None:
            return None if name in ("bwrap", "unshare") else real_which(name, *args, **kwargs)

        monkeypatch.setattr(sandbox_probe.shutil, "which", which)
    else:
        refusing_tools(monkeypatch, tmp_path, ("bwrap", "unshare"))
    fresh_probe(monkeypatch)


def refusing_tools(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, names: tuple[str, ...]) -> None:
    fake = tmp_path / "fake-bin"
    fake.mkdir(exist_ok=True)
    for name in names:
        tool = fake / name
        tool.write_text(REFUSING_TOOL.format(name=name))
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    fresh_probe(monkeypatch)


def fresh_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next probe looks at this machine as the test made it (the cache comes back
    afterwards)."""
    monkeypatch.setattr(sandbox_probe, "_probe_cache", None)


def run(world: dict[str, Any], capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    before = checkout_fingerprint(world["repo"])
    rc, out, err = run_json(
        [
            "run",
            TASK,
            "--repo",
            str(world["repo"]),
            "--approve",
            "deny",
            "--test-command",
            world["command"],
            *extra,
        ],
        capsys,
    )
    no_traceback(err)
    assert rc in (0, 1), (rc, out, err[-3000:])
    # however the run ended, the user's checkout is as it was and the bundle verifies
    assert checkout_fingerprint(world["repo"]).differences(before) == []
    rc2, _, err2 = run_cli(
        ["evidence", "verify", out["run_id"], "--repo", str(world["repo"])], capsys
    )
    assert rc2 == 0, err2
    lines = [a for a in audit_lines() if a["run"] == out["run_id"]]
    return {"rc": rc, "out": out, "err": err, "lines": lines}


def sandbox_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [a for a in lines if any(c.startswith("GR010_") for c in a["reason_codes"])]


def first_test_loop_seq(result: dict[str, Any]) -> int:
    """The seq of the first audit line written after the baseline test loop ran: the
    loop's record is in the bundle, and the first Implementer attempt routes after it."""
    routes = [a for a in result["lines"] if a["kind"] == "route" and a["role"] == "implementer"]
    assert routes, [(a["kind"], a["role"]) for a in result["lines"]]
    return int(routes[0]["seq"])


def loops_in_bundle(result: dict[str, Any]) -> list[str]:
    tests = Path(result["out"]["bundle"]) / "tests"
    return sorted(p.name for p in tests.glob("loop-*.json")) if tests.is_dir() else []


@pytest.mark.parametrize("how", ["missing", "refusing"])
def test_no_sandbox_stops_the_run_before_any_test(
    world: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    how: str,
) -> None:
    no_sandbox_tools(monkeypatch, world["tmp"], how)
    result = run(world, capsys)
    out = result["out"]
    assert result["rc"] == 1 and out["outcome"] == "stopped", out
    assert "no sandbox can run the test command" in out["reason"]
    assert "--allow-unsandboxed" in out["reason"]  # says how to opt in
    assert not world["marker"].exists()  # the test command never ran
    assert world["vllm"].chat_requests == []  # nor any model: it stops before spending calls
    assert loops_in_bundle(result) == []
    refusals = sandbox_lines(result["lines"])
    assert [(a["kind"], a["reason_codes"]) for a in refusals] == [("refusal", ["GR010_NO_SANDBOX"])]
    assert refusals[0]["values"]["runners"]["bwrap"] != "ok"
    # the refusal is written before the run's closing line, which says it stopped
    closing = [a for a in result["lines"] if "RUN_STOPPED" in a["reason_codes"]]
    assert closing and closing[0]["seq"] > refusals[0]["seq"]
    assert "no sandbox" in closing[0]["detail"]
    # the worktree is gone; the bundle is sealed
    assert not any((world["repo"] / ".switchyard" / "worktrees").glob("*"))
    manifest = json.loads((Path(out["bundle"]) / "manifest.json").read_text())
    assert manifest["status"] == "stopped"


@pytest.mark.parametrize("opt_in", ["flag", "policy"])
def test_the_opt_in_runs_without_a_sandbox_audited_first(
    world: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    opt_in: str,
) -> None:
    no_sandbox_tools(monkeypatch, world["tmp"], "refusing")
    extra: list[str] = []
    if opt_in == "flag":
        extra = ["--allow-unsandboxed"]
    else:
        from app.resources import default_policy_path

        text = default_policy_path().read_text(encoding="utf-8")
        assert "allow_unsandboxed = false\n" in text
        policy = world["tmp"] / "policy.toml"
        policy.write_text(text.replace("allow_unsandboxed = false\n", "allow_unsandboxed = true\n"))
        extra = ["--policy", str(policy)]
    result = run(world, capsys, *extra)
    out = result["out"]
    assert out["tests_green"], out
    assert world["marker"].exists()  # it really ran, where no sandbox stops a write
    downgrades = sandbox_lines(result["lines"])
    assert [(a["kind"], a["to"], a["reason_codes"]) for a in downgrades] == [
        ("degradation", "rlimit", ["GR010_SANDBOX_DEGRADED", "GR010_UNSANDBOXED_OPT_IN"])
    ]
    who = downgrades[0]["values"]["opt_in"]
    if opt_in == "flag":
        assert who == "--allow-unsandboxed"
    else:
        assert "[sandbox] allow_unsandboxed" in who
    # GR-005: the line is written before the first test loop runs
    assert downgrades[0]["seq"] < first_test_loop_seq(result)
    records = [
        json.loads((Path(out["bundle"]) / "tests" / name).read_text())
        for name in loops_in_bundle(result)
    ]
    assert records and all(r["runner"] == "rlimit" and r["degraded"] for r in records)


def test_local_only_refuses_a_run_without_a_sandbox_even_with_the_opt_in(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    no_sandbox_tools(monkeypatch, world["tmp"], "refusing")
    result = run(world, capsys, "--local-only", "--allow-unsandboxed")
    out = result["out"]
    assert result["rc"] == 1 and out["outcome"] == "stopped", out
    assert "refused under local_only" in out["reason"]
    assert not world["marker"].exists()
    assert loops_in_bundle(result) == []
    refusals = sandbox_lines(result["lines"])
    assert [(a["kind"], a["reason_codes"]) for a in refusals] == [
        ("refusal", ["GR010_UNSANDBOXED_LOCAL_ONLY"])
    ]
    assert refusals[0]["values"]["local_only"] is True
    assert refusals[0]["values"]["opt_in"] == "--allow-unsandboxed"


@pytest.mark.parametrize("local_only", [False, True], ids=["default", "local_only"])
def test_only_unshare_runs_with_no_network_audited_as_a_downgrade(
    world: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    local_only: bool,
) -> None:
    if sandbox_probe.probe_sandbox().runners.get("unshare") != "ok":
        missing("`unshare -rn` does not work on this machine (util-linux, user namespaces)")
    refusing_tools(monkeypatch, world["tmp"], ("bwrap",))
    result = run(world, capsys, *(["--local-only"] if local_only else []))
    out = result["out"]
    assert out["tests_green"], out
    downgrades = sandbox_lines(result["lines"])
    assert [(a["kind"], a["to"], a["reason_codes"]) for a in downgrades] == [
        ("degradation", "unshare", ["GR010_SANDBOX_DEGRADED"])
    ]
    assert "bwrap is not permitted here" in downgrades[0]["detail"]
    assert "opt_in" not in downgrades[0]["values"]
    assert downgrades[0]["seq"] < first_test_loop_seq(result)
    records = [
        json.loads((Path(out["bundle"]) / "tests" / name).read_text())
        for name in loops_in_bundle(result)
    ]
    assert records and all(r["runner"] == "unshare" for r in records)


@pytest.mark.parametrize("local_only", [False, True], ids=["default", "local_only"])
def test_a_canary_key_never_reaches_the_test_commands_environment(
    world: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    local_only: bool,
) -> None:
    tag = uuid.uuid4().hex
    canaries = {var: f"canary-{var.lower()}-{tag}" for var in CLOUD_KEY_VARS}
    for var, value in canaries.items():
        monkeypatch.setenv(var, value)
    # the command prints its whole environment, hex-encoded so that no masking on the way
    # to the evidence can hide a leak; the raw output is read as the loop returns it
    world["command"] = (
        f'{sys.executable} -c "import json, os; '
        "print('ENV=' + json.dumps(dict(os.environ)).encode().hex())\""
    )
    seen: list[SandboxResult] = []
    real = testloop.run_sandboxed

    async def spy(*args: Any, **kwargs: Any) -> SandboxResult:
        result = await real(*args, **kwargs)
        seen.append(result)
        return result

    monkeypatch.setattr(testloop, "run_sandboxed", spy)
    assert os.environ["OPENAI_API_KEY"] == canaries["OPENAI_API_KEY"]  # there to leak
    run(world, capsys, *(["--local-only"] if local_only else []))
    assert seen, "no test loop ran"
    for result in seen:
        encoded = next(ln[4:] for ln in result.output.splitlines() if ln.startswith("ENV="))
        env = json.loads(bytes.fromhex(encoded).decode())
        assert env["CI"] == "true" and env["PATH"] and env["HOME"]  # it is the env
        assert not set(canaries) & set(env), sorted(env)
        text = json.dumps(env)
        assert not [v for v in canaries.values() if v in text]
        # the parent has them (tests/conftest.py): only local_only passes them on
        offline = [env.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")]
        assert offline == (["1", "1"] if local_only else [None, None])


#: a program git runs when it checks a file out, for every path: what a test can plant
#: where writes are not confined (core.fsmonitor, an audit's first plant, is off on
#: every call Switchyard makes; a review then planted this filter)
FILTER = (
    "import pathlib, subprocess, sys\n"
    "here = pathlib.Path.cwd()\n"
    "def git(*a):\n"
    "    return subprocess.run(['git', *a], capture_output=True, text=True).stdout.strip()\n"
    "hook = here.parent / 'hook.sh'\n"
    "hook.write_text('#!/bin/sh\\necho escaped >> ' + sys.argv[1] + '\\ncat\\n')\n"
    "hook.chmod(0o755)\n"
    "filt = '[filter \"x\"]\\n\\tsmudge = ' + str(hook) + '\\n'\n"
    "common = pathlib.Path(git('rev-parse', '--path-format=absolute', '--git-common-dir'))\n"
    "if sys.argv[2] == 'git-dir':  # the worktree's .git pointed at a git dir of its own\n"
    "    evil = here / '.x'\n"
    "    for d in ('objects/info', 'info', 'refs'):\n"
    "        (evil / d).mkdir(parents=True, exist_ok=True)\n"
    "    (evil / 'objects/info/alternates').write_text(str(common / 'objects') + '\\n')\n"
    "    (evil / 'HEAD').write_text(git('rev-parse', 'HEAD') + '\\n')\n"
    "    (evil / 'config').write_text('[core]\\n\\tbare = false\\n' + filt)\n"
    "    (evil / 'info/attributes').write_text('* filter=x\\n')\n"
    "    (here / '.git').write_text('gitdir: ' + str(evil) + '\\n')\n"
    "else:  # the repository's own config, shared by its worktrees\n"
    "    with open(common / 'config', 'a') as f:\n"
    "        f.write(filt)\n"
    "    (common / 'info').mkdir(exist_ok=True)\n"
    "    (common / 'info/attributes').write_text('* filter=x\\n')\n"
    "source = open('parser.py').read()\n"
    "open('parser.py', 'a').write('# the tests were here\\n')  # a file for git to check out\n"
    "sys.exit('len(tokens) - 1' in source)\n"
)


@pytest.mark.parametrize("runner", ["unshare", "rlimit"])
@pytest.mark.parametrize("where", ["git-dir", "repo-config"])
def test_a_test_that_plants_a_git_filter_runs_nothing_outside(
    world: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    where: str,
    runner: str,
) -> None:
    """Where writes were not confined (unshare, then; rlimit, opted in, still), a test
    pointed the worktree's .git at a git dir of its own (an audit), or wrote a filter
    into the repository's .git/config (a review), and Switchyard's next git reset ran its
    program outside the sandbox, with the provider keys in reach. Under unshare the
    plant now fails (the filesystem read-only but the worktree, its .git file too).
    Under rlimit every git call names the worktree's git dir (the .git file is put back,
    audited, and the run goes on), and git's configuration is read before each test run
    and put back after it when it changed (audited; the run stops)."""
    if sandbox_probe.probe_sandbox().runners.get("unshare") != "ok" and runner == "unshare":
        missing("`unshare` does not work on this machine (util-linux, user namespaces)")
    refusing = ("bwrap",) if runner == "unshare" else ("bwrap", "unshare")
    refusing_tools(monkeypatch, world["tmp"], refusing)
    escaped = world["tmp"] / "escaped"
    plant = world["tmp"] / "plant.py"
    plant.write_text(FILTER)
    world["command"] = f"{sys.executable} {plant} {escaped} {where}"
    config = world["repo"] / ".git" / "config"
    before = config.read_text()
    result = run(world, capsys, *(["--allow-unsandboxed"] if runner == "rlimit" else []))
    assert not escaped.exists(), escaped.read_text()
    assert config.read_text() == before and not (config.parent / "info" / "attributes").exists()
    codes = [c for a in result["lines"] for c in a["reason_codes"]]
    if runner == "unshare":  # nothing to put back: the plant could not be written
        assert "SANDBOX_DOTGIT_RESTORED" not in codes
        assert "SANDBOX_GIT_CONFIG_CHANGED" not in codes
    elif where == "git-dir":
        assert "SANDBOX_DOTGIT_RESTORED" in codes, result["lines"]
        assert result["out"]["tests_green"], result["out"]
    else:
        assert "SANDBOX_GIT_CONFIG_CHANGED" in codes, result["lines"]
        out = result["out"]
        assert out["outcome"] == "stopped" and "changed git's configuration" in out["reason"]
