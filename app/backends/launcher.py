"""Start the local OpenAI-compatible runtimes: vLLM on a GPU, else llama.cpp's server
(``switchyard local serve``).

The choice of runtime is a small pure function (:func:`choose_runtime`) over the VRAM
fit plan and two facts about the machine (is vLLM installed, is there a GPU), so it is
tested without either; :func:`plan_serve` turns the choice into the exact command, and
under local_only refuses a model that is neither a local path nor already in the hub
cache (nothing may be downloaded). :func:`serve_env` is the server's environment: an
allowlist without provider keys, offline under local_only. The neighbours hold the
other concerns: :mod:`~app.backends.machine` (the facts),
:mod:`~app.backends.local_status` (``local status``), :mod:`~app.backends.supervisor`
(running the command). Their public names are importable from here as well.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field

from app.backends import llamacpp
from app.backends.base import Frozen
from app.backends.local_status import (
    InprocessStatus,
    LocalStatus,
    RoleStatus,
    inprocess_status,
    local_status,
)
from app.backends.machine import (
    LOCAL_EXTRA_HINT,
    SERVER_EXTRA_HINT,
    MissingDependency,
    free_port,
    gpu_present,
    missing_server_deps,
    vllm_available,
)
from app.backends.probe import EndpointStatus, probe_endpoint
from app.backends.runtimes import local_llm_roles, runtime_url
from app.backends.supervisor import stop_process_group, supervise, wait_healthy
from app.backends.vram import FitPlan, ModelFit, fit_plan
from app.config import Settings
from app.errors import UsageError
from app.hosts import http_url
from app.policy.schema import Model, Policy
from app.subprocess_env import HUB_OFFLINE, server_env

__all__ = [
    "SERVER_EXTRA_HINT",
    "EndpointStatus",
    "InprocessStatus",
    "LocalStatus",
    "MissingDependency",
    "RoleStatus",
    "ServeSpec",
    "check_runnable",
    "choose_runtime",
    "free_port",
    "gpu_present",
    "hub_cache_dir",
    "inprocess_status",
    "local_llm_roles",
    "local_status",
    "missing_server_deps",
    "plan_serve",
    "probe_endpoint",
    "require_local_model",
    "runtime_url",
    "serve_env",
    "stop_process_group",
    "supervise",
    "vllm_available",
    "wait_healthy",
]

ServeRuntime = Literal["vllm", "llamacpp_server"]

# vLLM downloads/loads weights and captures CUDA graphs: minutes, not seconds.
DEFAULT_TIMEOUT_S: dict[ServeRuntime, float] = {"vllm": 900.0, "llamacpp_server": 120.0}
LOOPBACK = ("127.0.0.1", "localhost", "::1")
URL_ENV: dict[ServeRuntime, str] = {
    "vllm": "SWITCHYARD_VLLM_URL",
    "llamacpp_server": "SWITCHYARD_LLAMACPP_SERVER_URL",
}


class ServeSpec(Frozen):
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


# ── Which runtime ───────────────────────────────────────────────────────────────────────


def choose_runtime(
    role: str,
    role_model: str,
    plan: FitPlan,
    *,
    vllm_ok: bool,
    gpu_ok: bool,
    require_vllm: bool = False,
) -> tuple[ServeRuntime, ModelFit | None, str | None]:
    """vLLM when it is installed, a GPU is present and the model fits the plan; else
    llama.cpp's server, with a note saying why (or a UsageError when vLLM was required).
    Returns the runtime, the model's fit and the note."""
    fit = plan.for_model(role_model)
    runnable = fit is not None and fit.gpu_memory_utilization is not None
    if vllm_ok and gpu_ok and runnable:
        return "vllm", fit, None
    if require_vllm:
        why = (
            "vLLM is not installed"
            if not vllm_ok
            else "no GPU found"
            if not gpu_ok
            else f"{role_model} does not fit the GPU ({fit.note if fit else 'not sized'})"
        )
        raise UsageError(f"cannot serve {role} on vLLM: {why}")
    if not vllm_ok:
        note = "vLLM is not installed: using llama.cpp's server"
    elif not gpu_ok:
        note = "no GPU found: using llama.cpp's server"
    else:
        note = f"{role_model} does not fit the GPU: using llama.cpp's server"
    return "llamacpp_server", fit, note


