"""A chat request as Anthropic's Messages API wants it.

* System messages (and GR-012's JSON-only instruction) go into the ``system`` parameter.
* An assistant's calls are ``tool_use`` blocks after its text; ``input`` is the call's
  arguments parsed. Arguments that are not a JSON object (a model's broken call, echoed
  back by a client) are sent as ``{}`` with a text block before the call that quotes
  them: the conversation goes on and the model sees what was written, where refusing
  the request would refuse every later turn of that conversation too.
* ``tool`` messages are ``tool_result`` blocks (``is_error`` kept) in a user turn;
  consecutive results share one turn, and a user message right after them joins it as a
  text block, so turns alternate as the API expects.
* Tools: ``{name, description, input_schema}``. ``tool_choice``: auto → ``auto``,
  required → ``any``, a tool's name → ``tool``, none → ``none``;
  ``parallel_tool_calls=False`` → ``disable_parallel_tool_use``. The API refuses
  ``tool_use``/``tool_result`` blocks in a request that defines no tools, so a history
  with calls and no tools on offer gets the tools it names (any input) with ``none``.
* Headers: of the client's ``passthrough_headers``, ``anthropic-beta`` and
  ``anthropic-version`` go upstream unchanged (the SDK's ``extra_headers`` override its
  own ``anthropic-version``); the API knows no others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.backends.base import ChatRequest, Message, ToolSpec
from app.backends.schema_notes import schema_note
from app.backends.tool_calls import arguments_object, call_texts, tools_text

__all__ = ["PASSTHROUGH_HEADERS", "AnthropicRequest", "anthropic_request"]

#: the client headers this API knows and gets unchanged
PASSTHROUGH_HEADERS = ("anthropic-beta", "anthropic-version")


@dataclass(frozen=True)
class AnthropicRequest:
    system: str
    messages: list[dict[str, Any]]
    #: ``messages.create`` arguments besides model, max_tokens, messages and stream
    params: dict[str, Any] = field(default_factory=dict)
    #: what is sent, as texts to count when the stream reports no usage
    prompt: list[str] = field(default_factory=list)


def anthropic_request(request: ChatRequest) -> AnthropicRequest:
    system = [m.content for m in request.messages if m.role == "system"]
    note = schema_note(request)
    if note is not None:
        system.append(note)
    turns: list[dict[str, Any]] = []
    for m in request.messages:
        if m.role != "system":
            _add(turns, m)
    text = "\n\n".join(system)
    params: dict[str, Any] = {}
    if text:
        params["system"] = text
    if request.stop:
        params["stop_sequences"] = list(request.stop)
    tools = list(request.tools) or _named_in_history(request.messages)
    if tools:
        params["tools"] = [_tool(t) for t in tools]
        choice = _choice(request) if request.tools else {"type": "none"}
        if choice is not None:
            params["tool_choice"] = choice
    headers = {
        k.lower(): v
        for k, v in request.passthrough_headers.items()
        if k.lower() in PASSTHROUGH_HEADERS
    }
    if headers:
        params["extra_headers"] = headers
    prompt = ([text] if text else []) + [m.content for m in request.messages if m.role != "system"]
    prompt += [t for m in request.messages for t in call_texts(m.tool_calls)]
    if request.tools:
        prompt.append(tools_text(request.tools))
    return AnthropicRequest(system=text, messages=turns, params=params, prompt=prompt)


def _add(turns: list[dict[str, Any]], m: Message) -> None:
    last = turns[-1] if turns else None
    # a user turn that holds tool results takes more results and the user's next words
    open_results = (
        last is not None
        and last["role"] == "user"
        and isinstance(last["content"], list)
        and any(b.get("type") == "tool_result" for b in last["content"])
    )
    if m.role == "tool":
        block = _result(m)
        if open_results and last is not None:
            last["content"].append(block)
        else:
            turns.append({"role": "user", "content": [block]})
    elif m.role == "assistant" and m.tool_calls:
        blocks: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
        for call in m.tool_calls:
            value = arguments_object(call.arguments)
            if value is None:
                blocks.append(
                    {
                        "type": "text",
                        "text": f"(The arguments of call {call.id} to {call.name} were not a "
                        f"JSON object and were sent as {{}}: {call.arguments})",
                    }
                )
            blocks.append(
                {"type": "tool_use", "id": call.id, "name": call.name, "input": value or {}}
            )
        turns.append({"role": "assistant", "content": blocks})
    elif m.role == "user" and open_results and last is not None:
        if m.content:
            last["content"].append({"type": "text", "text": m.content})
    else:
        turns.append({"role": m.role, "content": m.content})


def _result(m: Message) -> dict[str, Any]:
    if m.tool_call_id is None:  # answers no call: the model reads it as text
        return {"type": "text", "text": f"Tool result: {m.content}"}
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.tool_call_id}
    if m.content:
        block["content"] = m.content
    if m.is_error:
        block["is_error"] = True
    return block


def _tool(spec: ToolSpec) -> dict[str, Any]:
    schema = spec.parameters if "type" in spec.parameters else {"type": "object", **spec.parameters}
    tool: dict[str, Any] = {"name": spec.name, "input_schema": schema}
    if spec.description:
        tool["description"] = spec.description
    return tool


def _choice(request: ChatRequest) -> dict[str, Any] | None:
    choice, parallel = request.tool_choice, request.parallel_tool_calls
    if choice == "none":
        return {"type": "none"}
    if choice is None and parallel is not False:
        return None  # the API's default: auto, parallel calls allowed
    if choice in (None, "auto"):
        out: dict[str, Any] = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    else:
        out = {"type": "tool", "name": choice}
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


def _named_in_history(messages: list[Message]) -> list[ToolSpec]:
    """The tools a history's calls name, for a request that offers none."""
    return [ToolSpec(name=n) for n in sorted({c.name for m in messages for c in m.tool_calls})]
