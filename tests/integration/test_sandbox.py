"""The sandboxed runner with real processes, under every runner this machine permits.

Limits (time, memory), streaming, the environment and the degradation record are the
same contract for each runner; the escape tests (network, writes) are in
``tests/reliability/test_sandbox_escape.py``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.audit.log import AuditLog
from app.workspace import sandbox_probe
from app.workspace.sandbox import (
    DEGRADED_CODE,
    RUNNERS,
    Runner,
    SandboxError,
    SandboxProbe,
    SandboxUnavailable,
    probe_sandbox,
    run_sandboxed,
    sandbox_degradation_line,
)
from tests.ci import missing

PY = sys.executable
PROBE = probe_sandbox()
AVAILABLE = [r for r in RUNNERS if PROBE.runners.get(r) == "ok"]
# Namespaced runners kill the whole pid namespace; rlimit only the process group.
NAMESPACED = [r for r in AVAILABLE if r != "rlimit"]


@pytest.fixture(params=AVAILABLE)
def runner(request: pytest.FixtureRequest) -> Runner:
    value: Runner = request.param
    return value


@pytest.fixture
def wt(tmp_path: Path) -> Path:
    d = tmp_path / "worktree"
    d.mkdir()
    return d


def py(code: str) -> list[str]:
    return [PY, "-u", "-c", textwrap.dedent(code)]


def _heartbeat_stopped(path: Path, wait: float = 0.6) -> bool:
    """True when nothing writes ``path`` any more (its writer is dead)."""
    if not path.exists():
        return True
    first = path.read_text()
    time.sleep(wait)
    return path.read_text() == first


def _gone(path: str) -> bool:
    return not Path(path).exists()


# A grandchild (optionally in its own session) that writes a counter every 50 ms.
HEARTBEAT = """
import subprocess, sys, time
beat = ("import time\\nn=0\\nwhile True:\\n    n+=1\\n"
        "    open('beat','w').write(str(n))\\n    time.sleep(0.05)")
