"""``switchyard local serve|status|plan`` and the process supervisor, on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from app.backends import launcher, llamacpp
from app.backends.launcher import plan_serve, probe_endpoint, supervise
from app.config import load_settings
from app.errors import UsageError
from app.policy import Policy
from tests.ci import missing
from tests.ports import closed_port

REPO = Path(__file__).resolve().parents[2]

# The CLI with the local command group registered, whether or not main.py lists it yet.
CLI = (
    "import sys; from app.cli import main as m; "
    "m.COMMAND_MODULES = tuple(dict.fromkeys((*m.COMMAND_MODULES, 'app.cli.local_cmd'))); "
    "raise SystemExit(m.main(sys.argv[1:]))"
)

# A stand-in server: /health answers 200 (like vLLM) unless NO_HEALTH is set, in which
# case /health is a 404 and only /v1/models answers (like llama_cpp.server).
FAKE_SERVER = r"""
import json, os, signal, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if os.environ.get("DIE"):
    print("fake: cannot load model", flush=True); sys.exit(3)
if os.environ.get("STUBBORN_WORKER"):  # a worker that ignores SIGTERM, its pid on stdout
    import subprocess
    w = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"])
    print(f"worker {w.pid}", flush=True)
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health" and not os.environ.get("NO_HEALTH"):
            body, code = b"", 200
        elif self.path == "/v1/models":
            body, code = json.dumps({"data": [{"id": "fake-model"}]}).encode(), 200
        else:
            body, code = b"{}", 404
        self.send_response(code); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
if os.environ.get("NEVER_LISTEN"):
    import time; time.sleep(60)
HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def dead_ports_env() -> dict[str, str]:
    """Point both HTTP runtimes at loopback ports nobody listens on (8000/8080 may be
    taken by something else on a shared machine)."""
    return {
        "SWITCHYARD_VLLM_URL": f"http://127.0.0.1:{closed_port()}/v1",
        "SWITCHYARD_LLAMACPP_SERVER_URL": f"http://127.0.0.1:{closed_port()}/v1",
    }


def pid_alive(pid: int) -> bool:
    """Running: not gone, and not a zombie (a killed orphan waits there for a reaper)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


# ── status and plan through the CLI ──────────────────────────────────────────────────────


def test_status_with_nothing_running_reports_every_http_runtime_down() -> None:
    env = dead_ports_env()
    started = time.monotonic()
    done = run_cli("local", "status", "--json", env=env)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    eps = {e["runtime"]: e for e in data["endpoints"]}
    assert set(eps) == {"vllm", "llamacpp_server"}
    assert eps["vllm"]["base_url"] == env["SWITCHYARD_VLLM_URL"]
    assert all(e["state"] == "down" and e["up"] is False for e in eps.values())
    assert [r["role"] for r in data["roles"]] == [
        "architect",
        "implementer",
        "librarian",
        "tutor",
        "ace",
    ]
    inproc = data["inprocess"]
    if inproc["available"]:
        assert inproc["context_window"] == 8192
        assert all(r["serving"] == "llamacpp_inprocess" for r in data["roles"])
    assert elapsed < 20  # refused loopback connections answer at once

    human = run_cli("local", "status", env=env)
    assert human.returncode == 0 and "down" in human.stdout and "Local roles" in human.stdout


def test_status_probes_every_endpoint_of_a_runtime_and_masks_a_password() -> None:
    """SWITCHYARD_VLLM_URL with two endpoints was probed as one URL (down), while `ask`
    was served by the second; a password in a runtime's URL was printed as it is."""
    port = launcher.free_port()
    proc = subprocess.Popen([sys.executable, "-c", FAKE_SERVER, str(port)], env=os.environ)
    try:
        live = f"http://127.0.0.1:{port}/v1"
        dead = f"http://admin:hunter2secret@127.0.0.1:{closed_port()}/v1"
        deadline = time.monotonic() + 20
        while not probe_endpoint("vllm", live).up and time.monotonic() < deadline:
            time.sleep(0.1)
        env = {**dead_ports_env(), "SWITCHYARD_VLLM_URL": f"{dead},{live}", "COLUMNS": "200"}
        done = run_cli("local", "status", "--json", env=env)
        assert done.returncode == 0, done.stderr
        data = json.loads(done.stdout)
        vllm = [(e["base_url"], e["state"]) for e in data["endpoints"] if e["runtime"] == "vllm"]
        assert vllm == [(dead.replace("hunter2secret", "[REDACTED]"), "down"), (live, "up")]
        assert "hunter2secret" not in done.stdout
        assert all(r["serving"] == "vllm" for r in data["roles"]), data["roles"]
        table = run_cli("local", "status", env=env)
        assert "hunter2secret" not in table.stdout and "admin:[REDACTED]@" in table.stdout
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_status_probe_sees_a_live_server_and_its_models(tmp_path: Path) -> None:
    port = launcher.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", FAKE_SERVER, str(port)], env={**os.environ, "NO_HEALTH": "1"}
    )
    try:
        base = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 20
        status = probe_endpoint("llamacpp_server", base)
        while not status.up and time.monotonic() < deadline:
            time.sleep(0.1)
            status = probe_endpoint("llamacpp_server", base)
        assert status.up and status.models == ["fake-model"]
        assert status.latency_ms is not None and status.latency_ms < 1000
    finally:
        proc.terminate()
        proc.wait(10)


