"""Start and watch the local OpenAI-compatible runtimes: vLLM on a GPU, else llama.cpp's
server; and probe what is running (``switchyard local serve|status|plan``).

The choice of runtime is a small pure function (:func:`plan_serve`) over the policy, the
fit plan and two facts about the machine (is vLLM installed, is there a GPU), so it is
tested without either. :func:`supervise` runs the chosen command in its own process
group, waits for it to answer, and takes the whole group down on SIGINT/SIGTERM.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import Literal, TextIO
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field

from app.backends import llamacpp
from app.backends.http import make_client
from app.backends.vram import FitPlan, fit_plan
from app.config import Settings
from app.errors import LocalOnlyViolation, SwitchyardError, UsageError
from app.policy.schema import Policy

__all__ = [
    "SERVER_EXTRA_HINT",
    "EndpointStatus",
    "InprocessStatus",
    "LocalStatus",
    "MissingDependency",
    "RoleStatus",
    "ServeSpec",
    "free_port",
    "gpu_present",
    "local_llm_roles",
    "local_status",
    "missing_server_deps",
    "plan_serve",
    "probe_endpoint",
    "runtime_url",
    "supervise",
    "vllm_available",
]

ServeRuntime = Literal["vllm", "llamacpp_server"]

#: import name → distribution, for llama-cpp-python's ``server`` extra
SERVER_DEPS: dict[str, str] = {
    "uvicorn": "uvicorn",
    "fastapi": "fastapi",
    "sse_starlette": "sse-starlette",
    "starlette_context": "starlette-context",
    "pydantic_settings": "pydantic-settings",
}
SERVER_EXTRA_HINT = "pip install 'llama-cpp-python[server]'"
LOCAL_EXTRA_HINT = "pip install 'switchyard[local]'"

# vLLM downloads/loads weights and captures CUDA graphs: minutes, not seconds.
DEFAULT_TIMEOUT_S: dict[ServeRuntime, float] = {"vllm": 900.0, "llamacpp_server": 120.0}
STOP_GRACE_S = 10.0
PROBE_TIMEOUT_S = 1.0


class MissingDependency(SwitchyardError):
    """A runtime's Python packages are not installed: the command cannot work (exit 2)."""

    exit_code = 2


# ── Facts about the machine ─────────────────────────────────────────────────────────────


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def vllm_available() -> bool:
    return _importable("vllm")


def missing_server_deps() -> list[str]:
    """Distributions llama_cpp.server needs that are not installed (empty when ready)."""
    return [dist for mod, dist in SERVER_DEPS.items() if not _importable(mod)]


def gpu_present(*, vllm_ok: bool | None = None) -> bool:
    """nvidia-smi lists a GPU, or (only when vLLM is installed) torch sees CUDA.

    torch is imported only when vLLM is: on a machine without vLLM the answer does not
    matter, and importing torch costs seconds.
    """
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            done = subprocess.run([smi, "-L"], capture_output=True, timeout=10, check=False)
            if done.returncode == 0 and b"GPU" in done.stdout:
                return True
        except (OSError, subprocess.SubprocessError):
            pass
    if vllm_ok if vllm_ok is not None else vllm_available():
        try:
            import torch

            return bool(torch.cuda.is_available())
        except Exception:
            return False
    return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


# ── Endpoints ───────────────────────────────────────────────────────────────────────────


def runtime_url(policy: Policy, settings: Settings, runtime: str) -> str | None:
    """The base URL (``.../v1``) the router uses for an HTTP runtime; settings win."""
    override = {"vllm": settings.vllm_url, "llamacpp_server": settings.llamacpp_server_url}
    url = override.get(runtime)
    if url:
        return url.rstrip("/")
    spec = policy.runtimes.get(runtime)
    return spec.base_url.rstrip("/") if spec and spec.base_url else None


def _root(base_url: str) -> str:
    """``http://h:p/v1`` → ``http://h:p`` (where vLLM serves /health)."""
    return base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url


def local_llm_roles(policy: Policy) -> list[str]:
    return [
        rid
        for rid, r in policy.roles.items()
        if r.kind == "llm" and r.locality == "local" and r.default
    ]


