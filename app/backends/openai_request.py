"""A chat request as each OpenAI-compatible server wants it (its ``flavor``).

* structured output (GR-012): vLLM gets ``structured_outputs: {"json": schema}`` (vLLM
  >= 0.10.2; ``structured_field="guided_json"`` for older servers); the llama.cpp server
  gets ``response_format: {"type": "json_object", "schema": schema}`` (it answers 500 to
  ``json_schema``); Ollama gets ``response_format`` ``json_schema``; cloud flavors get
  ``response_format: {"type": "json_object"}`` plus the schema in a system message. The
  router validates the reply either way.
* sampling: ``reasoning_effort`` is sent when the catalog sets it (GPT-5.1), and then no
  temperature (reasoning models refuse one); ``seed`` only to the flavors that honour it.
  OpenAI gets ``max_completion_tokens``, the others ``max_tokens``.
"""

from __future__ import annotations

from typing import Any, Literal, cast

from app.backends.base import ChatRequest
from app.backends.provider_common import json_only_instruction

__all__ = [
    "CLOUD_FLAVORS",
    "Flavor",
    "StructuredField",
    "chat_messages",
    "chat_params",
    "flavor_for",
]

Flavor = Literal["vllm", "llamacpp", "openai", "deepseek", "moonshot", "ollama"]
StructuredField = Literal["structured_outputs", "guided_json"]

CLOUD_FLAVORS: frozenset[str] = frozenset({"openai", "deepseek", "moonshot"})
#: flavors that honour ``seed`` (the cloud ones that don't may reject or ignore it)
_SEED_FLAVORS = frozenset({"vllm", "llamacpp", "ollama", "openai"})
_RUNTIME_FLAVORS: dict[str, Flavor] = {
    "vllm": "vllm",
    "llamacpp_server": "llamacpp",
    "ollama": "ollama",
}


def flavor_for(*, runtime: str | None, provider: str) -> Flavor:
    """The flavor for a catalog model: by its local runtime kind, else by its provider.

    ``runtime`` is a policy ``RuntimeKind`` ("vllm", "llamacpp_server", "ollama") or None
    for a cloud model; ``provider`` is the policy's provider name. An OpenAI-protocol
    provider we have no dialect for is spoken to as plain OpenAI.
    """
    if runtime is not None:
        if runtime not in _RUNTIME_FLAVORS:
            raise ValueError(f"no OpenAI-compatible flavor for runtime {runtime!r}")
        return _RUNTIME_FLAVORS[runtime]
    if provider in ("deepseek", "moonshot"):
        return cast(Flavor, provider)
    return "openai"


def chat_messages(request: ChatRequest, flavor: Flavor) -> list[dict[str, str]]:
    """The request's messages; a cloud flavor asked for JSON gets the schema as a message."""
    messages = [{"role": m.role, "content": m.content} for m in request.messages]
    if request.json_schema is not None and flavor in CLOUD_FLAVORS:
        # After the caller's own system messages, so it is the last word on format.
        at = next((i for i, m in enumerate(messages) if m["role"] != "system"), len(messages))
        messages.insert(
            at, {"role": "system", "content": json_only_instruction(request.json_schema)}
        )
    return messages


def chat_params(
    request: ChatRequest,
    flavor: Flavor,
    *,
    reasoning_effort: str | None,
    structured_field: StructuredField,
) -> dict[str, Any]:
    """The completion call's arguments besides the model, the messages and streaming."""
    params: dict[str, Any] = {}
    if flavor == "openai":
        params["max_completion_tokens"] = request.max_tokens
    else:
        params["max_tokens"] = request.max_tokens
    if reasoning_effort:
        params["reasoning_effort"] = reasoning_effort
    else:
        params["temperature"] = request.temperature
    if request.seed is not None and flavor in _SEED_FLAVORS:
        params["seed"] = request.seed
    if request.stop:
        params["stop"] = list(request.stop)
    if request.json_schema is not None:
        params.update(_structured(request.json_schema, flavor, structured_field))
    return params


def _structured(
    schema: dict[str, Any], flavor: Flavor, structured_field: StructuredField
) -> dict[str, Any]:
    """The fields that constrain the reply to ``schema`` on this flavor (GR-012)."""
    if flavor == "vllm":
        if structured_field == "guided_json":
            return {"extra_body": {"guided_json": schema}}
        return {"extra_body": {"structured_outputs": {"json": schema}}}
    if flavor == "llamacpp":
        return {"response_format": {"type": "json_object", "schema": schema}}
    if flavor == "ollama":
        return {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": schema},
            }
        }
    return {"response_format": {"type": "json_object"}}
