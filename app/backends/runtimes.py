"""Where each local runtime listens, and which roles run on one: the one definition.

The router's registry and the launcher (``switchyard local``) both ask here, so a URL
set in the settings (``SWITCHYARD_VLLM_URL`` / ``SWITCHYARD_LLAMACPP_SERVER_URL``) means
the same thing to the runtime that is probed, the one that is started and the one the
router calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from app.config import Settings
from app.errors import ConfigError
from app.hosts import PUBLIC_RUNTIME, host_port, public_runtime
from app.policy.schema import Policy

#: the setting that names each runtime's URL, as a message names it
_SETTING = {
    "vllm": "vllm_url (SWITCHYARD_VLLM_URL)",
    "llamacpp_server": "llamacpp_server_url (SWITCHYARD_LLAMACPP_SERVER_URL)",
}


def url_overrides(settings: Settings, policy: Policy) -> dict[str, str]:
    """The runtime URLs the settings set, by runtime id (unset ones left out).

    Each is held to the policy file's rule (GR-009): a cloud provider's host is never a
    local runtime. The policy's ``[runtimes]`` were checked by the loader, and a URL in
    the environment or the config file was not: ``SWITCHYARD_VLLM_URL`` on a provider's
    host would have had the prompt sent there, unmasked, as to a local model. A
    :class:`ConfigError` (exit 2) names the setting."""
    urls = {"vllm": settings.vllm_url, "llamacpp_server": settings.llamacpp_server_url}
    given = {runtime: url for runtime, url in urls.items() if url}
    if given:
        from app.policy.loader import cloud_endpoints

        cloud = cloud_endpoints(policy)
        for runtime, value in given.items():
            for url in value.split(","):
                hp = host_port(url.strip())
                if hp is not None and cloud(hp):
                    raise ConfigError(
                        f"{_SETTING[runtime]}: {hp[0]} is a cloud provider's host: "
                        "it cannot serve a local runtime"
                    )
                if hp is not None and public_runtime(hp, policy.privacy.local_hosts):
                    raise ConfigError(f"{_SETTING[runtime]}: {hp[0]} {PUBLIC_RUNTIME}")
    return given


def resolve_url(policy: Policy, runtime: str, overrides: Mapping[str, str]) -> str | None:
    """The base URL (``.../v1``) of an HTTP runtime: an override wins over the policy's
    ``[runtimes.ID] base_url``; None when neither says."""
    spec = policy.runtimes.get(runtime)
    url = overrides.get(runtime) or (spec.base_url if spec else None)
    return url.rstrip("/") if url else None


def resolve_urls(policy: Policy, runtime: str, overrides: Mapping[str, str]) -> list[str]:
    """Every endpoint of an HTTP runtime: an override (one URL, or several separated by
    commas) wins over the policy's ``base_url`` and ``base_urls``."""
    spec = policy.runtimes.get(runtime)
    given = overrides.get(runtime)
    urls = given.split(",") if given else (spec.urls if spec else [])
    return list(dict.fromkeys(u.strip().rstrip("/") for u in urls if u.strip()))


def runtime_url(policy: Policy, settings: Settings, runtime: str) -> str | None:
    """The base URL the router uses for ``runtime`` under these settings."""
    return resolve_url(policy, runtime, url_overrides(settings, policy))


def api_root(base_url: str) -> str:
    """``http://h:p/v1`` → ``http://h:p`` (where vLLM serves /health)."""
    base = base_url.rstrip("/")
    return base.removesuffix("/v1")


def local_llm_roles(policy: Policy) -> list[str]:
    """The LLM roles whose default model runs on this machine."""
    return [
        rid
        for rid, r in policy.roles.items()
        if r.kind == "llm" and r.locality == "local" and r.default
    ]


def local_names(policy: Policy) -> dict[str, str]:
    """Each name a local model of the catalog is served under (its id, the launcher's
    llama.cpp alias, and its served name, vLLM's), with its catalog id."""
    names: dict[str, str] = {}
    for mid, model in policy.models.items():
        if model.provider == "local":
            names[model.served_name] = mid
            names[mid] = mid
    return names


def lists(models: Iterable[str], model_id: str, served_name: str, known: Mapping[str, str]) -> bool:
    """Whether a server listing ``models`` serves the catalog's ``model_id``: it lists it
    (by its served name or its id), or it lists nothing the catalog knows as another
    model (a server started by hand lists its GGUF's file name: not judged). A server
    listing another catalog model does not: a llama.cpp server answers every request with
    the one model it loaded, whatever the request names (an audit: replies the embedded
    SmolLM2 wrote on a server ``local serve`` made were recorded as qwen2.5-coder-32b)."""
    listed = set(models)
    if not listed or served_name in listed or model_id in listed:
        return True
    return not any(known.get(name, model_id) != model_id for name in listed)


def not_served_keys(policy: Policy, runtime: str, listed: Iterable[str]) -> dict[str, bool]:
    """``runtime:<id>:<model>`` → False for each local model of the catalog that a server
    of ``runtime`` listing ``listed`` does not serve (:func:`lists`): what decide() reads
    in ``RouterState.health``, for the router's probes and ``local status`` alike."""
    names = set(listed)
    known = local_names(policy)
    return {
        f"runtime:{runtime}:{mid}": False
        for mid, model in policy.models.items()
        if model.provider == "local" and not lists(names, mid, model.served_name, known)
    }