# ── Serving ─────────────────────────────────────────────────────────────────────────────


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServeSpec(_Frozen):
    role: str
    #: the role's catalog model
    role_model: str
    #: what is actually served (the role's model, or the embedded SmolLM2)
    model: str
    runtime: ServeRuntime
    argv: list[str]
    host: str
    port: int
    base_url: str
    embedded: bool = False
    gguf: str | None = None
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    n_threads: int | None = None
    timeout_s: float
    notes: list[str] = Field(default_factory=list)


def _vllm_command() -> list[str]:
    beside = Path(sys.executable).with_name("vllm")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("vllm")
    return [found] if found else [sys.executable, "-m", "vllm.entrypoints.cli.main"]


def plan_serve(
    policy: Policy,
    settings: Settings,
    role: str,
    *,
    runtime: Literal["auto", "vllm", "llamacpp_server"] = "auto",
    port: int | None = None,
    host: str = "127.0.0.1",
    gguf: Path | None = None,
    n_ctx: int | None = None,
    gpu_gb: float | None = None,
    has_vllm: bool | None = None,
    has_gpu: bool | None = None,
    plan: FitPlan | None = None,
) -> ServeSpec:
    """Decide how to serve ``role``'s model. Pure apart from the two machine probes,
    which callers (and tests) can answer with ``has_vllm`` / ``has_gpu``."""
    if role not in policy.roles:
        raise UsageError(
            f"unknown role {role!r}; local roles: {', '.join(local_llm_roles(policy))}"
        )
    if role not in local_llm_roles(policy):
        raise UsageError(
            f"role {role!r} is not a local LLM role; local roles: "
            f"{', '.join(local_llm_roles(policy))}"
        )
    role_model = policy.resolve(policy.roles[role].default or "")
    model = policy.models[role_model]
    notes: list[str] = []

    chosen: ServeRuntime
    fit = None
    if runtime == "llamacpp_server":
        chosen = "llamacpp_server"
    else:
        vllm_ok = vllm_available() if has_vllm is None else has_vllm
        gpu_ok = (
            (gpu_present(vllm_ok=vllm_ok) if vllm_ok else False) if has_gpu is None else has_gpu
        )
        plan = plan or fit_plan(policy, gpu_gb=gpu_gb)
        fit = plan.for_model(role_model)
        runnable = fit is not None and fit.gpu_memory_utilization is not None
        if vllm_ok and gpu_ok and runnable:
            chosen = "vllm"
        elif runtime == "vllm":
            why = (
                "vLLM is not installed"
                if not vllm_ok
                else "no GPU found"
                if not gpu_ok
                else f"{role_model} does not fit the GPU ({fit.note if fit else 'not sized'})"
            )
            raise UsageError(f"cannot serve {role} on vLLM: {why}")
        else:
            chosen = "llamacpp_server"
            if not vllm_ok:
                notes.append("vLLM is not installed: using llama.cpp's server")
            elif not gpu_ok:
                notes.append("no GPU found: using llama.cpp's server")
            else:
                notes.append(f"{role_model} does not fit the GPU: using llama.cpp's server")

    url = runtime_url(policy, settings, chosen)
    if port is None:
        port = urlsplit(url).port if url else None
        port = port or (8000 if chosen == "vllm" else 8080)
        if url and (urlsplit(url).hostname or "") not in ("127.0.0.1", "localhost", "::1"):
            notes.append(f"the configured {chosen} URL {url} is not this machine")
    elif port == 0:
        port = free_port(host)
    if url and urlsplit(url).port != port:
        env = "SWITCHYARD_VLLM_URL" if chosen == "vllm" else "SWITCHYARD_LLAMACPP_SERVER_URL"
        notes.append(
            f"the router looks at {url}; set {env}=http://{host}:{port}/v1 to use this one"
        )
    base_url = f"http://{host}:{port}/v1"

    if chosen == "vllm":
        assert fit is not None and fit.gpu_memory_utilization is not None
        argv = [
            *_vllm_command(),
            "serve",
            model.served_name,
            "--host",
            host,
            "--port",
            str(port),
            "--gpu-memory-utilization",
            f"{fit.gpu_memory_utilization:.2f}",
            "--max-model-len",
            str(n_ctx or fit.max_model_len),
        ]
        if (model.quant or "").lower() == "fp8":
            # a bf16 checkpoint is quantised on load; an FP8 one is read as such
            argv += ["--quantization", "fp8"]
        if fit.reduced_context:
            notes.append(fit.note)
        return ServeSpec(
            role=role,
            role_model=role_model,
            model=role_model,
            runtime="vllm",
            argv=argv,
            host=host,
            port=port,
            base_url=base_url,
            max_model_len=n_ctx or fit.max_model_len,
            gpu_memory_utilization=fit.gpu_memory_utilization,
            timeout_s=DEFAULT_TIMEOUT_S["vllm"],
            notes=notes,
        )

    # llama.cpp's server: the role's own GGUF when one is given, else the embedded model.
    embedded = gguf is None
    if gguf is None:
        found = llamacpp.find_embedded_gguf()
        if found is None:
            raise MissingDependency(
                f"no GGUF for {role_model} and no embedded model: pass --gguf FILE or "
                f"{LOCAL_EXTRA_HINT}"
            )
        gguf = found
        served = policy.runtimes.get("llamacpp_inprocess")
        served_id = (
            served.model if served and served.model else None
        ) or llamacpp.EMBEDDED_MODEL_ID
        notes.append(
            f"no GGUF configured for {role_model}: serving the embedded {served_id} "
            f"({gguf.name}); pass --gguf FILE to serve the role's own model"
        )
        window_cap = None
    else:
        if not gguf.is_file():
            raise UsageError(f"GGUF not found: {gguf}")
        served_id = role_model
        window_cap = model.context_window or None
    trained = llamacpp.gguf_window(gguf)
    limits = [w for w in (trained, window_cap, n_ctx) if w]
    # no header, no catalog figure, no flag: llama.cpp server's own default is 2048
    window = min(limits) if limits else 2048
    threads = settings.n_threads or llamacpp.default_threads()
    argv = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--model_alias",
        served_id,
        "--host",
        host,
        "--port",
        str(port),
        "--n_ctx",
        str(window),
        "--n_threads",
        str(threads),
    ]
    return ServeSpec(
        role=role,
        role_model=role_model,
        model=served_id,
        runtime="llamacpp_server",
        argv=argv,
        host=host,
        port=port,
        base_url=base_url,
        embedded=embedded,
        gguf=str(gguf),
        max_model_len=window,
        n_threads=threads,
        timeout_s=DEFAULT_TIMEOUT_S["llamacpp_server"],
        notes=notes,
    )


