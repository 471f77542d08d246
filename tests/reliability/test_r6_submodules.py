"""R6 (GR-010) with submodules, through full ``switchyard run``s.

* A project whose tests read a file from its submodule: the run's test loop finds it
  (its worktree held an empty folder there, and every loop failed).
* A test that rewrites the submodule's ``.git`` file (to a git dir of its own, whose
  config runs a program for git): under bwrap and unshare it cannot (read-only, and no
  folder on the way can be renamed away), and the run goes on; under rlimit, which
  cannot bind anything read-only, the change is found after the test command and the run
  stops with a GR-010 reason, audited, before any git call. Nothing runs outside either
  way, with a user configuration that asks git to go into submodules wherever it can.
* A test that patches the submodule's files so that a later loop passes on the patch
  (which never shows in the run's change): the reset between loops puts the submodule
  back exactly as recorded, and the run is never green; with that reset taken away, the
  check before each test command finds it, puts it back and says so in the evidence
  (``SUBMODULE_RESTORED``), and the run is still never green.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.workspace import sandbox_probe
from app.workspace.worktree import Worktree
from tests.ci import missing
from tests.fakes.openai_server import FakeOpenAIServer
from tests.reliability.kit import (
    LOCAL_MODELS,
    closed_port,
    fix_diff,
    git,
    green_reply,
    make_repo,
)
from tests.reliability.test_r6_sandbox_fails_closed import loops_in_bundle, refusing_tools, run

SUB = "vendor/data"


@pytest.fixture
def world(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_openai_factory: Callable[..., FakeOpenAIServer],
) -> dict[str, Any]:
    repo = make_repo(tmp_path)
    fix = fix_diff(repo)
    lib = tmp_path / "data-lib"
    lib.mkdir()
    git(lib, "init", "-q", "-b", "main")
    (lib / "expected.txt").write_text("tokens: 3\n")
    git(lib, "add", "expected.txt")
    git(lib, "-c", "user.name=L", "-c", "user.email=l@example.invalid", "commit", "-q", "-m", "d")
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), SUB)
    git(repo, "commit", "-q", "-m", "the data submodule")

    vllm = fake_openai_factory("vllm", models=LOCAL_MODELS)
    vllm.script.respond_with(green_reply(fix))
    monkeypatch.setenv("SWITCHYARD_VLLM_URL", vllm.base_url)
    monkeypatch.setenv("SWITCHYARD_LLAMACPP_SERVER_URL", f"http://127.0.0.1:{closed_port()}/v1")
    monkeypatch.setenv("COLUMNS", "200")
    # exits 0 once parse() keeps the last token, and only where the submodule's file is
    code = (
        f"import sys; assert open('{SUB}/expected.txt').read() == 'tokens: 3\\n'; "
        "sys.exit('len(tokens) - 1' in open('parser.py').read())"
    )
    command = f'{sys.executable} -c "{code}"'
    return {"repo": repo, "command": command, "tmp": tmp_path, "vllm": vllm}


def test_the_test_loop_reads_a_file_from_a_submodule(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    result = run(world, capsys)
    out = result["out"]
    assert out["tests_green"], out
    logs = sorted((Path(out["bundle"]) / "tests").glob("loop-*.log"))
    assert logs and "No such file" not in "".join(p.read_text() for p in logs)
    codes = [c for a in result["lines"] for c in a["reason_codes"]]
    assert "SANDBOX_SUBMODULE_POINTER_CHANGED" not in codes
    notes = [a["detail"] for a in result["lines"] if "WORKTREE_NOTE" in a["reason_codes"]]
    assert not [n for n in notes if "submodule" in n], notes


#: the test command: points the submodule's .git at a git dir of its own making (a filter
#: and an external diff that leave a mark outside), by every way there is, then tests
PLANT = f"""\
import os, pathlib, sys
hook = sys.argv[1]
evil = pathlib.Path('.evil/modules/{SUB}').resolve()
(evil / 'info').mkdir(parents=True, exist_ok=True)
(evil / 'objects').mkdir(exist_ok=True)
(evil / 'refs').mkdir(exist_ok=True)
(evil / 'HEAD').write_text('ref: refs/heads/main\\n')
(evil / 'config').write_text(
    '[core]\\n\\tbare = false\\n[filter "x"]\\n\\tsmudge = ' + hook + '\\n\\tclean = ' + hook
    + '\\n[diff]\\n\\texternal = ' + hook + '\\n')
(evil / 'info/attributes').write_text('* filter=x\\n')
forged = 'gitdir: ' + str(evil) + '\\n'
def attempt(what, how):
    try:
        how()
        print('WROTE', what)
    except OSError as exc:
        print('refused', what, exc.errno)
def elsewhere():
    os.rename('{SUB}', 'vendor/moved')
    os.mkdir('{SUB}')
    open('{SUB}/.git', 'w').write(forged)