subprocess.Popen([sys.executable, "-c", beat], start_new_session={setsid})
time.sleep(0.5)
print("started", flush=True)
time.sleep(300)
"""


async def test_output_is_streamed_in_order_and_kept(runner: Runner, wt: Path) -> None:
    seen: list[str] = []

    async def on_line(line: str) -> None:
        seen.append(line)

    code = """
    import sys
    for i in range(300):
        (sys.stdout if i % 2 else sys.stderr).write(f"line {i}\\n")
        (sys.stdout if i % 2 else sys.stderr).flush()
    sys.stdout.write("no newline at the end")
    sys.exit(3)
    """
    result = await run_sandboxed(py(code), cwd=wt, runner=runner, on_line=on_line, timeout_s=60)
    expected = [f"line {i}" for i in range(300)] + ["no newline at the end"]
    assert seen == expected
    assert result.output.splitlines() == expected
    assert result.exit_code == 3 and not result.ok and not result.timed_out
    assert result.runner == runner and result.degraded == (runner != "bwrap")


async def test_the_time_limit_kills_the_whole_process_group(runner: Runner, wt: Path) -> None:
    started = time.monotonic()
    result = await run_sandboxed(
        py(HEARTBEAT.format(setsid=False)), cwd=wt, runner=runner, timeout_s=3
    )
    assert result.timed_out and result.exit_code == -9 and not result.ok
    assert "started" in result.output
    assert time.monotonic() - started < 15
    assert (wt / "beat").exists()
    assert _heartbeat_stopped(wt / "beat")


@pytest.mark.parametrize("ns_runner", NAMESPACED)
async def test_a_child_in_its_own_session_dies_with_the_namespace(
    ns_runner: Runner, wt: Path
) -> None:
    # setsid() escapes a process group, never a pid namespace.
    result = await run_sandboxed(
        py(HEARTBEAT.format(setsid=True)), cwd=wt, runner=ns_runner, timeout_s=3
    )
    assert result.timed_out
    assert "started" in result.output and (wt / "beat").exists()  # (else nothing to stop)
    assert _heartbeat_stopped(wt / "beat")


async def test_a_background_straggler_does_not_hold_the_run(runner: Runner, wt: Path) -> None:
    started = time.monotonic()
    result = await run_sandboxed(
        ["sh", "-c", "sleep 60 & echo done"], cwd=wt, runner=runner, timeout_s=30
    )
    assert result.exit_code == 0 and result.output == "done\n" and not result.timed_out
    assert time.monotonic() - started < 10


async def test_the_memory_limit_holds(runner: Runner, wt: Path) -> None:
    code = "x = bytearray({n} * 1024 * 1024); print('allocated')"
    small = await run_sandboxed(py(code.format(n=20)), cwd=wt, runner=runner, memory_mb=512)
    assert small.ok and "allocated" in small.output
    big = await run_sandboxed(py(code.format(n=1024)), cwd=wt, runner=runner, memory_mb=512)
    assert big.exit_code != 0 and "MemoryError" in big.output
    assert big.memory_mb == 512


async def test_the_environment_is_minimal(
    runner: Runner, wt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWITCHYARD_TEST_SECRET", "hunter2")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-tests")
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    result = await run_sandboxed(py(code), cwd=wt, runner=runner, env={"EXTRA": "given"})
    env = json.loads(result.output.strip().splitlines()[-1])
    assert "SWITCHYARD_TEST_SECRET" not in env and "OPENAI_API_KEY" not in env
    assert env["EXTRA"] == "given"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["CI"] == "true"
    assert env["LANG"].endswith("UTF-8") and env["PATH"]
    if runner in ("bwrap", "unshare"):  # a private /tmp of its own
        assert env["HOME"] == "/tmp"
    else:  # a private directory, removed afterwards
        assert env["HOME"].startswith(("/tmp", "/var")) and _gone(env["HOME"])


async def test_cancelling_kills_the_command(runner: Runner, wt: Path) -> None:
    task = asyncio.create_task(
        run_sandboxed(py(HEARTBEAT.format(setsid=False)), cwd=wt, runner=runner, timeout_s=60)
    )
    for _ in range(100):
        await asyncio.sleep(0.1)
        if (wt / "beat").exists():
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _heartbeat_stopped(wt / "beat")


async def test_a_failing_callback_stops_the_command(runner: Runner, wt: Path) -> None:
    async def on_line(line: str) -> None:
        if line == "started":
            raise RuntimeError("the pane went away")

    with pytest.raises(RuntimeError, match="pane went away"):
        await run_sandboxed(
            py(HEARTBEAT.format(setsid=False)),
            cwd=wt,
            runner=runner,
            on_line=on_line,
            timeout_s=60,
        )
    assert _heartbeat_stopped(wt / "beat")


async def test_huge_output_is_truncated_in_the_middle(wt: Path) -> None:
    count = 0

    async def on_line(line: str) -> None:
        nonlocal count
        count += 1

    code = "for i in range(20000): print(f'row {i:05d}')"
    result = await run_sandboxed(py(code), cwd=wt, on_line=on_line, max_output_chars=10_000)
    assert count == 20000  # the callback sees everything
    assert result.truncated and len(result.output) < 12_000
    assert result.output.startswith("row 00000\n") and result.output.endswith("row 19999\n")
    assert "lines not kept" in result.output


async def test_a_very_long_line_is_passed_on_in_pieces(wt: Path) -> None:
    seen: list[str] = []

    async def on_line(line: str) -> None:
        seen.append(line)

    result = await run_sandboxed(py("print('x' * 200_000)"), cwd=wt, on_line=on_line)
    assert result.ok and "".join(seen) == "x" * 200_000 and len(seen) > 1


async def test_loopback_works_inside_for_the_projects_own_servers(runner: Runner, wt: Path) -> None:
    code = """
    import socket
    srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
    c = socket.create_connection(srv.getsockname(), timeout=2)
    conn, _ = srv.accept(); c.sendall(b"ping"); print(conn.recv(4).decode())
    """
    result = await run_sandboxed(py(code), cwd=wt, runner=runner, timeout_s=30)
    assert result.ok and result.output.strip() == "ping", result.output


@pytest.fixture
def host_listener() -> Iterator[tuple[int, list[object]]]:
    accepted: list[object] = []
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, addr = srv.accept()
            except OSError:
                continue
            accepted.append(addr)
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1], accepted
    stop.set()
    t.join(2)
    srv.close()


@pytest.mark.parametrize("ns_runner", NAMESPACED)
async def test_namespaced_runners_cannot_reach_the_hosts_loopback(
    ns_runner: Runner, wt: Path, host_listener: tuple[int, list[object]]
) -> None:
    port, accepted = host_listener
    code = f"""
    import socket
    try:
        socket.create_connection(("127.0.0.1", {port}), timeout=2)
        print("connected")
    except OSError as e:
        print("refused", e.errno)
    """
    result = await run_sandboxed(py(code), cwd=wt, runner=ns_runner, timeout_s=30)
    assert result.output.startswith("refused"), result.output
    assert accepted == []


def test_the_probe_is_cached_and_consistent() -> None:
    assert probe_sandbox() is probe_sandbox()
    fresh = probe_sandbox(refresh=True)
    assert fresh.runner == PROBE.runner and fresh.runners["rlimit"] == "ok"
    assert fresh.degraded == (fresh.runner != "bwrap")
    assert bool(fresh.reason) == fresh.degraded


async def test_a_weaker_runner_is_degraded_and_audited(wt: Path, tmp_path: Path) -> None:
    result = await run_sandboxed(["true"], cwd=wt, runner="rlimit")
    assert result.ok and result.degraded and result.runner == "rlimit"
    assert "rlimit" in result.reason and "no network or filesystem isolation" in result.reason
    line = sandbox_degradation_line(result)
    async with AuditLog.open(tmp_path / "audit.sqlite3") as log:
        written = await log.append(**line, session="s1", run="r1")
        assert (await log.verify()).ok
    assert written.kind == "degradation" and written.reason_codes == [DEGRADED_CODE]
    assert written.from_ == "bwrap" and written.to == "rlimit" and written.run == "r1"
    assert "sandbox degraded to rlimit" in written.detail


async def test_bad_input_is_a_sandbox_error(wt: Path) -> None:
    with pytest.raises(SandboxError, match="no command"):
        await run_sandboxed([], cwd=wt)
    with pytest.raises(SandboxError, match="no such directory"):
        await run_sandboxed(["true"], cwd=wt / "missing")


async def test_a_missing_program_is_a_failed_run_not_a_crash(runner: Runner, wt: Path) -> None:
    result = await run_sandboxed(["no-such-program-xyz"], cwd=wt, runner=runner)
    assert result.exit_code != 0 and not result.timed_out
    bare = await run_sandboxed(["no-such-program-xyz"], cwd=wt, runner=runner, memory_mb=None)
    assert bare.exit_code != 0 and "no-such-program-xyz" in bare.output


# ── failing closed (GR-010) ──────────────────────────────────────────────────────────────


@pytest.fixture
def no_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine as one where neither bwrap nor unshare works (the probe's answer)."""
    runners = {
        "bwrap": "bwrap is not installed",
        "unshare": "unshare is not permitted here: Operation not permitted",
        "rlimit": "ok",
    }
    fake = SandboxProbe(
        runner="rlimit",
        degraded=True,
        reason="bwrap is not installed; unshare is not permitted here; using rlimit (…)",
        runners=runners,
    )
    monkeypatch.setattr(sandbox_probe, "_probe_cache", fake)


