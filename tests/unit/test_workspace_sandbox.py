"""The sandbox's command lines, environment, output buffer and audit line (no processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.workspace import sandbox
from app.workspace.sandbox import (
    DEGRADED_CODE,
    LOCAL_ONLY_CODE,
    NO_SANDBOX_CODE,
    UNSANDBOXED_CODE,
    SandboxProbe,
    SandboxResult,
    _base_env,
    _bwrap,
    _Output,
    _wrap,
    decide_sandbox,
    sandbox_decision_line,
    sandbox_degradation_line,
)
from app.workspace.sandbox_runners import pin_points


def _pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_bwrap_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".aws").mkdir()
    (home / ".netrc").write_text("secret")
    monkeypatch.setenv("HOME", str(home))
    wt = tmp_path / "repo" / ".switchyard" / "worktrees" / "r1"
    wt.mkdir(parents=True)
    ro = tmp_path / "repo"
    argv = _bwrap(["pytest", "-q"], cwd=wt, env={"PATH": "/usr/bin", "HOME": "/tmp"}, ro=[ro])
    assert argv[:5] == ["bwrap", "--ro-bind", "/", "/", "--dev"]
    for flag in ("--unshare-all", "--new-session", "--die-with-parent", "--clearenv"):
        assert flag in argv
    assert "--share-net" not in argv
    assert _pairs(argv, "--cap-drop") == ["ALL"]
    assert {"/tmp", "/run", str(home / ".ssh"), str(home / ".aws")} <= set(_pairs(argv, "--tmpfs"))
    assert _pairs(argv, "--dev-bind") == ["/dev/null"]  # over ~/.netrc
    assert argv[argv.index("--dev-bind") + 2] == str(home / ".netrc")
    assert _pairs(argv, "--chdir") == [str(wt)]
    # Order matters: private /tmp, then read-only views, then masks, then the worktree.
    i_tmp = argv.index("/tmp", argv.index("--tmpfs"))
    i_ro = argv.index(str(ro))
    i_mask = argv.index(str(home / ".ssh"))
    i_wt = argv.index("--bind")
    assert i_tmp < i_ro < i_mask < i_wt
    assert argv[i_wt : i_wt + 3] == ["--bind", str(wt), str(wt)]
    assert argv[-3:] == ["--", "pytest", "-q"]
    envs = {argv[i + 1]: argv[i + 2] for i, a in enumerate(argv) if a == "--setenv"}
    assert envs == {"PATH": "/usr/bin", "HOME": "/tmp"}


def test_pinned_files_are_bound_read_only_after_every_folder_on_the_way(tmp_path: Path) -> None:
    """A submodule's .git: bound read-only, after each folder on the way is bound onto
    itself (a read-only bind alone moved along with a renamed parent folder)."""
    wt = tmp_path / "wt"
    (wt / "vendor" / "lib").mkdir(parents=True)
    (wt / "vendor" / "lib" / ".git").write_text("gitdir: /x\n")
    (wt / ".git").write_text("gitdir: /y\n")
    argv = _bwrap(["true"], cwd=wt, env={}, ro=[], pinned=["vendor/lib/.git"])
    tail = argv[argv.index("--chdir") + 2 :]
    v, lib, dotgit = (str(wt / p) for p in ("vendor", "vendor/lib", "vendor/lib/.git"))
    assert tail[:12] == [
        "--ro-bind", str(wt / ".git"), str(wt / ".git"),
        "--bind", v, v, "--bind", lib, lib, "--ro-bind", dotgit, dotgit,
    ]  # fmt: skip
    shim = _wrap("unshare", ["true"], cwd=wt, env={}, ro=[], pinned=["vendor/lib/.git"])
    assert _pairs(shim, "--pin") == ["vendor/lib/.git"]


def test_a_file_that_cannot_be_pinned_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / ".git").write_text("gitdir: /x\n")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert pin_points(tmp_path, ["real/.git"]) == ([tmp_path / "real"], [tmp_path / "real/.git"])
    for rel in ("link/.git", "../real/.git", "/real/.git", "real", "gone/.git", "real/../x"):
        with pytest.raises(ValueError):
            pin_points(tmp_path, [rel])


def test_a_symlinked_secret_store_is_masked_at_its_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tmp_path / "vault" / "ssh"
    real.mkdir(parents=True)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".ssh").symlink_to(real)
    monkeypatch.setenv("HOME", str(home))
    argv = _bwrap(["true"], cwd=tmp_path, env={}, ro=[])
    assert str(real) in _pairs(argv, "--tmpfs")


def test_unshare_command_line(tmp_path: Path) -> None:
    argv = _wrap("unshare", ["make", "test"], cwd=tmp_path, env={}, ro=[])
    assert argv[0] == "unshare"
    for flag in ("--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child"):
        assert flag in argv
    assert argv[-2:] == ["make", "test"]
    assert _wrap("rlimit", ["make", "test"], cwd=tmp_path, env={}, ro=[]) == ["make", "test"]


def test_memory_limit_wrapper(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: "/usr/bin/prlimit")
    assert sandbox._with_limits(["x"], 100) == [
        "/usr/bin/prlimit",
        f"--as={100 * 1024 * 1024}",
        "--core=0",
        "--",
        "x",
    ]
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    shim = sandbox._with_limits(["x", "y"], 100)
    assert shim[1] == "-c" and "RLIMIT_AS" in shim[2] and shim[3:] == [str(100 << 20), "x", "y"]


def test_environment_is_built_not_inherited(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nope")
    monkeypatch.setenv("GOPATH", "/opt/go")
    env = _base_env("/tmp", "/tmp")
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert env["GOPATH"] == "/opt/go" and env["HOME"] == "/tmp" and env["CI"] == "true"


def test_output_keeps_head_and_tail() -> None:
    out = _Output(400)
    lines = [f"line {i:03d}\n" for i in range(200)]
    for line in lines:
        out.add(line)
    text, truncated = out.text()
    assert truncated and text.startswith("line 000\n") and text.endswith("line 199\n")
    assert "lines not kept" in text and len(text) < 450
    small = _Output(400)
    small.add("a\n")
    assert small.text() == ("a\n", False)


def _result(runner: str, degraded: bool) -> SandboxResult:
    return SandboxResult(
        argv=["true"],
        cwd="/w",
        exit_code=0,
        output="",
        timed_out=False,
        runner=runner,  # type: ignore[arg-type]
        degraded=degraded,
        reason="" if not degraded else "bwrap is not installed; using rlimit (…)",
        duration_s=0.1,
        timeout_s=10,
        memory_mb=None,
    )


def test_degradation_line() -> None:
    line = sandbox_degradation_line(_result("rlimit", True))
    assert line["kind"] == "degradation" and line["reason_codes"] == [DEGRADED_CODE]
    assert (line["from_"], line["to"]) == ("bwrap", "rlimit")
    assert "bwrap is not installed" in line["detail"]
    probe = SandboxProbe(runner="unshare", degraded=True, reason="why", runners={})
    assert sandbox_degradation_line(probe)["to"] == "unshare"
    with pytest.raises(ValueError, match="not degraded"):
        sandbox_degradation_line(_result("bwrap", False))


def test_probe_reason_names_every_missing_runner() -> None:
    status = {"bwrap": "bwrap is not installed", "unshare": "unshare is not permitted here: x"}
    reason = sandbox._degraded_reason("rlimit", {**status, "rlimit": "ok"})
    assert reason.startswith("bwrap is not installed; unshare is not permitted here: x")
    assert "using rlimit" in reason


# ── which runner the rules allow (GR-010: the sandbox fails closed) ──────────────────────

_NO_BWRAP = "bwrap is not permitted here: setting up uid map: Permission denied"
_NO_UNSHARE = "unshare is not installed"


def _probe(runner: str) -> SandboxProbe:
    runners = {
        "bwrap": "ok" if runner == "bwrap" else _NO_BWRAP,
        "unshare": "ok" if runner in ("bwrap", "unshare") else _NO_UNSHARE,
        "rlimit": "ok",
    }
    reason = "" if runner == "bwrap" else sandbox._degraded_reason(runner, runners)  # type: ignore[arg-type]
    return SandboxProbe(
        runner=runner,  # type: ignore[arg-type]
        degraded=runner != "bwrap",
        reason=reason,
        runners=runners,
    )


@pytest.mark.parametrize("local_only", [False, True])
@pytest.mark.parametrize("opt_in", [None, "--allow-unsandboxed"])
def test_bwrap_and_unshare_need_no_opt_in(local_only: bool, opt_in: str | None) -> None:
    strong = decide_sandbox(_probe("bwrap"), local_only=local_only, opt_in=opt_in)
    assert (strong.runner, strong.degraded, strong.reason_codes) == ("bwrap", False, [])
    assert sandbox_decision_line(strong) is None
    weak = decide_sandbox(_probe("unshare"), local_only=local_only, opt_in=opt_in)
    assert (weak.runner, weak.degraded, weak.reason_codes) == ("unshare", True, [DEGRADED_CODE])
    assert weak.opt_in is None  # nothing was opted in to
    line = sandbox_decision_line(weak)
    assert line is not None and line["kind"] == "degradation" and line["to"] == "unshare"
    assert _NO_BWRAP in line["detail"] and "no network" in line["detail"]


def test_no_sandbox_is_refused_without_an_opt_in() -> None:
    d = decide_sandbox(_probe("rlimit"), local_only=False)
    assert d.refused and d.runner is None and d.reason_codes == [NO_SANDBOX_CODE]
    assert _NO_BWRAP in d.reason and _NO_UNSHARE in d.reason
    assert "--allow-unsandboxed" in d.reason and "allow_unsandboxed = true" in d.reason
    line = sandbox_decision_line(d)
    assert line is not None
    assert (line["kind"], line["from_"], line["to"]) == ("refusal", "bwrap", None)
    assert line["values"]["runners"]["unshare"] == _NO_UNSHARE


def test_the_opt_in_runs_without_a_sandbox_audited_as_a_downgrade() -> None:
    d = decide_sandbox(_probe("rlimit"), local_only=False, opt_in="--allow-unsandboxed")
    assert (d.runner, d.degraded) == ("rlimit", True)
    assert d.reason_codes == [DEGRADED_CODE, UNSANDBOXED_CODE]
    line = sandbox_decision_line(d)
    assert line is not None and line["kind"] == "degradation" and line["to"] == "rlimit"
    assert line["values"]["opt_in"] == "--allow-unsandboxed"
    assert "allowed by --allow-unsandboxed" in line["detail"]


@pytest.mark.parametrize("opt_in", [None, "--allow-unsandboxed"])
def test_local_only_refuses_no_sandbox_even_with_the_opt_in(opt_in: str | None) -> None:
    d = decide_sandbox(_probe("rlimit"), local_only=True, opt_in=opt_in)
    assert d.refused and d.reason_codes == [LOCAL_ONLY_CODE]
    assert "refused under local_only" in d.reason
    line = sandbox_decision_line(d)
    assert line is not None and line["kind"] == "refusal" and line["values"]["local_only"]


def test_shell_files_switchyards_folders_and_the_checkouts_secrets_are_hidden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test read ~/.bashrc and the checkout's untracked .env beside its worktree, and
    printed the keys into its log: the evidence and the next cloud prompt (an audit)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("export OPENAI_API_KEY=sk-...\n")
    (home / ".config" / "fish").mkdir(parents=True)  # set -Ux keeps keys here
    (home / ".local" / "share" / "fish").mkdir(parents=True)
    (home / ".local" / "share" / "fish" / "fish_history").write_text("- cmd: export K=…\n")
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SWITCHYARD_DATA_DIR", str(data))
    repo = tmp_path / "repo"
    wt = repo / ".switchyard" / "worktrees" / "r1"
    wt.mkdir(parents=True)
    for name in (".env", ".env.local", "deploy.pem", "README.md"):
        (repo / name).write_text("x")
    argv = _bwrap(["pytest"], cwd=wt, env={}, ro=[repo])
    nulled = {argv[i + 2] for i, a in enumerate(argv) if a == "--dev-bind"}
    assert {
        str(home / ".bashrc"),
        *(str(repo / n) for n in (".env", ".env.local", "deploy.pem")),
    } <= nulled
    assert str(repo / "README.md") not in nulled
    assert str(data) in _pairs(argv, "--tmpfs")
    assert str(home / ".config" / "fish") in _pairs(argv, "--tmpfs")
    assert str(home / ".local" / "share" / "fish" / "fish_history") in nulled
    # a data folder that holds the worktree (the demo's repository) is not hidden: its
    # stores are, one by one
    demo_wt = data / "demo" / "parser-bug" / ".switchyard" / "worktrees" / "r2"
    demo_wt.mkdir(parents=True)
    for name in ("audit.sqlite3", "audit.sqlite3-spool", "ledger.sqlite3"):
        (data / name).write_text("x")
    (data / "logs").mkdir()
    (data / "demo" / "another-repo").mkdir()
    demo = _bwrap(["pytest"], cwd=demo_wt, env={}, ro=[])
    assert str(data) not in _pairs(demo, "--tmpfs")
    nulled = {demo[i + 2] for i, a in enumerate(demo) if a == "--dev-bind"}
    assert {
        str(data / n) for n in ("audit.sqlite3", "audit.sqlite3-spool", "ledger.sqlite3")
    } <= nulled
    hidden = set(_pairs(demo, "--tmpfs"))
    assert {str(data / "logs"), str(data / "demo" / "another-repo")} <= hidden
    assert str(data / "demo" / "parser-bug") not in hidden  # the run's own checkout
