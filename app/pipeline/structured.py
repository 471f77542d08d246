"""Ask a role for a typed answer (GR-012): the pipeline's way into the one owner.

The schema of a pydantic model goes to the backend for constrained decoding; validation
and the single repair are :func:`app.router.structured.complete_structured`'s. A second
failure comes back as an :class:`Answer` with an error for the caller to turn into a
signal, never raised.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel

from app.backends.base import ChatRequest, Message
from app.pipeline.schemas import schema_of
from app.router.service import DeltaHook, Router
from app.router.structured import Answer, Parser, complete_structured, pydantic_parser, unfence
from app.router.types import Signals

__all__ = ["Answer", "ask_model", "ask_parsed", "typed_request", "unfence"]

T = TypeVar("T", bound=BaseModel)
V = TypeVar("V")


async def ask_model(
    router: Router,
    role: str,
    model: type[T],
    messages: list[Message],
    signals: Signals,
    *,
    run: str | None = None,
    max_tokens: int = 768,
    on_delta: DeltaHook | None = None,
    cloud_only: bool = False,
    temperature: float | None = None,
    check: Callable[[T], list[str]] | None = None,
) -> Answer[T]:
    """RouteRefused (and RouteStaysLocal with ``cloud_only``) reach the caller; a route
    that failed on every step comes back as an Answer with ``route_failed``. ``check``
    adds the caller's own rules to the schema's: its problems are part of the one repair.
    """
    request = typed_request(model, messages, max_tokens)
    if temperature is not None:
        request = request.model_copy(update={"temperature": temperature})
    return await complete_structured(
        router,
        role,
        request,
        pydantic_parser(model, check),
        signals,
        run=run,
        on_delta=on_delta,
        cloud_only=cloud_only,
        expected=model.__name__,
    )


def typed_request(model: type[BaseModel], messages: list[Message], max_tokens: int) -> ChatRequest:
    """The request :func:`ask_model` sends for ``model`` (its schema for constrained
    decoding): what a decision about sending it reads (its prompt, output cap, schema)."""
    return ChatRequest(messages=messages, max_tokens=max_tokens, json_schema=schema_of(model))


async def ask_parsed(
    router: Router,
    role: str,
    parse: Parser[V],
    messages: list[Message],
    signals: Signals,
    *,
    expected: str,
    grammar: str | None = None,
    repair_hint: str = "",
    run: str | None = None,
    max_tokens: int = 768,
    on_delta: DeltaHook | None = None,
) -> Answer[V]:
    """A reply in a plain-text format of its own (the Implementer's edits), read by
    ``parse``: no JSON schema is sent, ``grammar`` constrains local decoding where the
    backend can, and the one repair is the owner's, as for every structured reply."""
    request = ChatRequest(messages=messages, max_tokens=max_tokens, grammar=grammar)
    return await complete_structured(
        router,
        role,
        request,
        parse,
        signals,
        run=run,
        on_delta=on_delta,
        repair_hint=repair_hint,
        expected=expected,
    )