def check_runnable(spec: ServeSpec) -> None:
    """Raise :class:`MissingDependency` naming exactly what to install."""
    if spec.runtime == "llamacpp_server":
        if not llamacpp.llama_cpp_available():
            raise MissingDependency(f"llama-cpp-python is not installed ({LOCAL_EXTRA_HINT})")
        missing = missing_server_deps()
        if missing:
            raise MissingDependency(
                f"llama.cpp's server needs {', '.join(missing)}, which "
                f"{'is' if len(missing) == 1 else 'are'} not installed ({SERVER_EXTRA_HINT})"
            )
    elif not vllm_available():
        raise MissingDependency("vLLM is not installed (pip install 'switchyard[vllm]')")


# ── Health probes ───────────────────────────────────────────────────────────────────────


class EndpointStatus(_Frozen):
    runtime: str
    base_url: str
    state: Literal["up", "down", "refused", "error"]
    latency_ms: float | None = None
    status_code: int | None = None
    models: list[str] = Field(default_factory=list)
    detail: str = ""

    @property
    def up(self) -> bool:
        return self.state == "up"


def probe_endpoint(
    runtime: str,
    base_url: str,
    *,
    local_only: bool = False,
    timeout: float = PROBE_TIMEOUT_S,
    client: httpx.Client | None = None,
) -> EndpointStatus:
    """GET /health (vLLM), else /v1/models (llama.cpp's server has no /health)."""
    own = client is None
    http = client or make_client(local_only=local_only, timeout=timeout)
    root = _root(base_url)
    started = time.perf_counter()
    try:
        try:
            r = http.get(f"{root}/health")
            latency = (time.perf_counter() - started) * 1000
            health_ok = r.status_code == 200
            models_r = http.get(f"{base_url}/models")
            code = r.status_code if health_ok else models_r.status_code
            if not health_ok and models_r.status_code != 200:
                return EndpointStatus(
                    runtime=runtime,
                    base_url=base_url,
                    state="error",
                    latency_ms=round(latency, 1),
                    status_code=code,
                    detail=f"/health {r.status_code}, /v1/models {models_r.status_code}",
                )
            return EndpointStatus(
                runtime=runtime,
                base_url=base_url,
                state="up",
                latency_ms=round(latency, 1),
                status_code=code,
                models=_model_ids(models_r),
            )
        except httpx.ConnectError as exc:
            if isinstance(exc, LocalOnlyViolation):
                return EndpointStatus(
                    runtime=runtime, base_url=base_url, state="refused", detail=str(exc)
                )
            return EndpointStatus(
                runtime=runtime, base_url=base_url, state="down", detail="connection refused"
            )
        except httpx.TimeoutException:
            return EndpointStatus(
                runtime=runtime,
                base_url=base_url,
                state="down",
                detail=f"no answer in {timeout:g}s",
            )
        except httpx.HTTPError as exc:
            return EndpointStatus(
                runtime=runtime, base_url=base_url, state="error", detail=type(exc).__name__
            )
    finally:
        if own:
            http.close()


