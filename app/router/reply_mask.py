"""A cloud reply with the environment's keys masked, streamed or whole.

The outgoing request is masked (:func:`app.router.calling.mask_request`), so a model
never saw a key; a provider can still send one back (an echo of the request's headers, a
relay that quotes its upstream's error in the reply, a model that learned one). What a
reply says reaches stdout, a gateway client's transcript, the evidence and the audit's
previews, so each secret value of the environment (:func:`secret_env_values`) is masked
in the text, the reasoning and each tool call's arguments before anyone reads them.

A streamed piece is masked of the exact values as it passes: a value split across pieces
is caught by holding back the end of a piece that could begin one (at most a key's
length, and only while it could). The whole reply is masked of those and of each
key-like value's runs in another case or spelling too (:mod:`app.audit.secret_forms`),
which the pieces, passed on as they come, are not looked at for. The masker's shapes
(``sk-…``, ``password = …``) are not applied: a model writing code quotes them on purpose
(a test's fake key), and its diff must apply as written.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

from app.audit.masking import REDACTED, env_pattern, secret_env_values
from app.audit.secret_forms import FRAGMENT, mask_spans, secret_forms
from app.backends.base import ChatResult, Delta, ToolCall, ToolCallDelta


class _Piece:
    """One stream's text (the reply, its reasoning, one tool call's arguments) masked as
    it comes, with the end that could start a secret held back."""

    __slots__ = ("held", "pattern", "values")

    def __init__(self, pattern: re.Pattern[str], values: tuple[str, ...]) -> None:
        self.pattern, self.values, self.held = pattern, values, ""

    def feed(self, text: str) -> str:
        text = self.pattern.sub(REDACTED, self.held + text) if self.held or text else text
        cut = _start_of_secret(text, self.values)
        self.held = text[cut:]
        return text[:cut]

    def flush(self) -> str:
        # what is held is no whole secret (each whole one was masked as it came in)
        held, self.held = self.held, ""
        return held


def _start_of_secret(text: str, values: tuple[str, ...]) -> int:
    """Where the longest end of ``text`` that begins one of ``values`` (and is not all of
    it) starts; ``len(text)`` when no end does."""
    n = len(text)
    cut = n
    for value in values:
        first = value[0]
        at = text.find(first, max(0, n - len(value) + 1))
        while at != -1 and at < cut:
            if value.startswith(text[at:]):
                cut = at
                break
            at = text.find(first, at + 1)
    return cut


class ReplyEnv(NamedTuple):
    """The environment's secret values as a reply is read for them: their pattern, and
    how they begin (their first three characters)."""

    values: tuple[str, ...]
    pattern: re.Pattern[str]
    heads: tuple[str, ...]


def reply_env() -> ReplyEnv | None:
    """The environment's secrets now (None: it holds none, nothing to do)."""
    return _reply_env(secret_env_values())


@lru_cache(maxsize=8)
def _reply_env(values: tuple[str, ...]) -> ReplyEnv | None:
    pattern = env_pattern(values)
    return None if pattern is None else ReplyEnv(values, pattern, _heads(values))


def _heads(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted({v[:3] for v in values}))


def passes(env: ReplyEnv, text: str) -> bool:
    """Whether ``text`` holds no key and no beginning of one: none of the keys' heads in
    it, and it does not end as one begins (a key's first letter alone, ``s``, was in
    nearly every piece)."""
    for head in env.heads:
        if head in text or text.endswith(head[:1]) or text.endswith(head[:2]):
            return False
    return True


def quiet(env: ReplyEnv, item: Delta) -> bool:
    """A delta that passes as it is, with nothing held before it (most of them): no
    masker is made for a reply of such deltas."""
    return not item.reasoning and not item.tool_calls and passes(env, item.text)


def whole_passes(env: ReplyEnv, result: ChatResult) -> bool:
    """A whole reply too short to hold a key's run in another form, and clean."""
    return (
        not result.reasoning
        and not result.tool_calls
        and len(result.text) < FRAGMENT
        and passes(env, result.text)
    )