def test_status_probe_refuses_a_remote_endpoint_under_local_only() -> None:
    status = probe_endpoint("vllm", "http://gpu-box.example:8000/v1", local_only=True)
    assert status.state == "refused" and "GR-009" in status.detail


def test_plan_json_is_valid_and_gpu_gb_forces_swaps() -> None:
    done = run_cli("local", "plan", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["gpu_gb"] == 32 and plan["resident"] == ["qwen2.5-coder-32b"]
    assert (
        sum(m["gpu_memory_utilization"] for m in plan["models"] if m["placement"] == "resident")
        <= 0.9
    )

    small = json.loads(run_cli("local", "plan", "--gpu-gb", "8", "--json").stdout)
    assert small["resident"] == []

    table = run_cli("local", "plan", "--context", "qwen2.5-coder-32b=8192")
    assert table.returncode == 0 and "VRAM fit plan" in table.stdout

    bad = run_cli("local", "plan", "--context", "nope=12")
    assert bad.returncode == 2 and "MODEL=N" in bad.stderr


@pytest.mark.parametrize(
    ("context", "said"),
    [
        # a window past the catalog's had vLLM flags suggested that vLLM refuses
        ("qwen3-14b=99999999999999999999999", "past the model's window (32768)"),
        # models the plan does not serve were ignored without a word
        ("gpt-5.1-high=4096", "not a model this plan serves"),
        ("smollm2-135m=4096", "not a model this plan serves"),
    ],
)
def test_plan_context_names_what_it_cannot_plan(context: str, said: str) -> None:
    done = run_cli("local", "plan", "--context", context)
    assert done.returncode == 2 and said in done.stderr


# ── choosing the runtime ─────────────────────────────────────────────────────────────────


def test_vllm_is_chosen_with_a_gpu_and_gets_the_fit_plan_numbers(policy: Policy) -> None:
    settings = load_settings()
    spec = plan_serve(policy, settings, "implementer", has_vllm=True, has_gpu=True)
    assert spec.runtime == "vllm" and spec.model == "qwen2.5-coder-32b"
    argv = spec.argv
    assert argv[argv.index("serve") + 1] == "Qwen/Qwen2.5-Coder-32B-Instruct-AWQ"
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.81"
    assert argv[argv.index("--max-model-len") + 1] == "32768"
    assert argv[argv.index("--port") + 1] == "8000"  # the policy's vllm base_url
    assert "--quantization" not in argv  # an AWQ checkpoint says so itself

    tutor = plan_serve(policy, settings, "tutor", has_vllm=True, has_gpu=True)
    assert tutor.argv[tutor.argv.index("--quantization") + 1] == "fp8"

    small = plan_serve(policy, settings, "implementer", has_vllm=True, has_gpu=True, gpu_gb=24)
    assert small.max_model_len is not None and small.max_model_len < 32768
    assert any("--max-model-len" in n for n in small.notes)

    # --n-ctx caps the window; past what fits it does not raise it (vLLM would refuse it)
    capped = plan_serve(policy, settings, "implementer", has_vllm=True, has_gpu=True, n_ctx=8192)
    assert capped.argv[capped.argv.index("--max-model-len") + 1] == "8192"
    wide = plan_serve(policy, settings, "implementer", has_vllm=True, has_gpu=True, n_ctx=65536)
    assert wide.argv[wide.argv.index("--max-model-len") + 1] == "32768"
    assert any("--n-ctx 65536 is more than fits" in n for n in wide.notes)


def test_llamacpp_server_is_the_fallback_with_the_embedded_model(policy: Policy) -> None:
    settings = load_settings()
    for has_vllm, has_gpu in ((False, False), (True, False)):
        spec = plan_serve(policy, settings, "tutor", has_vllm=has_vllm, has_gpu=has_gpu)
        assert spec.runtime == "llamacpp_server"
    if llamacpp.find_embedded_gguf() is None:
        missing("no embedded GGUF (pip install 'switchyard[local]')")
    assert spec.embedded and spec.model == "smollm2-135m"
    assert any("serving the embedded smollm2-135m" in n for n in spec.notes)
    argv = spec.argv
    assert argv[1:3] == ["-m", "llama_cpp.server"]
    assert argv[argv.index("--n_ctx") + 1] == "8192"
    assert argv[argv.index("--port") + 1] == "8080"
    assert argv[argv.index("--model_alias") + 1] == "smollm2-135m"

    too_big = plan_serve(policy, settings, "implementer", has_vllm=True, has_gpu=True, gpu_gb=8)
    assert too_big.runtime == "llamacpp_server"
    assert any("does not fit the GPU" in n for n in too_big.notes)


def test_a_role_gguf_is_served_with_the_catalog_window(policy: Policy) -> None:
    gguf = llamacpp.find_embedded_gguf()
    if gguf is None:
        missing("no embedded GGUF (pip install 'switchyard[local]')")
    spec = plan_serve(
        policy, load_settings(), "tutor", runtime="llamacpp_server", gguf=gguf, n_ctx=4096, port=0
    )
    assert not spec.embedded and spec.model == "qwen2.5-coder-7b"
    assert spec.max_model_len == 4096 and spec.port > 0
    assert any("SWITCHYARD_LLAMACPP_SERVER_URL" in n for n in spec.notes)


def test_bad_requests_are_usage_errors(policy: Policy) -> None:
    settings = load_settings()
    with pytest.raises(UsageError, match="not a local LLM role"):
        plan_serve(policy, settings, "judge")
    with pytest.raises(UsageError, match="unknown role"):
        plan_serve(policy, settings, "nobody")
    with pytest.raises(UsageError, match="no GPU found"):
        plan_serve(policy, settings, "tutor", runtime="vllm", has_vllm=True, has_gpu=False)
    done = run_cli("local", "serve", "--role", "judge")
    assert done.returncode == 2 and "not a local LLM role" in done.stderr


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--gpu-gb", "nan"), ("--gpu-gb", "-5"), ("--timeout", "nan"), ("--timeout", "-1")],
)
def test_serve_refuses_a_size_or_a_wait_that_is_no_number(flag: str, value: str) -> None:
    """--gpu-gb nan was a ValueError traceback; --timeout nan waited "within nans"."""
    done = run_cli("local", "serve", "--role", "tutor", "--dry-run", flag, value)
    assert done.returncode == 2 and f"{flag} {value}: expected" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_json_without_dry_run_is_a_usage_error() -> None:
    """--json printed "starting …", "ready: …" as prose when a server really started."""
    done = run_cli("local", "serve", "--role", "tutor", "--json")
    assert done.returncode == 2 and "--json goes with --dry-run" in done.stderr
    assert done.stdout == ""


