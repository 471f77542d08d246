"""A chat request as each OpenAI-compatible server wants it (its ``flavor``).

* structured output (GR-012): vLLM gets ``structured_outputs: {"json": schema}`` (vLLM
  >= 0.10.2; ``structured_field="guided_json"`` for older servers); the llama.cpp server
  gets ``response_format: {"type": "json_object", "schema": schema}`` (it answers 500 to
  ``json_schema``); Ollama gets ``response_format`` ``json_schema``; cloud flavors get
  ``response_format: {"type": "json_object"}`` plus the schema in a system message. The
  router validates the reply either way.
* sampling: ``reasoning_effort`` is sent when the catalog sets it (GPT-5.1), and then no
  temperature or ``top_p`` (reasoning models refuse them); otherwise each is sent when the
  request has one (a gateway client that sent none gets the server's default, not ours),
  and so are ``presence_penalty`` and ``frequency_penalty``;
  ``seed`` only to the flavors that honour it.
  OpenAI gets ``max_completion_tokens``, the others ``max_tokens``. A reasoning model's
  cap is the reply's room plus its thinking budget (``reasoning_tokens``, the policy's
  ``[generation]`` per effort): OpenAI counts the reasoning in it, so a 256-token reply
  cap alone would starve the thinking.
* a prefill (a final assistant turn with text, to be continued): vLLM gets
  ``continue_final_message`` and ``add_generation_prompt: false`` (:func:`_prefilled`).
* tools: function ``tools``; an assistant's calls as ``tool_calls`` (content null when it
  said nothing else); a result as a ``tool`` message with its ``tool_call_id`` (a result
  marked ``is_error`` starts "Error: ", the protocol having no flag for it; one naming
  no call goes as a user message). DeepSeek's and Kimi's thinking modes refuse a turn of
  calls sent back without the reasoning that led to it: there an assistant turn with
  calls carries its :attr:`Message.reasoning` as ``reasoning_content`` (always on
  DeepSeek, whose error is a missing field; on Kimi when there is some).
  ``tool_choice`` and ``parallel_tool_calls`` are sent
  only with tools (OpenAI refuses them otherwise), and only where the server takes them:

  ==========  ===============================================================================
  flavor      tool_choice
  ==========  ===============================================================================
  openai,     auto / none / required / ``{"type": "function", "function": {"name": …}}``;
  vllm,       ``parallel_tool_calls`` too (not DeepSeek)
  deepseek
  llamacpp    auto / none / required (the server reads a named choice as auto): a named
              choice is ``required`` with only that tool on offer; ``parallel_tool_calls``
  moonshot    auto / none (Kimi refuses a forced choice): required or a named tool is
              ``auto``, the named tool alone on offer, and a system message that says to
              call it
  ollama      none of it (ignored): ``none`` sends no tools; required or a named tool is
              a system message, the named tool alone on offer
  ==========  ===============================================================================
"""

from __future__ import annotations

import json
from typing import Any, Literal, cast

from app.backends.base import ChatRequest, Message, ToolSpec, tools_callable
from app.backends.schema_notes import schema_note

__all__ = [
    "CLOUD_FLAVORS",
    "Flavor",
    "StructuredField",
    "chat_messages",
    "chat_params",
    "flavor_for",
    "prompt_texts",
]

Flavor = Literal["vllm", "llamacpp", "openai", "deepseek", "moonshot", "ollama"]
StructuredField = Literal["structured_outputs", "guided_json"]

CLOUD_FLAVORS: frozenset[str] = frozenset({"openai", "deepseek", "moonshot"})
#: flavors that honour ``seed`` (the cloud ones that don't may reject or ignore it)
_SEED_FLAVORS = frozenset({"vllm", "llamacpp", "ollama", "openai"})
#: flavors that take a forced tool_choice (required, a named function)
_FORCING_FLAVORS = frozenset({"openai", "vllm", "llamacpp", "deepseek"})
#: flavors that take ``parallel_tool_calls``
_PARALLEL_FLAVORS = frozenset({"openai", "vllm", "llamacpp"})
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


def chat_messages(request: ChatRequest, flavor: Flavor) -> list[dict[str, Any]]:
    """The request's messages; a cloud flavor asked for JSON gets the schema as a message,
    and a flavor that cannot force a tool call is told to make one."""
    messages = [_message(m, flavor) for m in request.messages]
    notes: list[str] = []
    note = schema_note(request)  # (None when a system message of the caller's says it)
    if note is not None and tools_callable(request):
        # a reply may call a tool first: the schema is the final answer's (told, and
        # checked by the structured owner), not a constraint on every reply
        notes.append(note)
    elif note is not None and flavor in CLOUD_FLAVORS:
        notes.append(note)
    forced = _forced_note(request, flavor)
    if forced:
        notes.append(forced)
    # After the caller's own system messages, so they are the last word on format.
    at = next((i for i, m in enumerate(messages) if m["role"] != "system"), len(messages))
    messages[at:at] = [{"role": "system", "content": note} for note in notes]
    return messages


def prompt_texts(messages: list[dict[str, Any]], params: dict[str, Any]) -> list[str]:
    """What is sent, as texts to count when the server reports no usage."""
    texts = [str(m.get("content") or "") for m in messages]
    for m in messages:
        for call in m.get("tool_calls", []):
            texts.append(f"{call['function']['name']} {call['function']['arguments']}")
    if params.get("tools"):
        texts.append(json.dumps(params["tools"], separators=(",", ":")))
    return texts