def _local_role_model(policy: Policy, role: str) -> str:
    if role not in policy.roles:
        raise UsageError(
            f"unknown role {role!r}; local roles: {', '.join(local_llm_roles(policy))}"
        )
    if role not in local_llm_roles(policy):
        raise UsageError(
            f"role {role!r} is not a local LLM role; local roles: "
            f"{', '.join(local_llm_roles(policy))}"
        )
    return policy.resolve(policy.roles[role].default or "")


# ── Where it listens ────────────────────────────────────────────────────────────────────


def _listen_port(
    url: str | None, chosen: ServeRuntime, host: str, port: int | None, notes: list[str]
) -> int:
    """The port to serve on: the one asked for, any free one (0), else the configured
    URL's; notes say when the router would look somewhere else."""
    if port is None:
        port = urlsplit(url).port if url else None
        port = port or (8000 if chosen == "vllm" else 8080)
        if url and (urlsplit(url).hostname or "") not in LOOPBACK:
            notes.append(f"the configured {chosen} URL {url} is not this machine")
    elif port == 0:
        port = free_port(host)
    if url and urlsplit(url).port != port:
        notes.append(
            f"the router looks at {url}; set {URL_ENV[chosen]}=http://{host}:{port}/v1 "
            "to use this one"
        )
    return port


# ── The command ─────────────────────────────────────────────────────────────────────────


def _vllm_command() -> list[str]:
    beside = Path(sys.executable).with_name("vllm")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("vllm")
    return [found] if found else [sys.executable, "-m", "vllm.entrypoints.cli.main"]


def _vllm_argv(model: Model, fit: ModelFit, host: str, port: int, window: int) -> list[str]:
    assert fit.gpu_memory_utilization is not None
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
        str(window),
    ]
    if (model.quant or "").lower() == "fp8":
        # a bf16 checkpoint is quantised on load; an FP8 one is read as such
        argv += ["--quantization", "fp8"]
    return argv


