"""P7's processes: the fake upstream, ``switchyard serve`` and the LiteLLM proxy.

Each is one process (LiteLLM with one worker runs uvicorn in-process), its output in a log
file, stopped with SIGTERM, then SIGKILL. They stay in the benchmark's process group, so
``make bench`` stopping the benchmark's group stops them too. What each side is given:

- **Switchyard**: ``switchyard serve --port 0 --approve deny`` with the repository's
  policy, a temporary ``SWITCHYARD_DATA_DIR`` and XDG config home (no user settings), and
  the fake as the vLLM runtime (``SWITCHYARD_VLLM_URL``); the fake lists the served model
  names of the gateway's roles, so a role is served by the local route.
- **LiteLLM proxy** (:data:`LITELLM_VERSION`, in ``bench/.venv-litellm``): the fake as
  its only model, and every speed setting its production and latency docs offer
  (:func:`litellm_config`, :data:`LITELLM_ENV`): no database, no spend or error logs, no
  callbacks, no message or streaming logging, no cache, no health checks, one uvicorn
  worker on uvloop with httptools, logs at ERROR, production mode (no ``.env`` load),
  offline (local cost map, offline mode, no telemetry). Checked here in interleaved
  runs (1,000–2,000 requests each): these settings, LiteLLM's defaults and the
  ``hosted_vllm/`` provider instead of ``openai/`` are within ~2 ms of each other at p50
  (18.7–21.0 ms end to end): its cost is not in a setting.

``pip install 'litellm[proxy]==1.110.2'`` fails (the extra pins ``litellm-proxy==1.110.2``
and two releases that were never published): :func:`ensure_litellm_proxy` installs
``litellm==1.110.2`` plus the extra's other requirements read from its own metadata, with
``litellm-proxy-extras`` and ``litellm-enterprise`` unpinned, and ``httptools``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.gateway_client import Client, HttpError
from bench.p1_router import LITELLM_VERSION, OFFLINE_ENV, ROOT, VENV, ensure_litellm, venv_python

MASTER_KEY = "sk-bench-gateway-master-key-0000"
POLICY = ROOT / "policy" / "model-policy.toml"
PROXY_STAMP = VENV / f".stamp-proxy-{LITELLM_VERSION}"
#: the extra's pins that cannot be met: dropped, or left unpinned
UNPUBLISHED = {"litellm-proxy": None, "litellm-proxy-extras": "", "litellm-enterprise": ""}
LITELLM_ENV = {
    **OFFLINE_ENV,
    "LITELLM_MASTER_KEY": MASTER_KEY,
    "LITELLM_LOG": "ERROR",
    "LITELLM_MODE": "PRODUCTION",
    "DISABLE_SCHEMA_UPDATE": "true",
}

#: one worker (as switchyard serve; both share 2 cores with the fake and the client), and
#: keep-alive as long as switchyard serve's, so no side reconnects between rounds
LITELLM_FLAGS = ["--num_workers", "1", "--telemetry", "False", "--keepalive_timeout", "75"]

_PROXY_REQUIREMENTS = f"""
from importlib.metadata import requires
from packaging.requirements import Requirement
skip = {UNPUBLISHED!r}
out = []
for text in requires("litellm") or []:
    req = Requirement(text)
    # the proxy extra's own lines (the base requirements are installed already)
    if req.marker is None or req.marker.evaluate({{"extra": ""}}):
        continue
    if not req.marker.evaluate({{"extra": "proxy"}}):
        continue
    if req.name in skip:
        if skip[req.name] is not None:
            out.append(req.name)
        continue
    req.marker = None
    out.append(str(req))
print("\\n".join(out))
"""


def ensure_litellm_proxy() -> list[str]:
    """The LiteLLM venv with the proxy's requirements; returns what was installed."""
    ensure_litellm()
    py = str(venv_python())
    reqs = subprocess.run(
        [py, "-c", _PROXY_REQUIREMENTS], check=True, capture_output=True, text=True
    ).stdout.split()
    reqs += ["httptools"]  # uvicorn's fast HTTP parser (part of uvicorn[standard])
    if not PROXY_STAMP.exists():
        print(f"installing the LiteLLM proxy's requirements ({len(reqs)}) …", flush=True)
        subprocess.run(
            [py, "-m", "pip", "install", "-q", "--disable-pip-version-check",
             f"litellm=={LITELLM_VERSION}", *reqs],
            check=True,
        )  # fmt: skip
        PROXY_STAMP.write_text("\n".join(reqs) + "\n")
    return reqs


