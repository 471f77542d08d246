"""Each protocol's request, read into the router's one request type (pure).

OpenAI Chat Completions, OpenAI Responses and Anthropic Messages all become a
:class:`~app.backends.base.ChatRequest`: system prompts, text, tool definitions, the
assistant's earlier tool calls and the tool results, sampling, stop sequences, the output
cap and structured output. What cannot be carried (images, audio, server-side tools) is
refused with a clear 400 naming it, never silently dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from app.backends.base import ChatRequest, Message, ToolCall, ToolSpec
from app.backends.jsonschema_lint import schema_problem
from app.gateway.errors import GatewayError, Protocol
from app.gateway.ignored import ignored_fields
from app.remembered import Digests

#: the output cap when a client sends none (OpenAI's APIs allow that), until the role is
#: known: then the role's own ``max_output_tokens`` (``Inbound.cap_unset``)
DEFAULT_MAX_TOKENS = 4096


@dataclass
class Inbound:
    protocol: Protocol
    model: str
    request: ChatRequest
    stream: bool
    #: chat: ``stream_options.include_usage``
    include_usage: bool = False
    #: responses: the conversation this one continues
    previous_response_id: str | None = None
    #: responses: the request's ``instructions`` lead its messages as one system message
    #: (not part of the conversation a later ``previous_response_id`` continues)
    instructions: str | None = None
    #: the schema's name (chat's ``json_schema.name``), for the response
    schema_name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: the fields carried to no backend, named in the audit line and a reply header
    #: (:mod:`app.gateway.ignored`)
    ignored: list[str] = field(default_factory=list)
    #: the request's digests of its long texts, made once for its count (Messages), its
    #: hash and its masking (app.remembered.Digests; it holds the texts: one request)
    digests: Digests = field(default_factory=Digests, compare=False, repr=False)
    #: the client sent no output cap (aider sends none): the role's ``max_output_tokens``
    #: is sent, not 4,096 for every role (a Tutor's question ran 3m20s of output on the
    #: embedded model), and the reservation is priced on it; a cap the client did send
    #: bounds a structured reply's repair too (flow.run_request)
    cap_unset: bool = False


def _default_cap(fields: dict[str, Any]) -> bool:
    """Whether the client sent no output cap (0 or none): the default is put in its place
    until the role's is known."""
    if fields["max_tokens"]:
        return False
    fields["max_tokens"] = DEFAULT_MAX_TOKENS
    return True


#: a request field's path as the gateway's messages name one (``max_tokens``,
#: ``messages[0].content``, ``tools[1].function.name``, ``response_format.json_schema``)
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\[[0-9]+\]|\.[A-Za-z0-9_$-]+)*")


def bad(message: str, param: str | None = None) -> GatewayError:
    """A 400 for the client's request. Every message names the field at fault first
    (``max_tokens: expected a positive integer``): that path is the error's ``param``
    (an OpenAI client reads it; it was always null), unless ``param`` says otherwise. A
    message about the whole body (``request: …``) names no field."""
    if param is None:
        head, sep, _ = message.partition(": ")
        if sep and head != "request" and _FIELD.fullmatch(head):
            param = head
    return GatewayError(400, "invalid_request", message, param=param)


