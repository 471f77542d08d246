"""Ask a role for a typed answer (GR-012): schema to the backend, validation after.

The backend constrains decoding where it can (grammars, structured-output fields); the
reply is validated against the pydantic model here, with one repair attempt. A second
failure is returned as an error for the caller to turn into a signal, never raised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

from app.backends.base import ChatRequest, Message
from app.pipeline.schemas import schema_of
from app.router.service import DeltaHook, RoutedResult, RouteFailed, Router
from app.router.types import Signals

T = TypeVar("T", bound=BaseModel)


@dataclass
class Answer(Generic[T]):
    value: T | None
    result: RoutedResult | None
    error: str | None = None
    #: model calls made (1, or 2 with the repair)
    calls: int = 0
    #: no step could serve (RouteFailed), as opposed to a reply that did not fit
    route_failed: bool = False

    @property
    def ok(self) -> bool:
        return self.value is not None


_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n(.*?)\n\s*```\s*$", re.DOTALL)


def unfence(text: str) -> str:
    """The JSON inside a Markdown code fence, which small models add unasked."""
    m = _FENCE.match(text)
    return m.group(1) if m else text


def _problem(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(root)"
    return f"{where}: {first['msg']}"


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
) -> Answer[T]:
    """RouteRefused (and RouteStaysLocal with ``cloud_only``) reach the caller; a route
    that failed on every step comes back as an Answer with ``route_failed``."""
    schema = schema_of(model)
    request = ChatRequest(messages=messages, max_tokens=max_tokens, json_schema=schema)
    if temperature is not None:
        request = request.model_copy(update={"temperature": temperature})
    last: RoutedResult | None = None
    for attempt in range(2):
        try:
            last = await router.complete(
                role, request, signals, run=run, on_delta=on_delta, cloud_only=cloud_only
            )
        except RouteFailed as exc:
            return Answer(None, last, str(exc), calls=attempt, route_failed=True)
        try:
            return Answer(model.model_validate_json(unfence(last.text)), last, calls=attempt + 1)
        except ValidationError as exc:
            problem = _problem(exc)
            if attempt == 1:
                return Answer(
                    None,
                    last,
                    f"{role} reply does not fit {model.__name__}: {problem}",
                    calls=2,
                )
            request = request.model_copy(
                update={
                    "messages": [
                        *messages,
                        Message(role="assistant", content=last.text[:2000]),
                        Message(
                            role="user",
                            content=f"That reply was rejected ({problem}). Reply again with "
                            "JSON only, matching the schema exactly.",
                        ),
                    ]
                }
            )
    return Answer(None, last, "unreachable")