def _message(m: Message, flavor: Flavor) -> dict[str, Any]:
    if m.role == "tool":
        content = f"Error: {m.content}" if m.is_error else m.content
        if m.tool_call_id is None:
            return {"role": "user", "content": f"Tool result: {content}"}
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": content}
    if m.role == "assistant" and m.tool_calls:
        turn: dict[str, Any] = {
            "role": "assistant",
            "content": m.content or None,
            "tool_calls": [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in m.tool_calls
            ],
        }
        if flavor == "deepseek" or (flavor == "moonshot" and m.reasoning):
            turn["reasoning_content"] = m.reasoning
        return turn
    return {"role": m.role, "content": m.content}


def _forced_note(request: ChatRequest, flavor: Flavor) -> str | None:
    """For a flavor that cannot force a call: the instruction that asks for one."""
    choice = request.tool_choice
    if not request.tools or flavor in _FORCING_FLAVORS or choice in (None, "auto", "none"):
        return None
    if choice == "required":
        return "Reply by calling one or more of the tools; do not answer in text."
    return f"Reply by calling the tool {choice}; do not answer in text."


def chat_params(
    request: ChatRequest,
    flavor: Flavor,
    *,
    reasoning_effort: str | None,
    structured_field: StructuredField,
    reasoning_tokens: int = 0,
) -> dict[str, Any]:
    """The completion call's arguments besides the model, the messages and streaming."""
    params: dict[str, Any] = {}
    room = request.max_tokens + (reasoning_tokens if reasoning_effort else 0)
    if flavor == "openai":
        params["max_completion_tokens"] = room
    else:
        params["max_tokens"] = room
    if reasoning_effort:
        # (reasoning models refuse sampling fields, the penalties too: a client's
        # explicit presence_penalty 0 made every escalation to GPT-5.1 a 400, a review)
        params["reasoning_effort"] = reasoning_effort
    else:
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.top_p is not None:
            params["top_p"] = request.top_p
        for penalty in ("presence_penalty", "frequency_penalty"):
            if (value := getattr(request, penalty)) is not None:
                params[penalty] = value
    if request.seed is not None and flavor in _SEED_FLAVORS:
        params["seed"] = request.seed
    if request.stop and not reasoning_effort:
        # (reasoning models answer 400 to stop as well: the reply then runs past it,
        # where every escalation of a client's request with one to GPT-5.1 failed)
        params["stop"] = list(request.stop)
    if request.json_schema is not None and not tools_callable(request):
        # (with tools, a constraint would hold every reply to the schema, and no tool
        # could be called: Codex's --output-schema sends both on each turn, and every
        # turn failed, an audit with the real client)
        params.update(_structured(request.json_schema, flavor, structured_field))
    if flavor == "vllm" and _prefilled(request):
        extra = params.setdefault("extra_body", {})
        extra.update(continue_final_message=True, add_generation_prompt=False)
    params.update(_tool_params(request, flavor))
    return params


def _prefilled(request: ChatRequest) -> bool:
    """Whether the request ends in an assistant turn the model is to continue (a prefill:
    Anthropic's API continues it, and Claude Code and Chat clients send one).

    vLLM must be told, or its template closes the turn and starts another:
    ``continue_final_message`` and no ``add_generation_prompt``. llama.cpp's server
    continues a final assistant message by itself (unless started with
    ``--no-prefill-assistant``); Ollama and the cloud flavors are sent it as it is (they
    have no such field)."""
    last = request.messages[-1] if request.messages else None
    if last is None or last.role != "assistant":
        return False
    return bool(last.content) and not last.tool_calls


def _tool_params(request: ChatRequest, flavor: Flavor) -> dict[str, Any]:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls`` as this flavor takes them."""
    choice, tools = request.tool_choice, list(request.tools)
    if not tools or (flavor == "ollama" and choice == "none"):
        return {}
    named = choice not in (None, "auto", "none", "required")
    if named and flavor in ("llamacpp", "moonshot", "ollama"):
        # the server cannot be told which tool: it is offered that one alone
        tools = [t for t in tools if t.name == choice] or tools
    params: dict[str, Any] = {"tools": [_tool(t) for t in tools]}
    if choice is not None and flavor != "ollama":
        params["tool_choice"] = _choice(choice, flavor)
    if request.parallel_tool_calls is not None and flavor in _PARALLEL_FLAVORS:
        params["parallel_tool_calls"] = request.parallel_tool_calls
    return params


def _choice(choice: str, flavor: Flavor) -> str | dict[str, Any]:
    if choice in ("auto", "none"):
        return choice
    if flavor == "moonshot":
        return "auto"  # Kimi refuses a forced choice; the system message asks instead
    if choice == "required" or flavor == "llamacpp":
        return "required"  # llama.cpp: the named tool is the only one on offer
    return {"type": "function", "function": {"name": choice}}


def _tool(spec: ToolSpec) -> dict[str, Any]:
    function: dict[str, Any] = {"name": spec.name, "parameters": spec.parameters}
    if spec.description:
        function["description"] = spec.description
    return {"type": "function", "function": function}


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
