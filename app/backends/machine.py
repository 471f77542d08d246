"""Facts about this machine that decide how a local model can be served: is vLLM
installed, does llama.cpp's server have its packages, is there a GPU, a free port.

Each is a cheap probe that never imports a heavy stack unless the answer needs it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess

from app.errors import SwitchyardError

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


class MissingDependency(SwitchyardError):
    """A runtime's Python packages are not installed: the command cannot work (exit 2)."""

    exit_code = 2


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
            done = subprocess.run(
                [smi, "-L"],
                capture_output=True,
                timeout=10,
                check=False,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},  # nothing else needed
            )
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
    """A port free on ``host`` now (IPv4 or IPv6, as the host resolves)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, kind, proto) as s:
        s.bind(address)
        port: int = s.getsockname()[1]
        return port