def _model_ids(r: httpx.Response) -> list[str]:
    if r.status_code != 200:
        return []
    try:
        data = r.json().get("data", [])
        return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]
    except (ValueError, AttributeError, TypeError):
        return []


class InprocessStatus(_Frozen):
    runtime: str = llamacpp.RUNTIME
    available: bool
    model: str
    gguf: str | None
    context_window: int | None
    llama_cpp_installed: bool
    detail: str = ""


class RoleStatus(_Frozen):
    role: str
    model: str
    served_name: str
    chain: list[str]
    #: the first runtime of the chain that can serve now (None: nothing can)
    serving: str | None
    #: per HTTP runtime: is the role's model among the ones it lists
    listed: dict[str, bool] = Field(default_factory=dict)


class LocalStatus(_Frozen):
    endpoints: list[EndpointStatus]
    inprocess: InprocessStatus
    roles: list[RoleStatus]


def inprocess_status(policy: Policy) -> InprocessStatus:
    spec = policy.runtimes.get("llamacpp_inprocess")
    model = (spec.model if spec and spec.model else None) or llamacpp.EMBEDDED_MODEL_ID
    path = llamacpp.find_embedded_gguf()
    installed = llamacpp.llama_cpp_available()
    window = llamacpp.gguf_window(path) if path else None
    if path is None:
        detail = f"no embedded GGUF ({LOCAL_EXTRA_HINT})"
    elif not installed:
        detail = f"llama-cpp-python is not installed ({LOCAL_EXTRA_HINT})"
    else:
        detail = path.name
    return InprocessStatus(
        available=path is not None and installed,
        model=model,
        gguf=str(path) if path else None,
        context_window=window,
        llama_cpp_installed=installed,
        detail=detail,
    )


