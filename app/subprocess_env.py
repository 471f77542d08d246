"""The environment of every subprocess Switchyard starts: built from an allowlist, never
inherited (DESIGN decision 3; GR-009, GR-010).

Three kinds of child, one rule: a variable of ours reaches a child only when it is named
here for that kind of child.

* **Test commands** (the sandbox, :func:`command_env`): the sandbox's minimal
  environment. A private HOME and TMPDIR, C.UTF-8, CI=true, the PATH, and the
  toolchain locations (:data:`TOOLCHAIN_ENV`). Nothing else of the user's.
* **Local model servers** (vLLM, llama.cpp's server; :func:`server_env`): what loads and
  runs a model. The real HOME and the caches (the hub's weights), the GPU and thread
  settings, vLLM's own ``VLLM_*`` settings. The hub token, the proxies and the CA
  bundles only when local_only is off.
* **git** (:func:`git_env`): HOME and git's own configuration variables, so the user's
  identity and settings still apply; nothing that points git at another repository or
  at a remote (Switchyard's git never talks to one).

Provider keys (:data:`PROVIDER_KEY_VARS`, and whatever the policy's providers name in
``api_key_env``, passed as ``secrets``) are removed last from every environment, also
from what a caller adds, so that no allowlist entry and no caller can hand one on. Under
local_only each kind also gets :data:`HUB_OFFLINE`, set after the caller's additions so
that nothing can undo it.

A leaf: it imports nothing from the app, so every layer may use it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType

#: the cloud providers' key variables: never in a child's environment
PROVIDER_KEY_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DEEPSEEK_API_KEY", "MOONSHOT_API_KEY")

#: Under local_only: nothing a child runs may fetch from a model hub or phone home.
#: HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE / HF_DATASETS_OFFLINE make the Hugging Face
#: stack (and vLLM, which loads through it) use the local cache only; vLLM would
#: otherwise download from ModelScope when VLLM_USE_MODELSCOPE is on, and sends usage
#: statistics unless VLLM_NO_USAGE_STATS / VLLM_DO_NOT_TRACK / DO_NOT_TRACK say no.
HUB_OFFLINE: Mapping[str, str] = MappingProxyType(
    {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "VLLM_USE_MODELSCOPE": "False",
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_DO_NOT_TRACK": "1",
        "DO_NOT_TRACK": "1",
    }
)

# ── test commands ────────────────────────────────────────────────────────────────────────

#: Toolchain locations passed through when set, so `cargo`, `go` and friends still find
#: their installs although HOME points into the sandbox.
TOOLCHAIN_ENV = (
    "RUSTUP_HOME",
    "CARGO_HOME",
    "GOROOT",
    "GOPATH",
    "GOMODCACHE",
    "GOFLAGS",
    "JAVA_HOME",
    "VIRTUAL_ENV",
)
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def command_env(
    home: str,
    tmp: str,
    *,
    local_only: bool = False,
    extra: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
) -> dict[str, str]:
    """The environment a test command starts from: built, never inherited."""
    env = {
        "PATH": os.environ.get("PATH") or DEFAULT_PATH,
        "HOME": home,
        "TMPDIR": tmp,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "TERM": "dumb",
        "NO_COLOR": "1",
        # Test runners stay non-interactive (no watch mode, no prompts) under CI.
        "CI": "true",
    }
    env.update(_present(TOOLCHAIN_ENV))
    real_home = Path.home()
    for name, sub in (("RUSTUP_HOME", ".rustup"), ("CARGO_HOME", ".cargo")):
        if name not in env and (real_home / sub).is_dir():
            env[name] = str(real_home / sub)
    return _finish(env, extra, local_only, secrets)


# ── local model servers ──────────────────────────────────────────────────────────────────

#: What a server needs to load and run a model, passed through when set.
SERVER_ENV = (
    "PATH",
    # the real HOME: the hub cache (~/.cache/huggingface), vLLM's ~/.config/vllm, the
    # compile caches of torch and triton
    "HOME",
    "USER",
    "LOGNAME",
    "TMPDIR",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    # the CUDA / ROCm libraries and which devices to use
    "LD_LIBRARY_PATH",
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
    "HIP_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "PYTORCH_CUDA_ALLOC_CONF",
    "TORCH_CUDA_ARCH_LIST",
    "TRITON_CACHE_DIR",
    # where the weights are cached
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "TRANSFORMERS_CACHE",
    # the user's own opt-outs stay in force when local_only is off
    *HUB_OFFLINE,
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)
#: Prefixes of server settings: vLLM's own (VLLM_API_KEY is the server's own key for its
#: clients, not a provider's), CUDA's and NCCL's (multi-GPU), torch's compile cache.
SERVER_PREFIXES = ("VLLM_", "CUDA_", "NCCL_", "TORCHINDUCTOR_")
#: Only when local_only is off: a server may then download weights, which needs the hub
#: token (gated models), a mirror, a proxy. Under local_only it must not go online, so
#: the credential and the ways out stay behind.
SERVER_ONLINE_ENV = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_ENDPOINT",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)


def server_env(
    *,
    local_only: bool,
    extra: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
) -> dict[str, str]:
    """The environment of a local model server (vLLM, llama.cpp's server)."""
    env = _present(SERVER_ENV)
    env.update({k: v for k, v in os.environ.items() if k.startswith(SERVER_PREFIXES)})
    if not local_only:
        env.update(_present(SERVER_ONLINE_ENV))
    env.setdefault("PATH", DEFAULT_PATH)
    return _finish(env, extra, local_only, secrets)


# ── git ──────────────────────────────────────────────────────────────────────────────────

#: What git needs to behave as the user's git: HOME and XDG_CONFIG_HOME find
#: ~/.gitconfig and ~/.config/git (identity, safe.directory, filters such as git-lfs);
#: EMAIL and the GIT_AUTHOR_* / GIT_COMMITTER_* variables are identity too; TZ dates the
#: commits; the GIT_CONFIG_* family is configuration given through the environment.
#: Left out on purpose: GIT_DIR, GIT_WORK_TREE, GIT_INDEX_FILE and the other location
#: variables (set when Switchyard runs inside a git hook, they would point git at another
#: repository or index than the one we name), and everything that talks to a remote
#: (SSH_AUTH_SOCK, GIT_SSH_COMMAND, GIT_ASKPASS, credential helpers' variables, proxies):
#: the worktree, apply, commit and merge Switchyard runs are all local.
GIT_ENV = (
    "PATH",
    "HOME",
    "XDG_CONFIG_HOME",
    "TMPDIR",
    "TZ",
    "EMAIL",
    "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL",
    "GIT_AUTHOR_DATE",
    "GIT_COMMITTER_NAME",
    "GIT_COMMITTER_EMAIL",
    "GIT_COMMITTER_DATE",
    "GIT_CONFIG_GLOBAL",
    "GIT_CONFIG_SYSTEM",
    "GIT_CONFIG_NOSYSTEM",
    "GIT_CONFIG_COUNT",
    "GIT_CONFIG_PARAMETERS",
    "GIT_ATTR_NOSYSTEM",
    "GIT_CEILING_DIRECTORIES",
    "GIT_DISCOVERY_ACROSS_FILESYSTEM",
    "GIT_EXEC_PATH",
    "GIT_TEMPLATE_DIR",
)
#: GIT_CONFIG_KEY_<n> / GIT_CONFIG_VALUE_<n> go with GIT_CONFIG_COUNT; GIT_TRACE* is how
#: a user debugs what git did.
GIT_PREFIXES = ("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_", "GIT_TRACE")
#: Set on every call. English messages (shown to the user and fed back to the model), no
#: prompt or editor that would wait for a terminal, no optional locks on the user's index.
GIT_FIXED = MappingProxyType(
    {
        "LC_ALL": "C",
        "LANG": "C",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_MERGE_AUTOEDIT": "no",
        "GIT_EDITOR": "true",
        "GIT_OPTIONAL_LOCKS": "0",
        # Paths we pass are file names, never patterns.
        "GIT_LITERAL_PATHSPECS": "1",
    }
)


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a git call.

    The hub-offline variables are set on every call, local_only or not: git is no hub
    client, so they change nothing for git itself, and they keep whatever git may run on
    its own (a filter or merge driver from the user's configuration; hooks are off) from
    fetching models, without threading the switch through every git call.
    """
    env = _present(GIT_ENV)
    env.update({k: v for k, v in os.environ.items() if k.startswith(GIT_PREFIXES)})
    env.setdefault("PATH", DEFAULT_PATH)
    env.update(GIT_FIXED)
    return _finish(env, extra, True, ())


# ── shared ───────────────────────────────────────────────────────────────────────────────


def without_secrets(env: Mapping[str, str], secrets: Iterable[str] = ()) -> dict[str, str]:
    """``env`` without the provider keys and the ``secrets`` named."""
    banned = {*PROVIDER_KEY_VARS, *(s for s in secrets if s)}
    return {k: v for k, v in env.items() if k not in banned}


def _present(names: Iterable[str]) -> dict[str, str]:
    return {name: os.environ[name] for name in names if os.environ.get(name)}


def _finish(
    env: dict[str, str],
    extra: Mapping[str, str] | None,
    local_only: bool,
    secrets: Iterable[str],
) -> dict[str, str]:
    env.update(extra or {})
    if local_only:
        env.update(HUB_OFFLINE)
    return without_secrets(env, secrets)


__all__ = [
    "GIT_ENV",
    "GIT_FIXED",
    "GIT_PREFIXES",
    "HUB_OFFLINE",
    "PROVIDER_KEY_VARS",
    "SERVER_ENV",
    "SERVER_ONLINE_ENV",
    "SERVER_PREFIXES",
    "TOOLCHAIN_ENV",
    "command_env",
    "git_env",
    "server_env",
    "without_secrets",
]
