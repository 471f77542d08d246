"""What ``switchyard local status`` reports: each HTTP runtime of the local chain probed
once, the in-process runtime's readiness, and which runtime would serve each local role.

The runtimes' URLs and the local_only switch come from the same functions the router
uses (:mod:`app.backends.runtimes`, :mod:`app.backends.local_only`), so the status says
what a session would see.
"""

from __future__ import annotations

from pydantic import Field

from app.audit.masking import mask_text
from app.backends import llamacpp
from app.backends.base import Frozen
from app.backends.http import make_client
from app.backends.local_only import effective_local_only
from app.backends.machine import LOCAL_EXTRA_HINT
from app.backends.probe import PROBE_TIMEOUT_S, EndpointStatus, probe_endpoint
from app.backends.runtimes import (
    lists,
    local_llm_roles,
    local_names,
    not_served_keys,
    resolve_urls,
    url_overrides,
)
from app.config import Settings
from app.policy.schema import Policy


class InprocessStatus(Frozen):
    runtime: str = llamacpp.RUNTIME
    available: bool
    model: str
    gguf: str | None
    context_window: int | None
    llama_cpp_installed: bool
    detail: str = ""


class RoleStatus(Frozen):
    role: str
    model: str
    served_name: str
    chain: list[str]
    #: the first runtime of the chain that can serve now (None: nothing can)
    serving: str | None
    #: per HTTP runtime: is the role's model among the ones it lists
    listed: dict[str, bool] = Field(default_factory=dict)


class LocalStatus(Frozen):
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


def probe_local_endpoints(
    policy: Policy, settings: Settings, *, timeout: float = PROBE_TIMEOUT_S
) -> list[EndpointStatus]:
    """Every endpoint of each HTTP runtime of the local chain, probed once: a runtime's
    several URLs (``base_urls``, or a comma-separated override) each, as the router's
    pool serves from any of them (the whole comma-joined text was probed as one URL, and
    a runtime with ``base_urls`` alone was not listed at all)."""
    local_only = effective_local_only(policy, settings)
    found: list[EndpointStatus] = []
    named = policy.named_local_hosts()
    overrides = url_overrides(settings, policy)
    with make_client(local_only=local_only, timeout=timeout, named=named) as client:
        for runtime in policy.local_chain.order:
            kind = policy.runtimes[runtime].kind if runtime in policy.runtimes else runtime
            if kind == "llamacpp_inprocess":
                continue
            for url in resolve_urls(policy, runtime, overrides):
                found.append(
                    probe_endpoint(
                        runtime, url, local_only=local_only, timeout=timeout, client=client
                    )
                )
    return found


def by_runtime(endpoints: list[EndpointStatus]) -> dict[str, EndpointStatus]:
    """Each runtime's endpoint that speaks for it: the first that is up, else its first."""
    out: dict[str, EndpointStatus] = {}
    for ep in endpoints:
        if ep.runtime not in out or (ep.up and not out[ep.runtime].up):
            out[ep.runtime] = ep
    return out


def probe_local_chain(
    policy: Policy, settings: Settings, *, timeout: float = PROBE_TIMEOUT_S
) -> dict[str, EndpointStatus]:
    """Each HTTP runtime of the local chain that has a URL, by runtime id: up when any of
    its endpoints answers (see :func:`by_runtime`)."""
    return by_runtime(probe_local_endpoints(policy, settings, timeout=timeout))


def role_status(
    policy: Policy,
    role: str,
    endpoints: dict[str, EndpointStatus],
    inproc: InprocessStatus,
) -> RoleStatus:
    """Who would serve ``role`` now: the first runtime of the chain that is up."""
    model_id = policy.resolve(policy.roles[role].default or "")
    model = policy.models[model_id]
    listed = {
        rt: (model.served_name in ep.models or model_id in ep.models)
        for rt, ep in endpoints.items()
        if ep.up
    }
    serving = None
    known = local_names(policy)
    for runtime in policy.local_chain.order:
        ep = endpoints.get(runtime)
        if ep is not None and ep.up and lists(ep.models, model_id, model.served_name, known):
            serving = runtime
            break
        if runtime == llamacpp.RUNTIME and inproc.available:
            serving = runtime
            break
    return RoleStatus(
        role=role,
        model=model_id,
        served_name=model.served_name,
        chain=list(policy.local_chain.order),
        serving=serving,
        listed=listed,
    )


def chain_health(
    policy: Policy, endpoints: dict[str, EndpointStatus], inproc: InprocessStatus
) -> tuple[dict[str, bool], dict[str, int]]:
    """What these probes mean to :func:`app.router.decide.decide`: each runtime of the
    local chain that is not up, as ``RouterState.health`` marks it (``runtime:<id>``), and
    the embedded model's real window. The router's own probes (the backend registry) give
    a session the same picture: no URL or no answer is down, the in-process runtime is up
    when its GGUF and llama-cpp-python are there."""
    health: dict[str, bool] = {}
    windows: dict[str, int] = {}
    for runtime in policy.local_chain.order:
        spec = policy.runtimes.get(runtime)
        if spec is not None and spec.kind == "llamacpp_inprocess":
            up = inproc.available
            if up and inproc.context_window and spec.model:
                windows[policy.resolve(spec.model)] = inproc.context_window
        else:
            endpoint = endpoints.get(runtime)
            up = spec is not None and endpoint is not None and endpoint.up
        if not up:
            health[f"runtime:{runtime}"] = False
        elif endpoint is not None:  # (the router's rule: app.backends.registry)
            health.update(not_served_keys(policy, runtime, endpoint.models))
    return health, windows


def local_status(
    policy: Policy, settings: Settings, *, timeout: float = PROBE_TIMEOUT_S
) -> LocalStatus:
    """Probe every HTTP runtime of the local chain once, and say who would serve each role."""
    found = probe_local_endpoints(policy, settings, timeout=timeout)
    endpoints = by_runtime(found)
    inproc = inprocess_status(policy)
    roles = [role_status(policy, rid, endpoints, inproc) for rid in local_llm_roles(policy)]
    # a URL's password masked as every line the product writes masks it (it was printed)
    shown = [ep.model_copy(update={"base_url": mask_text(ep.base_url)[0]}) for ep in found]
    return LocalStatus(endpoints=shown, inprocess=inproc, roles=roles)
