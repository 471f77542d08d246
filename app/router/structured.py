"""GR-012's one owner: a machine-read reply is validated here, and repaired here, once.

Backends constrain decoding (vLLM's structured-output fields, llama.cpp grammars) and
return what the model wrote, cut off or not; they never validate and never repair. The
router never repeats a reply because of its content. This module is the only place that
reads a structured reply: it parses and validates it with the caller's parser, and when
the reply does not fit, makes the policy's single repair attempt (``retries.bad_output``,
at most one): the same conversation, the rejected reply, exactly what was wrong, and more
room when the reply was cut off (never past a cap the caller set: ``hard_cap``). The
repair is one ``repair`` audit line. A second failure comes back as an :class:`Answer`
with an error: a signal for the caller (a failed loop, a dropped synthesis), never a
crash.

The repair goes where the first reply came from: a local reply is repaired locally (no
trigger is read again, so a local request never turns into a cloud one by being
repaired); a cloud reply by the same cloud model, which is a second cloud call: it is
asked for again unless the human approved the model for the session, and it has its own
budget reservation.

Worst case, one structured call makes :data:`MAX_STRUCTURED_GENERATIONS` generations,
whatever its parser: the JSON parsers below, and plain-text formats that plug in as a
:data:`Parser` of their own (the Implementer's edit blocks, whose parser also checks that
every edit lands, so its one repair carries the applier's refusal).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from app.backends.base import ChatRequest, Message, tools_callable
from app.backends.jsonschema_check import errors as schema_errors
from app.remembered import Digests
from app.router.service import DeltaHook, RoutedResult, RouteFailed, Router, request_tokens
from app.router.types import Signals

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

#: generations one structured call can make, at most: the reply and one repair (GR-012)
MAX_STRUCTURED_GENERATIONS = 2
#: characters of a rejected reply shown back to the model in the repair turn
REJECTED_REPLY_CHARS = 2000
#: a reply cut off at max_tokens is repaired with this much more room
TRUNCATION_GROWTH = 2
#: tokens kept free in the window when the repair grows max_tokens (the repair note)
REPAIR_MARGIN_TOKENS = 64

_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n(.*?)\n\s*```\s*$", re.DOTALL)


class ReplyRejected(Exception):
    """A parser's verdict on a reply: the problems the repair turn tells the model."""

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.problem = "; ".join(self.problems) or "rejected"
        super().__init__(self.problem)


#: text → value, or :class:`ReplyRejected` (a pydantic ValidationError is read too)
Parser = Callable[[str], T]


@dataclass
class Answer(Generic[T]):
    value: T | None
    result: RoutedResult | None
    error: str | None = None
    #: generations made: 1, or 2 with the repair (0 when no step could serve)
    calls: int = 0
    #: no step could serve (RouteFailed), as opposed to a reply that did not fit
    route_failed: bool = False
    #: ... because the prompt was too long for each of them (RouteFailed.too_long)
    too_long: bool = False
    #: the route's failure itself, when no step could serve (a ``BadRequest`` is the
    #: caller's to fix: a gateway client is told so, as a 400)
    failure: RouteFailed | None = None
    #: the reply as the model wrote it (the last one)
    text: str = ""
    #: every problem found, reply by reply (empty when the first reply fitted)
    problems: list[str] = field(default_factory=list)
    #: no value because the last reply was rejected (not because no step could serve)
    rejected: bool = False
    #: the rejected first reply, when a repair followed (its call was paid for too)
    earlier: RoutedResult | None = None
    #: the last reply was cut off at the caller's own cap (``hard_cap``), which no
    #: repair may pass: a reply too long for the cap, not a wrong one
    cut: bool = False

    @property
    def ok(self) -> bool:
        return self.value is not None

    def billed(self) -> RoutedResult | None:
        """The last reply with the tokens, cost and time of every generation made for it
        (the rejected first reply's too, when a repair followed), as the ledger and the
        ``call`` lines count them: what a caller that reports usage must say."""
        first, last = self.earlier, self.result
        if first is None or last is None:
            return last
        return replace(
            last,
            tokens_in=first.tokens_in + last.tokens_in,
            tokens_out=first.tokens_out + last.tokens_out,
            tokens_cached=first.tokens_cached + last.tokens_cached,
            tokens_cache_write=first.tokens_cache_write + last.tokens_cache_write,
            cost_usd=first.cost_usd + last.cost_usd,
            latency_ms=first.latency_ms + last.latency_ms,
            # two prompts' tokens: no one count of the prompt stands for them
            usage_counted_locally=False,
        )