attempt('the .git file', lambda: open('{SUB}/.git', 'w').write(forged))
attempt('the folder', elsewhere)
assert open('{SUB}/expected.txt').read() == 'tokens: 3\\n'
sys.exit('len(tokens) - 1' in open('parser.py').read())
"""


@pytest.mark.parametrize("runner", ["bwrap", "unshare", "rlimit"])
def test_a_test_that_rewrites_a_submodules_git_file_cannot_redirect_git(
    world: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    runner: str,
) -> None:
    runners = sandbox_probe.probe_sandbox().runners
    if runner == "bwrap" and runners.get("bwrap") != "ok":
        missing(f"bubblewrap does not run here: {runners.get('bwrap')}")
    if runner == "unshare" and runners.get("unshare") != "ok":
        pytest.skip(f"unshare does not work here: {runners.get('unshare')}")
    if runner != "bwrap":
        refusing_tools(monkeypatch, world["tmp"], ("bwrap",) if runner == "unshare" else (
            "bwrap", "unshare"))  # fmt: skip
    tmp = world["tmp"]
    escaped = tmp / "escaped"
    hook = tmp / "hook.sh"
    hook.write_text(f"#!/bin/sh\necho escaped >> {escaped}\ncat\n")
    hook.chmod(0o755)
    # in the repository: the sandbox's /tmp is its own, so the tests' /tmp is not there
    (world["repo"] / "plant.py").write_text(PLANT)
    git(world["repo"], "add", "plant.py")
    git(world["repo"], "commit", "-q", "-m", "the plant")
    world["command"] = f"{sys.executable} plant.py {hook}"
    # the user's git would go into submodules wherever it can
    config = tmp / "gitconfig"
    config.write_text("[submodule]\n\trecurse = true\n[diff]\n\tsubmodule = diff\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    result = run(world, capsys, *(["--allow-unsandboxed"] if runner == "rlimit" else []))
    out = result["out"]
    assert not escaped.exists(), escaped.read_text()
    changed = [
        a for a in result["lines"] if "SANDBOX_SUBMODULE_POINTER_CHANGED" in a["reason_codes"]
    ]
    if runner == "rlimit":  # nothing read-only: found after the command, and the run stops
        assert out["outcome"] == "stopped", out
        assert f"the .git file of submodule {SUB}" in out["reason"] and "GR-010" in out["reason"]
        assert [a["values"]["submodules"] for a in changed] == [[SUB]]
        assert loops_in_bundle(result) == []  # stopped before the loop was recorded
    else:  # neither write took: the run goes on to green
        assert out["tests_green"], out
        assert changed == []
        logs = "".join(
            p.read_text() for p in sorted((Path(out["bundle"]) / "tests").glob("loop-*.log"))
        )
        assert "WROTE" not in logs and logs.count("refused") >= 2, logs


#: a test command that games the loop: each run patches the vendored data in the
#: submodule, and passes (with the fix) only on a patch an earlier run left there
GAME = f"""\
import sys
p = '{SUB}/expected.txt'
t = open(p).read()
open(p, 'a').write('patched\\n')
sys.exit(0 if 'patched' in t and 'len(tokens) - 1' not in open('parser.py').read() else 1)
"""


def reset_without_submodules(self: Worktree, to: str | None = None) -> None:
    """The worktree's reset as it was before submodules were put back by it."""
    self._git("reset", "--hard", "--quiet", to or self.base)
    self._git("clean", "-ffdq")


def game(world: dict[str, Any]) -> None:
    (world["repo"] / "game.py").write_text(GAME)
    git(world["repo"], "add", "game.py")
    git(world["repo"], "commit", "-q", "-m", "the tests")
    world["command"] = f"{sys.executable} game.py"


def test_what_a_loop_wrote_in_a_submodule_is_gone_for_the_next(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Never green on a submodule a test patched: from a clean checkout, the sealed
    commit's tests fail."""
    game(world)
    result = run(world, capsys)
    out = result["out"]
    assert not out["tests_green"] and out["outcome"] == "stopped", out
    tests = Path(out["bundle"]) / "tests"
    loops = [json.loads(p.read_text()) for p in sorted(tests.glob("loop-*.json"))]
    assert len(loops) > 2 and not [loop for loop in loops if loop["ok"]], loops
    # the reset between loops put it back: the check before each loop found nothing
    codes = [c for a in result["lines"] for c in a["reason_codes"]]
    assert "SUBMODULE_RESTORED" not in codes and "SUBMODULE_NOT_RESTORED" not in codes


def test_a_submodule_not_as_recorded_before_a_loop_is_put_back_and_said(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The check before each test command stands on its own: with a reset that leaves
    the submodules as they are, each loop still runs on them as recorded, and the
    evidence says what was found."""

    monkeypatch.setattr(Worktree, "reset", reset_without_submodules)
    game(world)
    result = run(world, capsys)
    out = result["out"]
    assert not out["tests_green"], out
    restored = [a for a in result["lines"] if "SUBMODULE_RESTORED" in a["reason_codes"]]
    assert restored, [a["reason_codes"] for a in result["lines"]]
    first = restored[0]
    assert first["values"]["found"] == {SUB: ["expected.txt"]} and first["values"]["left"] == {}
    assert f"not as the commit records: {SUB}: expected.txt; restored" in first["detail"]


def test_a_submodule_that_cannot_be_put_back_stops_the_run_before_its_loop(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def cannot(self: Worktree) -> None:
        """Puts nothing back."""

    monkeypatch.setattr(Worktree, "reset", reset_without_submodules)
    monkeypatch.setattr(Worktree, "restore_submodules", cannot)
    game(world)
    result = run(world, capsys)
    out = result["out"]
    assert not out["tests_green"] and out["outcome"] == "stopped", out
    reason = out["reason"]
    assert f"submodule {SUB} in the run's worktree is not as the commit under test" in reason
    assert "could not be put back" in reason and "GR-010" in reason, reason
    stopped = [a for a in result["lines"] if "SUBMODULE_NOT_RESTORED" in a["reason_codes"]]
    assert [a["values"]["left"] for a in stopped] == [{SUB: ["expected.txt"]}]
    assert loops_in_bundle(result) == ["loop-0.json"]  # the baseline only: none after it
