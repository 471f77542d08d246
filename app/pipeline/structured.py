"""Ask a role for a typed answer (GR-012): schema to the backend, validation after.

The backend constrains decoding where it can (grammars, structured-output fields); the
reply is validated against the pydantic model here, with one repair attempt. A second
failure is returned as an error for the caller to turn into a signal, never raised.
"""

from __future__ import annotations

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

    @property
    def ok(self) -> bool:
        return self.value is not None


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
) -> Answer[T]:
    schema = schema_of(model)
    request = ChatRequest(messages=messages, max_tokens=max_tokens, json_schema=schema)
    last: RoutedResult | None = None
    for attempt in range(2):
        try:
            last = await router.complete(role, request, signals, run=run, on_delta=on_delta)
        except RouteFailed as exc:
            return Answer(None, last, str(exc))
        try:
            return Answer(model.model_validate_json(last.text), last)
        except ValidationError as exc:
            problem = _problem(exc)
            if attempt == 1:
                return Answer(None, last, f"{role} reply does not fit {model.__name__}: {problem}")
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