def served_names() -> dict[str, str]:
    """Each gateway role's local model, as the runtime serves it."""
    from app.policy.loader import load_policy

    policy = load_policy(POLICY).policy
    out = {}
    for rid in policy.gateway.roles:
        default = policy.roles[rid].default
        if default is not None:
            out[rid] = policy.model(default).served_name
    return out


def litellm_config(fake_port: int, role: str, served: str) -> dict[str, object]:
    return {
        "model_list": [
            {
                "model_name": role,
                "litellm_params": {
                    # the generic OpenAI-compatible provider: vLLM speaks its API
                    "model": f"openai/{served}",
                    "api_base": f"http://127.0.0.1:{fake_port}/v1",
                    "api_key": "sk-no-key-required",
                },
            }
        ],
        "general_settings": {
            "disable_spend_logs": True,
            "disable_error_logs": True,
            "disable_reset_budget": True,
            "background_health_checks": False,
        },
        "litellm_settings": {
            "set_verbose": False,
            "telemetry": False,
            "turn_off_message_logging": True,
            "disable_streaming_logging": True,
            "cache": False,
            "callbacks": [],
            "success_callback": [],
            "failure_callback": [],
            "request_timeout": 600,
        },
        "router_settings": {"routing_strategy": "simple-shuffle"},
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Proc:
    """A child process in its own group, its output in ``log``."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.log = name, log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                cmd,
                env=env,
                cwd=log.parent,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout_s: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if m := re.search(pattern, self.text()):
                return m
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start:\n{self.text()[-3000:]}")

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.popen.kill()  # LiteLLM's shutdown can hang on its background tasks
            self.popen.wait(timeout=10)


def wait_answering(proc: Proc, client: Client, body: dict[str, object], timeout_s: float) -> None:
    """Until a real chat completion comes back (the first one also warms the route)."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            break
        try:
            client.call("/v1/chat/completions", body)
            return
        except (OSError, HttpError) as exc:
            last = str(exc)
            time.sleep(0.25)
    raise RuntimeError(f"{proc.name} never answered ({last}):\n{proc.text()[-3000:]}")


def start_fake(work: Path, models: list[str]) -> tuple[Proc, int]:
    cmd = [sys.executable, "-m", "bench.gateway_fake", "--models", ",".join(models)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = Proc("fake upstream", cmd, env, work / "fake.log")
    return proc, int(proc.wait_for(r"port (\d+)", 30).group(1))


def start_switchyard(work: Path, fake_port: int) -> tuple[Proc, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHYARD_", "SPEC_KIT_"))}
    env |= {
        "SWITCHYARD_DATA_DIR": str(work / "switchyard-data"),
        "XDG_CONFIG_HOME": str(work / "xdg-config"),
        "SWITCHYARD_VLLM_URL": f"http://127.0.0.1:{fake_port}/v1",
        "PYTHONPATH": str(ROOT),
    }
    cmd = [sys.executable, "-m", "app", "serve", "--port", "0", "--approve", "deny"]
    cmd += ["--policy", str(POLICY)]
    proc = Proc("switchyard serve", cmd, env, work / "switchyard.log")
    return proc, int(proc.wait_for(r"listening on http://[^:]+:(\d+)", 120).group(1))


def start_litellm(work: Path, fake_port: int, role: str, served: str) -> tuple[Proc, int]:
    config = work / "litellm-config.yaml"  # JSON is YAML
    config.write_text(json.dumps(litellm_config(fake_port, role, served), indent=2))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PYTHONPATH")}
    env |= LITELLM_ENV
    cmd = [str(VENV / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), *LITELLM_FLAGS]
    return Proc("LiteLLM proxy", cmd, env, work / "litellm.log"), port


def stop_all(procs: list[Proc]) -> None:
    for proc in reversed(procs):
        proc.stop()