class ReplyMasker:
    """Masks one call's deltas and its result with the environment as it is now."""

    __slots__ = ("_calls", "_env", "_reasoning", "_text", "count", "pattern", "values")

    def __init__(self, env: ReplyEnv) -> None:
        self._env = env
        self.values, self.pattern = env.values, env.pattern
        self.count = 0
        self._text: _Piece | None = None
        self._reasoning: _Piece | None = None
        self._calls: dict[int, _Piece] = {}

    @classmethod
    def for_environment(cls) -> ReplyMasker | None:
        """A masker, or None when the environment holds no secret (nothing to do)."""
        env = reply_env()
        return None if env is None else cls(env)

    def _clean(self, text: str) -> bool:
        return passes(self._env, text)

    def _piece(self, piece: _Piece | None, text: str) -> tuple[_Piece | None, str]:
        if (piece is None or not piece.held) and self._clean(text):
            return piece, text
        if piece is None:
            piece = _Piece(self.pattern, self.values)
        return piece, piece.feed(text)

    def delta(self, item: Delta) -> Delta:
        if (
            (self._text is None or not self._text.held)
            and (self._reasoning is None or not self._reasoning.held)
            and not self._calls
            and not item.reasoning
            and not item.tool_calls
            and self._clean(item.text)
        ):
            return item  # (most deltas: no key and no beginning of one, nothing held)
        self._text, text = self._piece(self._text, item.text)
        if item.reasoning or self._reasoning is not None:
            self._reasoning, reasoning = self._piece(self._reasoning, item.reasoning)
        else:
            reasoning = item.reasoning
        calls = [self._call(c) for c in item.tool_calls] if item.tool_calls else item.tool_calls
        if text == item.text and reasoning == item.reasoning and calls == item.tool_calls:
            return item
        return item.model_copy(update={"text": text, "reasoning": reasoning, "tool_calls": calls})

    def _call(self, call: ToolCallDelta) -> ToolCallDelta:
        piece, arguments = self._piece(self._calls.get(call.index), call.arguments)
        if piece is not None:
            self._calls[call.index] = piece
        if arguments == call.arguments:
            return call
        return call.model_copy(update={"arguments": arguments})

    def rest(self) -> Delta | None:
        """What is still held back when the stream ends, as one last delta (or None)."""
        if self._text is None and self._reasoning is None and not self._calls:
            return None
        text = self._text.flush() if self._text is not None else ""
        reasoning = self._reasoning.flush() if self._reasoning is not None else ""
        calls = [
            ToolCallDelta(index=i, arguments=held)
            for i, piece in sorted(self._calls.items())
            if (held := piece.flush())
        ]
        if not (text or reasoning or calls):
            return None
        return Delta(text=text, reasoning=reasoning, tool_calls=calls)

    def result(self, result: ChatResult) -> ChatResult:
        """The whole reply masked: what the streamed pieces add up to, and each key-like
        value in another case, spelling or part (:mod:`app.audit.secret_forms`) besides,
        which the pieces, passed on as they come, are not looked at for."""
        text, reasoning = self._whole(result.text), self._whole(result.reasoning)
        calls = [
            c if (a := self._whole(c.arguments)) == c.arguments else _with_arguments(c, a)
            for c in result.tool_calls
        ]
        if not self.count:
            return result
        update = {"text": text, "reasoning": reasoning, "tool_calls": calls}
        return result.model_copy(update={**update, "secrets_masked": self.count})

    def _whole(self, text: str) -> str:
        if not text:
            return text
        if not self._clean(text):
            text, n = self.pattern.subn(REDACTED, text)
            self.count += n
        if len(text) < FRAGMENT:  # (no window fits: nothing of a key's to find)
            return text
        spans = secret_forms(self.values).spans(text)
        self.count += len(spans)
        return mask_spans(text, spans, REDACTED)


def _with_arguments(call: ToolCall, arguments: str) -> ToolCall:
    return call.model_copy(update={"arguments": arguments})