def local_status(
    policy: Policy, settings: Settings, *, timeout: float = PROBE_TIMEOUT_S
) -> LocalStatus:
    """Probe every HTTP runtime of the local chain once, and say who would serve each role."""
    local_only = (
        settings.local_only if settings.local_only is not None else policy.privacy.local_only
    )
    endpoints: dict[str, EndpointStatus] = {}
    with make_client(local_only=local_only, timeout=timeout) as client:
        for runtime in policy.local_chain.order:
            kind = policy.runtimes[runtime].kind if runtime in policy.runtimes else runtime
            if kind == "llamacpp_inprocess":
                continue
            url = runtime_url(policy, settings, runtime)
            if url:
                endpoints[runtime] = probe_endpoint(
                    runtime, url, local_only=local_only, timeout=timeout, client=client
                )
    inproc = inprocess_status(policy)
    roles = []
    for rid in local_llm_roles(policy):
        model_id = policy.resolve(policy.roles[rid].default or "")
        model = policy.models[model_id]
        listed = {
            rt: (model.served_name in ep.models or model_id in ep.models)
            for rt, ep in endpoints.items()
            if ep.up
        }
        serving = None
        for runtime in policy.local_chain.order:
            if runtime in endpoints and endpoints[runtime].up:
                serving = runtime
                break
            if runtime == llamacpp.RUNTIME and inproc.available:
                serving = runtime
                break
        roles.append(
            RoleStatus(
                role=rid,
                model=model_id,
                served_name=model.served_name,
                chain=list(policy.local_chain.order),
                serving=serving,
                listed=listed,
            )
        )
    return LocalStatus(endpoints=list(endpoints.values()), inprocess=inproc, roles=roles)


# ── Supervising a server process ────────────────────────────────────────────────────────


def wait_healthy(
    base_url: str,
    *,
    deadline: float,
    alive: Callable[[], bool],
    stop: threading.Event,
    interval: float = 0.25,
) -> bool:
    """Poll until the server answers /health (or /v1/models), it dies, or time runs out."""
    with make_client(local_only=False, timeout=PROBE_TIMEOUT_S) as client:
        while time.monotonic() < deadline and not stop.is_set():
            if not alive():
                return False
            if probe_endpoint("server", base_url, client=client).up:
                return True
            stop.wait(interval)
    return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def stop_process_group(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE_S) -> int:
    """SIGTERM the child's process group, wait, then SIGKILL; returns its exit code."""
    if proc.poll() is None:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    else:
        # the leader is gone; stragglers in its group must not outlive us
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop`` (main thread only; elsewhere the caller sets it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    saved = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def supervise(
    argv: list[str],
    base_url: str,
    *,
    log_path: Path,
    timeout_s: float,
    out: TextIO,
    stop: threading.Event | None = None,
    grace_s: float = STOP_GRACE_S,
    env: dict[str, str] | None = None,
    on_ready: Callable[[], None] | None = None,
) -> int:
    """Run a server until it is told to stop. Exit codes: 0 stopped on request (or the
    ready callback returned), 1 it failed to start or died.

    The child gets its own session (process group), so stopping it also stops whatever
    it spawned (vLLM's engine workers), and a Ctrl-C in the terminal reaches us first.
    """
    stop = stop or threading.Event()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with _stop_on_signals(stop), log_path.open("ab") as log:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        except OSError as exc:
            print(f"switchyard: cannot start {argv[0]}: {exc.strerror or exc}", file=out)
            return 1
        try:
            ready = wait_healthy(
                base_url,
                deadline=time.monotonic() + timeout_s,
                alive=lambda: proc.poll() is None,
                stop=stop,
            )
            if not ready:
                if stop.is_set():
                    print("switchyard: stopped before the server was ready", file=out)
                    return 0
                if proc.poll() is not None:
                    print(f"switchyard: the server exited with code {proc.returncode}:", file=out)
                else:
                    print(f"switchyard: the server did not answer within {timeout_s:g}s", file=out)
                tail = _tail(log_path)
                if tail:
                    print(tail, file=out)
                print(f"(full log: {log_path})", file=out)
                return 1
            print(f"ready: {base_url} (pid {proc.pid}); Ctrl-C stops it", file=out, flush=True)
            if on_ready is not None:
                on_ready()
                return 0
            while not stop.is_set():
                if proc.poll() is not None:
                    print(f"switchyard: the server exited with code {proc.returncode}", file=out)
                    print(f"(log: {log_path})", file=out)
                    return 1
                stop.wait(0.5)
            print("stopping the server...", file=out, flush=True)
            return 0
        finally:
            stop_process_group(proc, grace_s)