def test_serve_on_ipv6_loopback_plans_a_url_a_client_can_use() -> None:
    """--host ::1 planned http://::1:8080/v1, and the health wait failed on it."""
    done = run_cli(
        "local", "serve", "--role", "tutor", "--host", "::1", "--port", "18095", "--dry-run",
        "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["base_url"] == "http://[::1]:18095/v1"


@pytest.mark.parametrize(
    ("host", "said"),
    [
        ("0.0.0.0", "no authentication"),  # served to the network without a word
        ("", "not a host name or an address"),
        ("bad host", "not a host name or an address"),
        ("192.0.2.1", "no authentication"),
    ],
)
def test_serve_listens_beyond_loopback_only_when_asked(host: str, said: str) -> None:
    done = run_cli("local", "serve", "--role", "tutor", "--host", host, "--dry-run")
    assert done.returncode == 2 and said in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_serve_on_a_lan_address_when_asked_and_any_port_on_ipv6() -> None:
    lan = run_cli("local", "serve", "--role", "tutor", "--host", "0.0.0.0", "--allow-lan",
                  "--dry-run", "--json")  # fmt: skip
    assert lan.returncode == 0, lan.stderr
    assert "--host" in json.loads(lan.stdout)["argv"]
    # an address that is not this machine's, even when asked: one line, exit 2
    away = run_cli("local", "serve", "--role", "tutor", "--host", "192.0.2.1", "--allow-lan",
                   "--dry-run")  # fmt: skip
    assert away.returncode == 2 and "cannot listen there" in away.stderr, away.stderr
    # --port 0 on IPv6 loopback (an IPv4-only free-port search raised a traceback)
    six = run_cli("local", "serve", "--role", "tutor", "--host", "::1", "--port", "0",
                  "--dry-run", "--json")  # fmt: skip
    assert six.returncode == 0, six.stderr
    assert json.loads(six.stdout)["base_url"].startswith("http://[::1]:")


def test_serve_dry_run_prints_the_command() -> None:
    done = run_cli("local", "serve", "--role", "tutor", "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    spec = json.loads(done.stdout)
    assert spec["role"] == "tutor" and spec["runtime"] in ("vllm", "llamacpp_server")
    assert spec["argv"] and spec["base_url"].endswith("/v1")


# ── supervising a server process (a stand-in server, so it runs everywhere) ──────────────


def fake(tmp_path: Path, **env: str) -> tuple[list[str], str, dict[str, str]]:
    port = launcher.free_port()
    argv = [sys.executable, "-c", FAKE_SERVER, str(port)]
    return argv, f"http://127.0.0.1:{port}/v1", {**os.environ, **env}


def test_supervise_waits_for_health_then_stops_the_process_group(tmp_path: Path) -> None:
    for extra in ({}, {"NO_HEALTH": "1"}):  # vLLM-like, then llama.cpp-like
        argv, base, _ = fake(tmp_path, **extra)
        seen: list[int] = []

        def on_ready(base: str = base, seen: list[int] = seen) -> None:
            r = httpx.get(f"{base}/models", timeout=2)
            seen.append(r.status_code)

        out = tmp_path / "out.txt"
        with out.open("w") as fh:
            rc = supervise(
                argv, base, log_path=tmp_path / "s.log", timeout_s=30, out=fh, on_ready=on_ready
            )
        assert rc == 0 and seen == [200]
        text = out.read_text()
        assert f"ready: {base}" in text
        pid = int(text.split("(pid ")[1].split(")")[0])
        assert not pid_alive(pid)


def stop_once_ready(out: Path) -> threading.Event:
    """A stop set once ``out`` (the supervisor's output, made empty here) says "ready:",
    and within 30 s whatever happens: a supervisor is never left running."""
    out.write_text("")
    stop = threading.Event()

    def watch() -> None:
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and "ready:" not in out.read_text():
                time.sleep(0.05)
        finally:
            stop.set()

    threading.Thread(target=watch, daemon=True).start()
    return stop


def test_supervise_stops_on_request_and_kills_a_stubborn_child(tmp_path: Path) -> None:
    argv, base, env = fake(tmp_path, IGNORE_TERM="1")
    out = tmp_path / "out.txt"
    stop = stop_once_ready(out)
    started = time.monotonic()
    with out.open("w") as fh:
        rc = supervise(
            argv,
            base,
            log_path=tmp_path / "s.log",
            timeout_s=30,
            out=fh,
            stop=stop,
            grace_s=0.5,
            env=env,
        )
    assert rc == 0
    text = out.read_text()
    assert "stopping the server" in text
    pid = int(text.split("(pid ")[1].split(")")[0])
    assert not pid_alive(pid)  # SIGTERM was ignored; SIGKILL after the grace period
    assert time.monotonic() - started < 30


SUPERVISE = r"""
import sys
from pathlib import Path
from app.backends.launcher import supervise
argv, base, log = sys.argv[1:5], sys.argv[5], Path(sys.argv[6])
sys.exit(supervise(argv, base, log_path=log, timeout_s=30, out=sys.stdout, grace_s=1))
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_supervise_stopped_by_a_signal_exits_as_the_signal_says(
    tmp_path: Path, signum: signal.Signals
) -> None:
    # Ctrl-C (or a service manager's SIGTERM) ends `local serve` as it ends `serve`: 130 /
    # 143, the server's process group stopped first (it exited 0, read as "done")
    argv, base, env = fake(tmp_path)
    assert len(argv) == 4  # python -c SCRIPT PORT
    sup = subprocess.Popen(
        [sys.executable, "-c", SUPERVISE, *argv, base, str(tmp_path / "s.log")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )
    try:
        assert sup.stdout is not None
        ready = sup.stdout.readline()  # blocks until the server answers (or the child ends)
        assert ready.startswith(f"ready: {base}"), ready
        pid = int(ready.split("(pid ")[1].split(")")[0])
        sup.send_signal(signum)
        rest = sup.stdout.read()
        assert sup.wait(timeout=30) == 128 + signum
    finally:
        if sup.poll() is None:
            sup.kill()
    assert "stopping the server" in rest
    assert not pid_alive(pid)


def test_a_worker_that_ignores_sigterm_does_not_outlive_its_server(tmp_path: Path) -> None:
    """The server went at once on SIGTERM, its worker ignored it and kept running: the
    group was killed only when the leader outlived the grace period."""
    argv, base, env = fake(tmp_path, STUBBORN_WORKER="1")
    out = tmp_path / "out.txt"
    stop = stop_once_ready(out)
    with out.open("w") as fh:
        rc = supervise(
            argv, base, log_path=tmp_path / "s.log", timeout_s=30, out=fh, stop=stop, env=env
        )
    assert rc == 0
    worker = int((tmp_path / "s.log").read_text().split("worker ")[1].split()[0])
    for _ in range(50):  # reaped by init once killed: give it a moment to go
        if not pid_alive(worker):
            break
        time.sleep(0.1)
    assert not pid_alive(worker)


def test_supervise_reports_a_server_that_dies_or_never_answers(tmp_path: Path) -> None:
    argv, base, env = fake(tmp_path, DIE="1")
    out = tmp_path / "die.txt"
    with out.open("w") as fh:
        rc = supervise(argv, base, log_path=tmp_path / "die.log", timeout_s=30, out=fh, env=env)
    assert rc == 1
    text = out.read_text()
    assert "exited with code 3" in text and "fake: cannot load model" in text

    argv, base, env = fake(tmp_path, NEVER_LISTEN="1")
    out = tmp_path / "never.txt"
    with out.open("w") as fh:
        rc = supervise(
            argv, base, log_path=tmp_path / "never.log", timeout_s=1.5, out=fh, env=env, grace_s=1
        )
    assert rc == 1 and "did not answer within 1.5s" in out.read_text()


# ── the real llama.cpp server with the embedded model ────────────────────────────────────


def test_serve_missing_server_deps_is_a_clear_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `make test` installs the server extra; the missing case is made, not waited for
    gone = ["uvicorn", "sse-starlette"]
    monkeypatch.setattr(launcher, "missing_server_deps", lambda: list(gone))
    from app.cli.main import main

    rc = main(["local", "serve", "--role", "tutor", "--runtime", "llamacpp_server", "--port", "0"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "pip install 'llama-cpp-python[server]'" in err
    for dist in gone:
        assert dist in err


def test_serve_starts_the_embedded_model_on_llama_cpp_server(tmp_path: Path) -> None:
    absent = launcher.missing_server_deps()
    if absent:
        missing(f"llama.cpp's server needs {', '.join(absent)} (pip install 'switchyard[local]')")
    if not llamacpp.llama_cpp_available() or llamacpp.find_embedded_gguf() is None:
        missing("needs the local extra: pip install 'switchyard[local]'")
    port = launcher.free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-c", CLI, "local", "serve", "--role", "tutor"),
            *("--runtime", "llamacpp_server", "--port", str(port), "--timeout", "120"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "SWITCHYARD_N_THREADS": "2"},
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("ready:") or proc.poll() is not None:
                break
        assert lines and lines[-1].startswith("ready:"), "".join(lines)
        child = int(lines[-1].split("(pid ")[1].split(")")[0])
        base = f"http://127.0.0.1:{port}/v1"
        models = httpx.get(f"{base}/models", timeout=5).json()
        assert [m["id"] for m in models["data"]] == ["smollm2-135m"]
        reply = httpx.post(
            f"{base}/chat/completions",
            json={"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8},
            timeout=60,
        ).json()
        assert reply["choices"][0]["message"]["content"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM  # as `serve` ends (143)
        assert not pid_alive(child)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ── local_only: nothing is downloaded ────────────────────────────────────────────────────


def _snapshot(cache: Path, repo_id: str, config: str | None, ref: bool = True) -> None:
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "f" * 40
    snap = folder / "snapshots" / commit
    snap.mkdir(parents=True)
    if config:
        (snap / config).write_text("{}")
    if ref:
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text(commit + "\n")


def test_under_local_only_only_a_local_path_or_a_cached_id_is_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: Policy
) -> None:
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    assert launcher.hub_cache_dir() == cache
    _snapshot(cache, "org/cached", "config.json")
    _snapshot(cache, "mistralai/ministral", "params.json")  # a Mistral-format checkpoint
    _snapshot(cache, "org/no-ref", "config.json", ref=False)  # offline cannot resolve main
    _snapshot(cache, "org/half", None)  # an interrupted download
    local_dir = tmp_path / "weights"
    local_dir.mkdir()
    for ok in ("org/cached", "mistralai/ministral", str(local_dir)):
        launcher.require_local_model(ok)
    for refused in ("org/no-ref", "org/half", "org/never-fetched"):
        with pytest.raises(UsageError, match=f"huggingface-cli download {refused}"):
            launcher.require_local_model(refused)
    with pytest.raises(UsageError, match="no such path"):
        launcher.require_local_model(str(tmp_path / "gone" / "weights"))

    settings = load_settings()
    with pytest.raises(UsageError, match="local_only"):
        plan_serve(policy, settings, "implementer", has_vllm=True, has_gpu=True, local_only=True)
    online = plan_serve(policy, settings, "implementer", has_vllm=True, has_gpu=True)
    assert online.runtime == "vllm"  # without local_only nothing is checked


def test_the_hub_cache_is_found_as_huggingface_hub_finds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert launcher.hub_cache_dir() == tmp_path / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert launcher.hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert launcher.hub_cache_dir() == tmp_path / "hf" / "hub"
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "legacy"))
    assert launcher.hub_cache_dir() == tmp_path / "legacy"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "new"))
    assert launcher.hub_cache_dir() == tmp_path / "new"


def test_the_server_environment_is_the_allowlist(
    monkeypatch: pytest.MonkeyPatch, policy: Policy
) -> None:
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-canary")
    monkeypatch.setenv("SOME_TEAM_SECRET", "hunter2")
    env = launcher.serve_env(policy, local_only=True)
    assert "DEEPSEEK_API_KEY" not in env and "SOME_TEAM_SECRET" not in env
    assert env["HF_HUB_OFFLINE"] == "1" and env["VLLM_NO_USAGE_STATS"] == "1"


def test_serve_where_a_server_already_answers_is_refused_before_starting(
    tmp_path: Path,
) -> None:
    """The health wait took the other server's answer for its own: "ready" printed over a
    child that had failed to bind, then "the server exited with code 3"."""
    argv, base, env = fake(tmp_path)
    other = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port = base.rsplit(":", 1)[1].split("/")[0]
        for _ in range(200):  # until the stand-in answers (a limit, not a measurement)
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/models", timeout=1).status_code == 200:
                    break
            time.sleep(0.05)
        done = run_cli(
            "local", "serve", "--role", "tutor", "--runtime", "llamacpp_server", "--port", port
        )
        assert done.returncode == 2, done.stdout + done.stderr
        assert f"a server already answers at {base}" in done.stderr
        assert "ready" not in done.stdout
    finally:
        other.terminate()
        other.wait(timeout=15)


def test_a_gguf_that_is_no_gguf_is_a_usage_error_before_anything_starts(
    policy: Policy, tmp_path: Path
) -> None:
    """``local serve --gguf big.txt``: --dry-run took it, and a real run printed the
    llama.cpp child's traceback ("Failed to load model") and exited 1 (a user audit)."""
    text = tmp_path / "big.txt"
    text.write_text("not a model\n")
    with pytest.raises(UsageError, match=r"big\.txt: not a GGUF file"):
        plan_serve(policy, load_settings(), "tutor", has_vllm=False, has_gpu=False, gguf=text)
    real = llamacpp.find_embedded_gguf()
    if real is not None:  # the embedded model is one: planned as before
        spec = plan_serve(
            policy, load_settings(), "tutor", has_vllm=False, has_gpu=False, gguf=real
        )
        assert str(real) in spec.argv