def _llamacpp_argv(
    gguf: Path, served_id: str, host: str, port: int, window: int, threads: int
) -> list[str]:
    return [
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


def _gguf_magic(path: Path) -> bool:
    """Whether ``path`` begins as every GGUF does (unreadable: told later, as before)."""
    try:
        with path.open("rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return True


def _gguf_to_serve(
    policy: Policy, role_model: str, gguf: Path | None, notes: list[str]
) -> tuple[Path, str, int | None]:
    """The role's own GGUF when one is given, else the embedded model: the file, the id
    it is served under, and the catalog's window cap (None for the embedded model)."""
    if gguf is not None:
        if not gguf.is_file():
            raise UsageError(f"GGUF not found: {gguf}")
        if not _gguf_magic(gguf):
            # llama.cpp's child failed on it with a Python traceback, exit 1 (a user audit)
            raise UsageError(f"{gguf}: not a GGUF file (it does not begin with 'GGUF')")
        return gguf, role_model, policy.models[role_model].context_window or None
    found = llamacpp.find_embedded_gguf()
    if found is None:
        raise MissingDependency(
            f"no GGUF for {role_model} and no embedded model: pass --gguf FILE or "
            f"{LOCAL_EXTRA_HINT}"
        )
    served = policy.runtimes.get("llamacpp_inprocess")
    served_id = (served.model if served and served.model else None) or llamacpp.EMBEDDED_MODEL_ID
    notes.append(
        f"no GGUF configured for {role_model}: serving the embedded {served_id} "
        f"({found.name}); pass --gguf FILE to serve the role's own model"
    )
    return found, served_id, None


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
    local_only: bool = False,
) -> ServeSpec:
    """Decide how to serve ``role``'s model. Pure apart from the two machine probes,
    which callers (and tests) can answer with ``has_vllm`` / ``has_gpu``, and, under
    ``local_only``, the look into the hub cache (:func:`require_local_model`)."""
    role_model = _local_role_model(policy, role)
    model = policy.models[role_model]
    notes: list[str] = []

    chosen: ServeRuntime = "llamacpp_server"
    fit = None
    if runtime != "llamacpp_server":
        vllm_ok = vllm_available() if has_vllm is None else has_vllm
        gpu_ok = (
            (gpu_present(vllm_ok=vllm_ok) if vllm_ok else False) if has_gpu is None else has_gpu
        )
        chosen, fit, note = choose_runtime(
            role,
            role_model,
            plan or fit_plan(policy, gpu_gb=gpu_gb),
            vllm_ok=vllm_ok,
            gpu_ok=gpu_ok,
            require_vllm=runtime == "vllm",
        )
        if note:
            notes.append(note)

    port = _listen_port(runtime_url(policy, settings, chosen), chosen, host, port, notes)
    base_url = f"{http_url(host, port)}/v1"  # an IPv6 literal in brackets
    if local_only:
        notes.append(
            "local_only: the server starts offline ("
            + ", ".join(f"{k}={v}" for k, v in list(HUB_OFFLINE.items())[:2])
            + ", …): it loads only what is on this machine"
        )

    if chosen == "vllm":
        assert fit is not None and fit.gpu_memory_utilization is not None
        if local_only:
            require_local_model(model.served_name)
        # --n-ctx caps the window the plan fits on the GPU; it never raises it (vLLM would
        # refuse a --max-model-len the memory was not sized for, or past the model's own)
        window = min(n_ctx, fit.max_model_len) if n_ctx else fit.max_model_len
        if n_ctx and n_ctx > fit.max_model_len:
            notes.append(f"--n-ctx {n_ctx} is more than fits: the window stays {window}")
        if fit.reduced_context:
            notes.append(fit.note)
        return ServeSpec(
            role=role,
            role_model=role_model,
            model=role_model,
            runtime="vllm",
            argv=_vllm_argv(model, fit, host, port, window),
            host=host,
            port=port,
            base_url=base_url,
            max_model_len=window,
            gpu_memory_utilization=fit.gpu_memory_utilization,
            timeout_s=DEFAULT_TIMEOUT_S["vllm"],
            notes=notes,
        )

    path, served_id, window_cap = _gguf_to_serve(policy, role_model, gguf, notes)
    limits = [w for w in (llamacpp.gguf_window(path), window_cap, n_ctx) if w]
    # no header, no catalog figure, no flag: llama.cpp server's own default is 2048
    window = min(limits) if limits else 2048
    threads = settings.n_threads or llamacpp.default_threads()
    return ServeSpec(
        role=role,
        role_model=role_model,
        model=served_id,
        runtime="llamacpp_server",
        argv=_llamacpp_argv(path, served_id, host, port, window, threads),
        host=host,
        port=port,
        base_url=base_url,
        embedded=gguf is None,
        gguf=str(path),
        max_model_len=window,
        n_threads=threads,
        timeout_s=DEFAULT_TIMEOUT_S["llamacpp_server"],
        notes=notes,
    )


# ── local_only: nothing is downloaded ───────────────────────────────────────────────────

# A Hugging Face repo id: "name" or "owner/name" (letters, digits, "-", "_", ".").
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")
# What vLLM reads first in a snapshot: a transformers config, or a Mistral-format one.
_CONFIG_FILES = ("config.json", "params.json")


def hub_cache_dir() -> Path:
    """Where the Hugging Face stack (and vLLM through it) caches models, found the way
    huggingface_hub finds it: HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME/hub, else
    XDG_CACHE_HOME (or ~/.cache)/huggingface/hub."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "huggingface" / "hub"


def _cached(repo_id: str, cache: Path) -> bool:
    """Whether ``repo_id``'s default revision is in ``cache`` as the hub would find it
    offline: ``refs/main`` names a snapshot that holds the model's config."""
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    try:
        commit = (folder / "refs" / "main").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return False
    snapshot = folder / "snapshots" / commit
    return (
        bool(commit) and "/" not in commit and any((snapshot / f).is_file() for f in _CONFIG_FILES)
    )


def require_local_model(name: str) -> None:
    """Under local_only a server may load only what is on this machine: a local path,
    or a hub id already in the cache. Anything else is a :class:`UsageError` (exit 2)
    that says how to fetch it first; nothing is started."""
    path = Path(name).expanduser()
    if path.exists():
        return
    cache = hub_cache_dir()
    if _HUB_ID.match(name) and _cached(name, cache):
        return
    if not _HUB_ID.match(name):
        raise UsageError(
            f"local_only: the model {name!r} is not on this machine (no such path) and "
            "is not a Hugging Face id; serve a local path"
        )
    raise UsageError(
        f"local_only: {name} is neither a local path nor in the Hugging Face cache "
        f"({cache}), and nothing may be downloaded under local_only (GR-009); fetch it "
        f"first while local_only is off: `huggingface-cli download {name}` "
        f"(or `hf download {name}`), then serve again"
    )


def serve_env(policy: Policy, *, local_only: bool) -> dict[str, str]:
    """The environment of the server process: an allowlist (no provider keys, nor any
    variable the policy's providers name in ``api_key_env``); offline under local_only."""
    keys = [p.api_key_env for p in policy.providers.values() if p.api_key_env]
    return server_env(local_only=local_only, secrets=keys)


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