def unfence(text: str) -> str:
    """The JSON inside a Markdown code fence, which small models add unasked."""
    m = _FENCE.match(text)
    return m.group(1) if m else text


def pydantic_parser(model: type[M], check: Callable[[M], list[str]] | None = None) -> Parser[M]:
    """Parse JSON into ``model``; ``check`` adds the caller's own rules (e.g. citations)."""

    def parse(text: str) -> M:
        value = model.model_validate_json(unfence(text))
        if check is not None and (problems := check(value)):
            raise ReplyRejected("; ".join(problems))
        return value

    return parse


def schema_parser(schema: dict[str, Any]) -> Parser[Any]:
    """Parse JSON and check it against a raw JSON schema (``ask --schema``, the gateway)."""

    def parse(text: str) -> Any:
        try:
            value = json.loads(unfence(text))
        except json.JSONDecodeError as exc:
            raise ReplyRejected(f"$: not valid JSON ({exc.msg} at char {exc.pos})") from None
        found = schema_errors(value, schema)
        if found:
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            raise ReplyRejected(f"{found[0]}{more}")
        return value

    return parse


def problems_of(exc: Exception) -> list[str]:
    """What was wrong with a reply, one line per problem."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        return [f"{where}: {first['msg']}"]
    if isinstance(exc, ReplyRejected):
        return exc.problems
    return [str(exc)]


def _cut(result: RoutedResult) -> bool:
    """Whether ``result`` was cut off at its max_tokens (``max_tokens`` is how the
    Anthropic backend passes it on)."""
    return result.finish_reason in ("length", "max_tokens")


def _judge(parse: Parser[T], result: RoutedResult) -> tuple[T | None, list[str]]:
    try:
        return parse(result.text), []
    except (ReplyRejected, ValidationError, ValueError) as exc:
        problems = problems_of(exc)
    if _cut(result):
        problems = [f"cut off at {result.tokens_out} tokens (max_tokens)", *problems]
    return None, problems


def repair_request(
    request: ChatRequest,
    rejected: RoutedResult,
    problems: list[str],
    *,
    room: int | None = None,
    hint: str = "",
    most: int | None = None,
) -> ChatRequest:
    """The one repair turn: the rejected reply, what was wrong, and room to fix it.

    A reply cut off at ``max_tokens`` gets :data:`TRUNCATION_GROWTH` times the room, as
    far as ``room`` (what the serving window leaves after the prompt) allows. ``most``:
    what the caller's own cap leaves (``complete_structured``'s ``hard_cap``), never
    passed.
    """
    cut = _cut(rejected)
    listing = problems[0] if len(problems) == 1 else "\n" + "\n".join(f"- {p}" for p in problems)
    note = (
        f"That reply was rejected: {listing}\nReply again with the complete answer only, "
        + ("shorter, " if cut else "")
        + "fixing exactly "
        + ("that" if len(problems) == 1 else "these problems")
        + (", matching the JSON schema." if request.json_schema else ".")
        + (f" {hint}" if hint else "")
    )
    max_tokens = request.max_tokens
    if cut:
        grown = max_tokens * TRUNCATION_GROWTH
        max_tokens = max(max_tokens, min(grown, room) if room is not None else grown)
    if most is not None:
        max_tokens = min(max_tokens, most)
    seed = None if request.seed is None else request.seed + 1
    return request.model_copy(
        update={
            "messages": [
                *request.messages,
                Message(role="assistant", content=rejected.text[:REJECTED_REPLY_CHARS]),
                Message(role="user", content=note),
            ],
            "seed": seed,
            "max_tokens": max_tokens,
        }
    )


def _room(
    router: Router, served: RoutedResult, request: ChatRequest, digests: Digests
) -> int | None:
    """Tokens the serving window leaves for a reply to ``request`` (None: unknown)."""
    d = served.decision
    if d.local is not None and not served.escalated:
        window = d.local.context_window
    elif served.model in router.policy.models:
        window = router.policy.model(served.model).context_window
    else:
        return None
    return (
        max(0, window - request_tokens(request, digests) - REPAIR_MARGIN_TOKENS) if window else None
    )


def repairs_allowed(router: Router) -> int:
    """The policy's repair attempts: ``retries.bad_output.max_retries`` (the loader allows
    0 or 1; clamped here too, so no policy can raise the worst case)."""
    rule = router.policy.retries.get("bad_output")
    return min(1, rule.max_retries) if rule is not None else 1


#: told when a reply is rejected, before the repair: (reply, its problems, 1 or 2)
OnRejected = Callable[[RoutedResult, list[str], int], Awaitable[None]]


async def complete_structured(
    router: Router,
    role: str,
    request: ChatRequest,
    parse: Parser[T],
    signals: Signals | None = None,
    *,
    run: str | None = None,
    on_delta: DeltaHook | None = None,
    cloud_only: bool = False,
    on_rejected: OnRejected | None = None,
    repair_hint: str = "",
    expected: str = "the schema",
    digests: Digests | None = None,
    hard_cap: bool = False,
) -> Answer[T]:
    """Route ``request`` for ``role`` and return the parsed reply, or why there is none.

    RouteRefused (and RouteStaysLocal with ``cloud_only``) reach the caller; a route that
    failed on every step comes back as an Answer with ``route_failed``. ``on_rejected``
    lets a caller record a rejection in its own terms (before the repair is made);
    ``expected`` names what the reply had to be, for the error. ``digests``: the
    request's (app.remembered.Digests), shared by the request and its repair, which
    sends the same messages again.

    ``hard_cap``: ``request.max_tokens`` is the caller's own limit (a gateway client's
    ``max_tokens``): the repair is held to it as the first reply was, never given more
    room, and a reply cut off at it comes back with ``cut`` instead of a repair. (What
    the first reply "left" of the cap is not the measure: a reasoning model's
    ``tokens_out`` counts its thinking, sized apart from the cap, and a repair refused for
    it turned into a 502 the SDKs retry, each a paid reasoning call: a review.)
    """
    digests = Digests() if digests is None else digests
    try:
        first = await router.complete(
            role,
            request,
            signals,
            run=run,
            on_delta=on_delta,
            cloud_only=cloud_only,
            digests=digests,
        )
    except RouteFailed as exc:
        return Answer(
            None, None, str(exc), calls=0, route_failed=True, too_long=exc.too_long, failure=exc
        )
    if first.tool_calls and tools_callable(request):
        # a reply that calls a tool is not the final answer: the schema is for the text
        # the model answers with when it calls none (OpenAI's structured output with
        # tools); it was checked, failed, repaired and refused with a 502 on every turn
        # of Codex's --output-schema (an audit with the real client)
        return Answer(None, first, calls=1, text=first.text)
    value, found = _judge(parse, first)
    if not found:
        return Answer(value, first, calls=1, text=first.text)
    seen = list(found)
    if on_rejected is not None:
        await on_rejected(first, found, 1)
    problem = "; ".join(found)
    # the caller's cap, which the repair may not pass (None: no cap of the caller's)
    most = request.max_tokens if hard_cap else None
    cut = hard_cap and _cut(first)
    if repairs_allowed(router) < 1 or cut:
        # A reply cut off at the caller's cap cannot be repaired within it: a repair would
        # have no more room (less: the rejected reply and the note join the prompt), and
        # more would pass the cap the client set. It is the caller's to release as cut off.
        error = f"{role} reply does not fit {expected}: {problem}"
        return Answer(None, first, error, 1, text=first.text, problems=seen, rejected=True, cut=cut)
    room = _room(router, first, request, digests)
    retry = repair_request(request, first, found, room=room, hint=repair_hint, most=most)
    await router.audit.append(
        "repair",
        session=router.session,
        run=run,
        role=role,
        to=first.model,
        reason_codes=["GR012_REPAIR"],
        values={
            "problems": [p[:200] for p in found[:5]],
            "finish_reason": first.finish_reason,
            "max_tokens": retry.max_tokens,
            "escalated": first.escalated,
        },
        detail=f"{first.model}: reply rejected ({problem[:160]}); one repair attempt (GR-012)",
    )
    try:
        second = await router.repeat(first, retry, run=run, on_delta=on_delta, digests=digests)
    except RouteFailed as exc:
        return Answer(None, first, str(exc), calls=1, text=first.text, problems=seen)
    value, found = _judge(parse, second)
    if not found:
        return Answer(value, second, calls=2, text=second.text, problems=seen, earlier=first)
    seen += found
    if on_rejected is not None:
        await on_rejected(second, found, 2)
    return Answer(
        None,
        second,
        f"{role} reply does not fit {expected} after one repair (GR-012): {'; '.join(found)}",
        calls=2,
        text=second.text,
        problems=seen,
        rejected=True,
        earlier=first,
        # (the repair cut off at the caller's cap too)
        cut=hard_cap and _cut(second),
    )