@pytest.mark.usefixtures("no_sandbox")
async def test_with_no_sandbox_nothing_runs_unless_allowed(wt: Path) -> None:
    touch = ["sh", "-c", "touch ran"]
    with pytest.raises(SandboxUnavailable, match="no sandbox can run the test command"):
        await run_sandboxed(touch, cwd=wt)
    assert not (wt / "ran").exists()
    for kwargs in ({"local_only": True, "allow_unsandboxed": True}, {"local_only": True}):
        with pytest.raises(SandboxUnavailable, match="refused under local_only"):
            await run_sandboxed(touch, cwd=wt, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(SandboxUnavailable, match="refused under local_only"):
        await run_sandboxed(touch, cwd=wt, runner="rlimit", local_only=True)
    assert not (wt / "ran").exists()
    allowed = await run_sandboxed(touch, cwd=wt, allow_unsandboxed=True)
    assert allowed.ok and allowed.runner == "rlimit" and allowed.degraded
    assert (wt / "ran").exists()


@pytest.mark.parametrize("ns_runner", NAMESPACED)
async def test_the_environment_takes_local_only_and_drops_secrets(
    ns_runner: Runner, wt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOPATH", "/opt/go-with-a-token-in-it")
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    result = await run_sandboxed(
        py(code),
        cwd=wt,
        runner=ns_runner,
        env={"ANTHROPIC_API_KEY": "sk-ant-extra", "HF_HUB_OFFLINE": "0", "EXTRA": "1"},
        local_only=True,
        secrets=["GOPATH"],
    )
    env = json.loads(result.output.strip().splitlines()[-1])
    assert "ANTHROPIC_API_KEY" not in env and "GOPATH" not in env
    assert env["EXTRA"] == "1"
    # an addition cannot undo local_only
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"


async def test_under_bwrap_the_checkouts_dot_git_is_read_only(wt: Path) -> None:
    """A test that could rewrite a worktree's .git file could point git at a config of its
    making, which git outside the sandbox would obey (core.fsmonitor runs a program)."""
    if "bwrap" not in AVAILABLE:
        missing(f"bubblewrap does not run here: {PROBE.runners.get('bwrap')}")
    (wt / ".git").write_text("gitdir: /somewhere/real\n")
    (wt / "ok.txt").write_text("")
    code = """
        import os
        for attempt in (lambda: open(".git", "w").write("gitdir: /evil\\n"),
                        lambda: os.unlink(".git"), lambda: os.rename(".git", "moved")):
            try:
                attempt()
                print("WROTE")
            except OSError as exc:
                print("refused", exc.errno)
        open("ok.txt", "w").write("the rest of the worktree is writable")
    """
    result = await run_sandboxed(py(code), cwd=wt, timeout_s=20, runner="bwrap")
    assert "WROTE" not in result.output and result.output.count("refused") == 3, result.output
    assert (wt / ".git").read_text() == "gitdir: /somewhere/real\n"
    assert (wt / "ok.txt").read_text() == "the rest of the worktree is writable"


def test_unshare_confines_a_worktree_on_a_nosuid_nodev_mount(tmp_path: Path) -> None:
    """The worktree's bind was remounted without its own locked nosuid/nodev/noexec, which
    the kernel refuses in a user namespace: on a /tmp mounted so (Fedora, Arch, Debian
    13) the runner exited 126 for every command. A tmpfs mounted so, in a namespace of
    the test's own, holds the worktree here."""
    import shlex
    import subprocess

    from app.workspace.sandbox_runners import unshare

    if PROBE.runners.get("unshare") != "ok":
        pytest.skip(f"unshare does not work here: {PROBE.runners.get('unshare')}")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    inner = unshare(["sh", "-c", "touch made && echo wrote"], cwd=mnt / "wt", ro=[])
    script = (
        f"mount -t tmpfs -o nosuid,nodev,noexec tmpfs {shlex.quote(str(mnt))} && "
        f"mkdir {shlex.quote(str(mnt / 'wt'))} && cd {shlex.quote(str(mnt / 'wt'))} && "
        "exec " + " ".join(shlex.quote(a) for a in inner)
    )
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.strip() == "wrote", done.stderr


def test_unshare_gives_the_command_its_own_dev_and_ipc(wt: Path) -> None:
    """The host's /dev held the user's terminals (a test wrote a fake "42 passed" onto
    the pty Switchyard ran in) and its SysV shared memory was open to the tests."""
    import subprocess

    from app.workspace.sandbox_runners import unshare

    if PROBE.runners.get("unshare") != "ok":
        pytest.skip(f"unshare does not work here: {PROBE.runners.get('unshare')}")
    code = (
        "import json, os; print(json.dumps(sorted(os.listdir('/dev')))); "
        "print(open('/proc/sysvipc/shm').read().count(chr(10)))"
    )
    argv = unshare([sys.executable, "-c", code], cwd=wt, ro=[])
    done = subprocess.run(argv, cwd=wt, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    devices, shm_lines = done.stdout.splitlines()
    assert set(json.loads(devices)) <= {
        "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout",
        "tty", "urandom", "zero",
    }  # fmt: skip
    assert shm_lines == "1"  # the header alone: no segment of the host's


@pytest.mark.parametrize("runner", NAMESPACED)
async def test_shell_files_and_the_checkouts_secrets_read_empty_inside(
    runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test read ~/.bashrc and the checkout's untracked .env beside its worktree, and
    printed the keys into its log (an audit). Outside /tmp (the sandbox's own /tmp hides
    all under it anyway), as a person's home and checkout are."""
    import shutil
    import tempfile

    top = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="sy-sandbox-"))
    try:
        home, repo = top / "home", top / "repo"
        home.mkdir()
        (home / ".bashrc").write_text("export OPENAI_API_KEY=sk-in-bashrc\n")
        monkeypatch.setenv("HOME", str(home))
        wt = repo / ".switchyard" / "worktrees" / "r1"
        wt.mkdir(parents=True)
        (repo / ".env").write_text("APP_SECRET=in-dotenv\n")
        (repo / "README.md").write_text("readable\n")
        code = f"""
        for p in ({str(home / ".bashrc")!r}, "../../../.env", "../../../README.md"):
            try:
                print(p, repr(open(p).read()))
            except OSError as exc:
                print(p, "error", exc.errno)
        """
        result = await run_sandboxed(py(code), cwd=wt, runner=runner)
        assert "sk-in-bashrc" not in result.output and "in-dotenv" not in result.output
        assert "readable" in result.output  # the rest of the checkout reads as it is
    finally:
        shutil.rmtree(top, ignore_errors=True)