def _obj(body: Any, where: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad(f"{where}: expected a JSON object")
    return body


#: deeper than this, a body is refused before anything recursive (a schema check, a JSON
#: encoder on the way to a backend) can run out of stack on it
MAX_DEPTH = 100
_SURROGATE = re.compile("[\ud800-\udfff]")


def unsendable(body: Any) -> str | None:
    """Where ``body`` holds what no model can be sent, or None (pure).

    JSON may escape a lone UTF-16 surrogate (``"\\ud800"``); Python keeps it in a str,
    and it fails only when a backend encodes the prompt, which the client then hears as
    a retryable 503. Every string is checked here, so the 400 names the field. The walk
    is iterative and keeps each node's parent instead of its path, so a deep or wide body
    costs one step per node.
    """
    stack: list[tuple[Any, tuple[Any, ...] | None, int]] = [(body, None, 0)]
    while stack:
        node, at, depth = stack.pop()
        if isinstance(node, str):
            if _SURROGATE.search(node):
                return f"{_path(at)}: invalid text (a lone surrogate)"
            continue
        if isinstance(node, dict):
            items: list[tuple[Any, Any]] = list(node.items())
        elif isinstance(node, list):
            items = list(enumerate(node))
        else:
            continue
        if depth >= MAX_DEPTH:
            return f"{_path(at)}: nested more than {MAX_DEPTH} deep"
        for key, value in reversed(items):  # popped in document order
            if isinstance(key, str) and _SURROGATE.search(key):
                return f"{_path(at)}: invalid text in a key (a lone surrogate)"
            stack.append((value, (at, key), depth + 1))
    return None


def _path(at: tuple[Any, ...] | None) -> str:
    keys: list[Any] = []
    while at is not None:
        at, key = at
        keys.append(key)
    out = ""
    for key in reversed(keys[-12:]):  # a deep path is named by its first steps
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return (out + ("…" if len(keys) > 12 else "")) or "request"


def _sendable(body: Any) -> None:
    problem = unsendable(body)
    if problem:
        raise bad(problem)


def model_of(body: dict[str, Any]) -> str:
    """The model id asked for: a role, an alias or ``ROLE+escalate`` (every endpoint that
    names one reads it so)."""
    model = body.get("model")
    if model is None or model == "":
        raise bad("model: required")
    if not isinstance(model, str):
        # (it said "required" of a model given as a number)
        raise bad(f"model: expected a string (a role such as implementer), got {model!r}")
    return model


def _text_of(content: Any, where: str) -> str:
    """A message's content as text: a string, or parts of type text / input_text /
    output_text. Anything else (an image, audio, a file) is refused by name."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad(f"{where}: content must be a string or a list of parts")
    return joined(_part_text(part, f"{where}[{i}]") for i, part in enumerate(content))


def joined(parts: Iterable[str | None]) -> str:
    """Text parts as one text, a line break between each two, as vLLM's chat parsing
    joins them (run together, "Hello" and "world" were "Helloworld"); None is no part."""
    return "\n".join(p for p in parts if p is not None)


def _part_text(raw: Any, where: str) -> str | None:
    """One content part's text (None for a model's own reasoning, not sent back as
    prompt)."""
    part = _obj(raw, where)
    kind = part.get("type")
    if kind in ("text", "input_text", "output_text"):
        text = part.get("text")
        if not isinstance(text, str):
            raise bad(f"{where}.text: expected a string")
        return text
    if kind in ("thinking", "redacted_thinking", "reasoning"):
        return None
    raise bad(
        f"{where}: content of type {kind!r} is not supported by Switchyard's "
        "gateway (text, tool calls and tool results are)"
    )


def _flag(body: dict[str, Any], key: str, where: str = "") -> bool:
    """A boolean field: ``"stream": "false"`` is a client's mistake, not a yes."""
    value = body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad(f"{where}{key}: expected true or false, got {_shown(value)}")
    return value


def _maybe_flag(body: dict[str, Any], key: str) -> bool | None:
    """A boolean field that may be left out: None when it is (or is null)."""
    return None if body.get(key) is None else _flag(body, key)


def _list(body: dict[str, Any], key: str, where: str = "") -> list[Any]:
    """A list field that may be left out (null: an empty list)."""
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad(f"{where}{key}: expected a list, got {_shown(value)}")
    return value


def _string(body: dict[str, Any], key: str) -> str | None:
    """A string field that may be left out. Another type is a 400, not a field left out:
    ``"previous_response_id": 5`` was served without the conversation it named, and
    ``"instructions": 5`` without its lead, both with a 200 (a user audit)."""
    value = body.get(key)
    if value is None or isinstance(value, str):
        return value
    raise bad(f"{key}: expected a string, got {_shown(value)}")


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def _arguments(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value if value is not None else {}, separators=(",", ":"))


