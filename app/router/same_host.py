"""Which cloud models share an endpoint: a host that did not answer one of them will not
answer the others during the cooldown.

Pure functions of the policy. A cloud model is reached at its provider's ``base_url``
(:mod:`app.backends.registry`), so two models share an endpoint when their providers'
URLs are the same (DeepSeek's reasoner and chat; a proxy that two providers name); a
provider without one is its own endpoint. The cloud step marks them down together after
a time-out before any reply (:func:`app.router.cloud_step.serve_cloud`): each was waited
on for the client's whole read timeout, and the retry the policy gives a time-out, in
turn (an audit: 8 minutes on one dead host before the local reply).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from app.policy.schema import Policy

__all__ = ["endpoint_of", "host_of", "served_alongside"]


def endpoint_of(policy: Policy, model_id: str) -> str | None:
    """The endpoint a cloud model is reached at: its provider's base URL without a
    trailing slash (``provider:<name>`` when the provider names none); None for a local
    model."""
    provider = policy.model(model_id).provider
    if provider == "local":
        return None
    url = policy.providers[provider].base_url
    return url.rstrip("/") if url else f"provider:{provider}"


def served_alongside(policy: Policy, model_id: str) -> list[str]:
    """The other cloud models reached at ``model_id``'s endpoint, in catalog order."""
    endpoint = endpoint_of(policy, model_id)
    if endpoint is None:
        return []
    target = policy.resolve(model_id)
    return [
        other
        for other in policy.models
        if other != target and endpoint_of(policy, other) == endpoint
    ]


def host_of(endpoint: str) -> str:
    """An endpoint as an audit line names it: ``host[:port]``, never a URL's user part."""
    if endpoint.startswith("provider:"):
        return endpoint.removeprefix("provider:")
    parts = urlsplit(endpoint)
    host = parts.hostname or endpoint
    try:
        port = parts.port
    except ValueError:  # (a port that is no number: the host alone says enough)
        port = None
    return f"{host}:{port}" if port is not None else host