def _int(body: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise bad(f"{key}: expected a positive integer")
        return value
    return None


def _build(fields: dict[str, Any]) -> ChatRequest:
    try:
        return ChatRequest.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "request"
        raise bad(f"{where}: {first['msg']}") from None


def _sampling(body: dict[str, Any], fields: dict[str, Any], *, hottest: float = 2) -> None:
    """``temperature`` (0 to ``hottest``: 2 on OpenAI's APIs, 1 on Anthropic's, each
    refusing more), ``top_p`` and ``seed``, each as sent. One not sent is None, carried
    to the backend as none sent (the server's default applies): ChatRequest's own
    temperature, 0.2, is the product roles' choice, not the client's."""
    fields["temperature"] = _number(body, "temperature", 0, hottest)
    fields["top_p"] = _number(body, "top_p", 0, 1)
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        # (dropped silently: the client asked for a reply it could reproduce)
        raise bad(f"seed: expected an integer, got {_shown(seed)}")
    fields["seed"] = seed


def _number(body: dict[str, Any], key: str, least: float, most: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not least <= value <= most:
        raise bad(f"{key}: expected a number from {least:g} to {most:g}, got {_shown(value)}")
    return float(value)


def _sound(schema: dict[str, Any], where: str) -> dict[str, Any]:
    """The client's schema, or a 400 naming its first mistake (a misspelt type made the
    grammar and the check after accept anything)."""
    problem = schema_problem(schema, where)
    if problem:
        raise bad(problem)
    return schema


def _stop(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return list(value)
    raise bad(f"{where}: expected a string or a list of strings")


# ── tools and the choice among them (every protocol) ─────────────────────────────────────


#: ToolSpec's limit (the providers allow 64 or 128)
TOOL_NAME_MAX = 128


def _tool(
    raw: dict[str, Any], where: str, *, schema_key: str = "parameters", schema: Any = None
) -> ToolSpec:
    """One function tool; ``where`` is the object that holds its name, description and
    schema (``schema`` given: a schema of ours, not the client's)."""
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise bad(f"{where}.name: a tool needs a name")
    if len(name) > TOOL_NAME_MAX:
        raise bad(f"{where}.name: at most {TOOL_NAME_MAX} characters, got {len(name)}")
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        raise bad(f"{where}.description: expected a string, got {_shown(description)}")
    if schema is None:
        given = raw.get(schema_key)
        if given is None:
            schema = {"type": "object"}
        elif not isinstance(given, dict):
            raise bad(f"{where}.{schema_key}: expected a JSON schema object")
        else:
            # linted as response_format's is: a misspelt type would let the model's
            # arguments be anything, with nothing after to say so
            schema = _sound(given, f"{where}.{schema_key}")
    try:
        return ToolSpec(name=name, description=description or "", parameters=schema)
    except ValidationError as exc:  # the checks above should leave nothing for this
        first = exc.errors()[0]
        field_name = ".".join(str(p) for p in first["loc"])
        raise bad(f"{where}.{field_name}: {first['msg']}") from None


def _checked_choice(choice: str | None, tools: list[ToolSpec], where: str) -> str | None:
    """``choice`` if the tools can honour it: a call required of no tools, or of a tool
    not offered, would otherwise be answered with text as if the client had not asked."""
    if choice is None or choice in ("auto", "none"):
        return choice
    if not tools:
        raise bad(f"{where}: {choice!r} needs tools, and the request offers none")
    if choice != "required" and choice not in {t.name for t in tools}:
        raise bad(f"{where}: no tool named {choice!r} in tools")
    return choice


# ── OpenAI Chat Completions ──────────────────────────────────────────────────────────────


def parse_chat(body: Any) -> Inbound:
    body = _obj(body, "request")
    _sendable(body)
    model = model_of(body)
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise bad("messages: a non-empty list is required")
    messages = [_chat_message(m, f"messages[{i}]") for i, m in enumerate(raw_messages)]
    n = body.get("n")
    if n is not None and (n != 1 or isinstance(n, bool)):
        # each choice would be a routed request of its own (its cost, its audit line):
        # answering one of n silently would look like a model that ignored the rest
        raise bad(f"n: Switchyard's gateway serves one choice per request (got {n!r})")
    fields: dict[str, Any] = {
        "messages": messages,
        "max_tokens": _int(body, "max_completion_tokens", "max_tokens"),
        "stop": _stop(body.get("stop"), "stop"),
    }
    _sampling(body, fields)
    for penalty in ("presence_penalty", "frequency_penalty"):
        fields[penalty] = _number(body, penalty, -2, 2)
    tools = _list(body, "tools")
    fields["tools"] = [_chat_tool(t, f"tools[{i}]") for i, t in enumerate(tools)]
    where, choice = _chat_tool_choice(body.get("tool_choice"))
    fields["tool_choice"] = _checked_choice(choice, fields["tools"], where)
    # (a value of another type was dropped silently, as stream_options' was)
    parallel = _maybe_flag(body, "parallel_tool_calls")
    if parallel is not None:
        fields["parallel_tool_calls"] = parallel
    schema_name: str | None = None
    fmt = body.get("response_format")
    if fmt is not None:
        fmt = _obj(fmt, "response_format")
        if fmt.get("type") == "json_schema":
            spec = _obj(fmt.get("json_schema"), "response_format.json_schema")
            fields["json_schema"] = _schema(spec.get("schema"), "response_format.json_schema")
            schema_name = spec.get("name")
            if schema_name is not None and not isinstance(schema_name, str):
                raise bad(
                    "response_format.json_schema.name: expected a string, "
                    f"got {_shown(schema_name)}"
                )
        elif fmt.get("type") == "json_object":
            fields["json_schema"] = {"type": "object"}
        elif fmt.get("type") != "text":
            raise bad(f"response_format.type: {fmt.get('type')!r} is not supported")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        options = _obj(options, "stream_options")
        include_usage = _flag(options, "include_usage", "stream_options.")
    unset = _default_cap(fields)
    return Inbound(
        protocol="chat",
        model=model,
        request=_build(fields),
        cap_unset=unset,
        stream=_flag(body, "stream"),
        include_usage=include_usage,
        schema_name=schema_name,
        ignored=ignored_fields("chat", body),
    )


def _chat_message(raw: Any, where: str) -> Message:
    m = _obj(raw, where)
    role = m.get("role")
    if role in ("system", "developer", "user") and m.get("content") is None:
        # (a user turn with no content was answered as an empty prompt)
        raise bad(f"{where}.content: required for a {role} message")
    if role in ("system", "developer"):
        return Message(role="system", content=_text_of(m.get("content"), f"{where}.content"))
    if role == "user":
        return Message(role="user", content=_text_of(m.get("content"), f"{where}.content"))
    if role == "assistant":
        calls = []
        for i, c in enumerate(_list(m, "tool_calls", f"{where}.")):
            c = _obj(c, f"{where}.tool_calls[{i}]")
            fn = _obj(c.get("function"), f"{where}.tool_calls[{i}].function")
            if not isinstance(fn.get("name"), str):
                raise bad(f"{where}.tool_calls[{i}].function.name: required")
            calls.append(
                ToolCall(
                    id=str(c.get("id") or f"call_{i}"),
                    name=fn["name"],
                    arguments=_arguments(fn.get("arguments")),
                )
            )
        text = _text_of(m.get("content"), f"{where}.content")
        # DeepSeek's and Kimi's thinking modes want a call turn's reasoning back
        thought = m.get("reasoning_content") or m.get("reasoning")
        return Message(
            role="assistant",
            content=text,
            tool_calls=calls,
            reasoning=thought if isinstance(thought, str) else "",
        )
    if role == "tool":
        call_id = m.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise bad(f"{where}.tool_call_id: required for a tool message")
        return Message(
            role="tool",
            content=_text_of(m.get("content"), f"{where}.content"),
            tool_call_id=call_id,
        )
    raise bad(f"{where}.role: {role!r} is not system, developer, user, assistant or tool")


def _chat_tool(raw: Any, where: str) -> ToolSpec:
    t = _obj(raw, where)
    if t.get("type", "function") != "function":
        raise bad(f"{where}.type: only function tools are supported, got {t.get('type')!r}")
    return _tool(_obj(t.get("function"), f"{where}.function"), f"{where}.function")


def _chat_tool_choice(value: Any) -> tuple[str, str | None]:
    """The choice, and where to say what is wrong with it."""
    if value is None:
        return "tool_choice", None
    if value in ("auto", "none", "required"):
        return "tool_choice", str(value)
    if isinstance(value, dict):
        fn = value.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return "tool_choice.function.name", str(fn["name"])
    raise bad("tool_choice: expected auto, none, required or a named function")


# ── OpenAI Responses ─────────────────────────────────────────────────────────────────────


def parse_responses(body: Any) -> Inbound:
    body = _obj(body, "request")
    _sendable(body)
    model = model_of(body)
    messages: list[Message] = []
    instructions = _string(body, "instructions")
    if instructions:
        messages.append(Message(role="system", content=instructions))
    raw = body.get("input")
    if isinstance(raw, str):
        messages.append(Message(role="user", content=raw))
    elif isinstance(raw, list):
        messages += _response_items(raw)
    else:
        raise bad("input: expected a string or a list of items")
    fields: dict[str, Any] = {
        "messages": messages,
        "max_tokens": _int(body, "max_output_tokens"),
    }
    _sampling(body, fields)
    tools, custom, namespaces, dropped = _response_tools(_list(body, "tools"))
    extra: dict[str, Any] = {
        "custom_tools": custom,
        "namespaces": namespaces,
        "dropped_tools": dropped,
    }
    fields["tools"] = tools
    where, choice = _responses_tool_choice(body.get("tool_choice"))
    fields["tool_choice"] = _checked_choice(choice, tools, where)
    parallel = _maybe_flag(body, "parallel_tool_calls")
    if parallel is not None:
        fields["parallel_tool_calls"] = parallel
    schema = _text_format(body.get("text"))
    if schema is not None:
        fields["json_schema"] = schema
    previous = _string(body, "previous_response_id")
    store = body.get("store")
    if store is not None and not isinstance(store, bool):
        raise bad(f"store: expected true or false, got {_shown(store)}")
    extra["store"] = store is not False
    extra["echo"] = _responses_echo(body, store is not False)
    unset = _default_cap(fields)
    return Inbound(
        protocol="responses",
        model=model,
        request=_build(fields),
        cap_unset=unset,
        stream=_flag(body, "stream"),
        previous_response_id=previous,
        instructions=instructions or None,
        extra=extra,
        ignored=ignored_fields("responses", body),
    )


def _responses_echo(body: dict[str, Any], store: bool) -> dict[str, Any]:
    """The request's fields a Responses reply echoes, as sent (they were fixed values: a
    client that read back its ``instructions`` or ``store`` was told what it did not ask)."""
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    parallel = body.get("parallel_tool_calls")
    return {
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "tools": body.get("tools") or [],
        "tool_choice": body.get("tool_choice") or "auto",
        "parallel_tool_calls": parallel if isinstance(parallel, bool) else True,
        "text": {"format": fmt or {"type": "text"}},
        "store": store,
    }


def _responses_tool_choice(value: Any) -> tuple[str, str | None]:
    if value is None:
        return "tool_choice", None
    if value in ("auto", "none", "required"):
        return "tool_choice", str(value)
    if isinstance(value, dict):
        kind = value.get("type")
        if kind in ("function", "custom"):
            name = value.get("name")
            if not isinstance(name, str) or not name:
                raise bad("tool_choice.name: required when tool_choice names a tool")
            return "tool_choice.name", name
        # a hosted tool (web search, …) is never offered to the model (see _response_tools)
        raise bad(
            f"tool_choice.type: {kind!r} is not supported by Switchyard's gateway "
            "(auto, none, required, or a function or custom tool by name)"
        )
    raise bad("tool_choice: expected auto, none, required or a named function")


def _text_format(text: Any) -> dict[str, Any] | None:
    """``text.format`` as the schema the reply must fit (None: plain text), refused as
    Chat's ``response_format`` is when it cannot be honoured."""
    fmt = _format(text, "text")
    if fmt is None:
        return None
    kind = fmt.get("type")
    if kind == "json_schema":
        return _schema(fmt.get("schema"), "text.format")
    if kind == "json_object":
        return {"type": "object"}
    if kind != "text":
        raise bad(f"text.format.type: {kind!r} is not supported")
    return None


#: a custom (freeform) tool becomes a function with one string argument
CUSTOM_PARAMETERS = {
    "type": "object",
    "properties": {"input": {"type": "string"}},
    "required": ["input"],
}


def _response_tools(
    raw: Any,
) -> tuple[list[ToolSpec], set[str], dict[str, str], list[str]]:
    """Function tools (namespaces flattened), custom tools as one-string functions, and
    the hosted tools only OpenAI can run (web search, file search, …): those are left out
    and named in the request's audit line, since a client like Codex offers them on
    every request and no local or other cloud model can run them."""
    if not isinstance(raw, list):
        raise bad("tools: expected a list")
    tools: list[ToolSpec] = []
    custom: set[str] = set()
    namespaces: dict[str, str] = {}
    dropped: list[str] = []
    for i, t in enumerate(raw):
        t = _obj(t, f"tools[{i}]")
        kind = t.get("type")
        where = f"tools[{i}]"
        if kind == "function":
            tools.append(_tool(t, where))
        elif kind == "namespace":
            ns = str(t.get("name") or "")
            inner_tools = t.get("tools") or []
            if not isinstance(inner_tools, list):
                raise bad(f"{where}.tools: expected a list")
            for j, inner in enumerate(inner_tools):
                inner = _obj(inner, f"{where}.tools[{j}]")
                if inner.get("type", "function") != "function":
                    dropped.append(f"{ns}.{inner.get('name')}")
                    continue
                spec = _tool(inner, f"{where}.tools[{j}]")
                tools.append(spec)
                namespaces[spec.name] = ns
        elif kind == "custom":
            spec = _tool(t, where, schema=CUSTOM_PARAMETERS)
            tools.append(spec)
            custom.add(spec.name)
        else:
            dropped.append(str(kind))
    return tools, custom, namespaces, dropped


def _with_calls(message: Message) -> bool:
    return message.role == "assistant" and bool(message.tool_calls)


def _response_items(items: list[Any]) -> list[Message]:
    out: list[Message] = []
    pending: list[ToolCall] = []
    reasoning: list[str] = []

    def flush() -> None:
        if pending:
            thought = "\n".join(r for r in reasoning if r)
            last = out[-1] if out else None
            if last is not None and last.role == "assistant" and not last.tool_calls:
                # the turn's text and its calls are one assistant message (Codex sends
                # them as two items): two assistant messages in a row are refused by chat
                # templates that want the roles to alternate (Mistral's; an audit)
                both = "\n".join(r for r in (last.reasoning, thought) if r)
                out[-1] = last.model_copy(update={"tool_calls": list(pending), "reasoning": both})
            else:
                out.append(Message(role="assistant", tool_calls=list(pending), reasoning=thought))
            pending.clear()
            reasoning.clear()

    for i, raw in enumerate(items):
        item = _obj(raw, f"input[{i}]")
        kind = item.get("type", "message")
        if kind == "custom_tool_call":
            pending.append(
                ToolCall(
                    id=str(item.get("call_id") or item.get("id") or f"call_{i}"),
                    name=str(item.get("name") or ""),
                    arguments=json.dumps({"input": str(item.get("input") or "")}),
                )
            )
            continue
        if kind == "function_call":
            pending.append(
                ToolCall(
                    id=str(item.get("call_id") or item.get("id") or f"call_{i}"),
                    name=str(item.get("name") or ""),
                    arguments=_arguments(item.get("arguments")),
                )
            )
            continue
        flush()
        if kind in ("function_call_output", "custom_tool_call_output"):
            output = item.get("output")
            text = output if isinstance(output, str) else _text_of(output, f"input[{i}].output")
            out.append(Message(role="tool", content=text, tool_call_id=str(item.get("call_id"))))
        elif kind == "message":
            role = item.get("role")
            if role in ("system", "developer", "user") and item.get("content") is None:
                raise bad(f"input[{i}].content: required for a {role} message")
            text = _text_of(item.get("content"), f"input[{i}].content")
            if role in ("system", "developer"):
                out.append(Message(role="system", content=text))
            elif role == "assistant" and out and _with_calls(out[-1]):
                # the text after the turn's calls: the same one message (a chat message
                # holds its text and its calls apart, the text first)
                before = out[-1].content
                joined = f"{before}\n\n{text}" if before and text else before or text
                out[-1] = out[-1].model_copy(update={"content": joined})
            elif role in ("user", "assistant"):
                out.append(Message(role=role, content=text))
            else:
                raise bad(f"input[{i}].role: {role!r} is not system, developer, user or assistant")
        elif kind == "reasoning":
            # not prompt, but a thinking model wants its call turn's reasoning back
            summary = _list(item, "summary", f"input[{i}].")
            reasoning.extend(str(p.get("text") or "") for p in summary if isinstance(p, dict))
        else:
            raise bad(f"input[{i}].type: {kind!r} is not supported by Switchyard's gateway")
    flush()
    return out


# ── Anthropic Messages ───────────────────────────────────────────────────────────────────


def parse_messages(body: Any) -> Inbound:
    body = _obj(body, "request")
    model = model_of(body)
    max_tokens = _int(body, "max_tokens")
    if max_tokens is None:
        raise bad("max_tokens: required")
    fields = _messages_fields(body)
    fields["max_tokens"] = max_tokens
    fields["stop"] = _stop(body.get("stop_sequences"), "stop_sequences")
    _sampling(body, fields, hottest=1)
    schema = _output_format(body)
    if schema is not None:
        fields["json_schema"] = schema
    if body.get("mcp_servers"):
        # Refused, not named: the client relies on the API to connect them and run their
        # tools, as it does its server tools (refused below); no backend here can, and
        # the model would answer without tools it was promised.
        raise bad(
            "mcp_servers: MCP servers run by the API are not supported by Switchyard's "
            "gateway (give the model their tools as custom tools)"
        )
    return Inbound(
        protocol="messages",
        model=model,
        request=_build(fields),
        stream=_flag(body, "stream"),
        ignored=ignored_fields("messages", body),
    )


def _output_format(body: dict[str, Any]) -> dict[str, Any] | None:
    """``output_config.format`` (Anthropic's structured outputs) as the schema the reply
    must fit, as Chat's ``response_format`` and Responses' ``text.format`` are: the
    schema check and its one repair (GR-012) run on it. It was ignored, and a reply that
    did not fit went back with a 200."""
    fmt = _format(body.get("output_config"), "output_config")
    if fmt is None:
        return None
    kind = fmt.get("type")
    if kind != "json_schema":
        raise bad(f"output_config.format.type: {kind!r} is not supported (json_schema is)")
    return _schema(fmt.get("schema"), "output_config.format")


def _format(parent: Any, where: str) -> dict[str, Any] | None:
    """``parent.format`` (Responses' ``text``, Messages' ``output_config``) as an object,
    None when either is absent."""
    if parent is None:
        return None
    fmt = _obj(parent, where).get("format")
    return None if fmt is None else _obj(fmt, f"{where}.format")


def _schema(value: Any, where: str) -> dict[str, Any]:
    """``where.schema``: a JSON schema object, linted (:func:`_sound`), or a 400."""
    if not isinstance(value, dict):
        raise bad(f"{where}.schema: expected a JSON schema object")
    return _sound(value, f"{where}.schema")


def parse_count_tokens(body: Any) -> ChatRequest:
    """What ``/v1/messages/count_tokens`` counts: the prompt :func:`parse_messages` reads
    from the same body (system, turns, tools), so both say the same number."""
    body = _obj(body, "request")
    return _build({**_messages_fields(body), "max_tokens": DEFAULT_MAX_TOKENS})


def _messages_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The prompt of a Messages body: system and turns, tools, the tool choice."""
    _sendable(body)
    fields: dict[str, Any] = {"messages": anthropic_messages(body)}
    raw_tools = body.get("tools")
    if raw_tools is None:
        raw_tools = []
    if not isinstance(raw_tools, list):
        raise bad("tools: expected a list")
    tools: list[ToolSpec] = []
    for i, t in enumerate(raw_tools):
        t = _obj(t, f"tools[{i}]")
        if t.get("type") not in (None, "custom"):
            raise bad(
                f"tools[{i}]: server tool {t.get('type')!r} is not supported by Switchyard's "
                "gateway (custom tools are)"
            )
        tools.append(_tool(t, f"tools[{i}]", schema_key="input_schema"))
    fields["tools"] = tools
    choice = body.get("tool_choice")
    if choice is not None:
        choice = _obj(choice, "tool_choice")
        kind = choice.get("type")
        if kind == "tool":
            name = choice.get("name")
            if not isinstance(name, str) or not name:
                raise bad("tool_choice.name: required when tool_choice.type is 'tool'")
            fields["tool_choice"] = _checked_choice(name, tools, "tool_choice.name")
        elif kind in ("auto", "any", "none"):
            mapped = {"auto": "auto", "any": "required", "none": "none"}[kind]
            if mapped == "required" and not tools:
                raise bad("tool_choice.type: 'any' needs tools, and the request offers none")
            fields["tool_choice"] = mapped
        else:
            raise bad(f"tool_choice.type: {kind!r} is not auto, any, tool or none")
        if _flag(choice, "disable_parallel_tool_use", "tool_choice."):
            fields["parallel_tool_calls"] = False
    return fields


def anthropic_messages(body: dict[str, Any]) -> list[Message]:
    """The system prompt and the turns (also what ``count_tokens`` counts)."""
    out: list[Message] = []
    # (``"system": 0`` was dropped silently; an empty one adds no message, as before)
    system = body.get("system")
    lead = _text_of(system, "system") if system is not None else ""
    if lead:
        out.append(Message(role="system", content=lead))
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise bad("messages: a non-empty list is required")
    for i, m in enumerate(raw):
        m = _obj(m, f"messages[{i}]")
        role, content, where = m.get("role"), m.get("content"), f"messages[{i}]"
        if role == "system":  # Claude Code sends mid-conversation system turns too
            out.append(Message(role="system", content=_text_of(content, f"{where}.content")))
            continue
        if role not in ("user", "assistant"):
            raise bad(f"{where}.role: {role!r} is not user, assistant or system")
        if isinstance(content, str):
            out.append(Message(role=role, content=content))
            continue
        if not isinstance(content, list):
            raise bad(f"{where}.content: expected a string or a list of blocks")
        text: list[str | None] = []
        thinking: list[str] = []
        calls: list[ToolCall] = []
        for j, block in enumerate(content):
            block = _obj(block, f"{where}.content[{j}]")
            kind = block.get("type")
            if kind == "tool_use" and role == "assistant":
                calls.append(
                    ToolCall(
                        id=str(block.get("id") or f"toolu_{j}"),
                        name=str(block.get("name") or ""),
                        arguments=_arguments(block.get("input")),
                    )
                )
            elif kind == "tool_result" and role == "user":
                if any(t is not None for t in text):  # text before a result stays before it
                    out.append(Message(role="user", content=joined(text)))
                text = []
                result = block.get("content")
                out.append(
                    Message(
                        role="tool",
                        content=_text_of(result, f"{where}.content[{j}].content"),
                        tool_call_id=str(block.get("tool_use_id")),
                        is_error=bool(block.get("is_error")),
                    )
                )
            elif kind == "thinking" and role == "assistant":
                thinking.append(str(block.get("thinking") or ""))
            else:
                text.append(_part_text(block, f"{where}.content[{j}]"))
        if role == "assistant":
            out.append(
                Message(
                    role="assistant",
                    content=joined(text),
                    tool_calls=calls,
                    reasoning="".join(thinking),
                )
            )
        elif any(t is not None for t in text):
            out.append(Message(role="user", content=joined(text)))
    return out
