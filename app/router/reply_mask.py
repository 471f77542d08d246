"""A cloud reply with the environment's keys masked, streamed or whole.

The outgoing request is masked (:func:`app.router.calling.mask_request`), so a model
never saw a key; a provider can still send one back (an echo of the request's headers, a
relay that quotes its upstream's error in the reply, a model that learned one). What a
reply says reaches stdout, a gateway client's transcript, the evidence and the audit's
previews, so each secret value of the environment (:func:`secret_env_values`) is masked
in the text, the reasoning and each tool call's arguments before anyone reads them.

A streamed piece is masked of the exact values as it passes: a value split across pieces
is caught by holding back the end of a piece that could begin one (at most a key's
length, and only while it could). Each key-like value's runs in another case or spelling
(:mod:`app.audit.secret_forms`: upper-cased, escaped, base64) are masked too: a piece's
end made of the characters such a run holds (its last word, mostly, and never more than
the longest spelling) is held back until the run ends, so a run cut across pieces is seen
whole (an upper-cased key streamed in pieces of four reached the client, an audit). A
part's held end waits for its own part (or the stream's end), whatever other part comes
meanwhile. The whole reply is masked the same way (the evidence, the audit's previews),
and the pieces add up to it. The masker's shapes
(``sk-…``, ``password = …``) are not applied: a model writing code quotes them on purpose
(a test's fake key), and its diff must apply as written.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

from app.audit.masking import REDACTED, env_pattern, secret_env_values
from app.audit.secret_forms import FRAGMENT, SecretForms, join_spans, mask_spans, secret_forms
from app.backends.base import ChatResult, Delta, ToolCall, ToolCallDelta


class _Piece:
    """One stream's text (the reply, its reasoning, one tool call's arguments) masked as
    it comes, with the end that could start a secret held back."""

    __slots__ = ("env", "held")

    def __init__(self, env: ReplyEnv) -> None:
        self.env, self.held = env, ""

    def feed(self, text: str) -> str:
        env = self.env
        text = self.held + text
        if exact_clean(env, text):  # (most pieces: no key and no beginning of one)
            cut = len(text)
        else:
            text = env.pattern.sub(REDACTED, text)
            cut = _start_of_secret(text, env.values)
        forms = env.forms
        if forms is None:
            self.held = text[cut:]
            return text[:cut]
        # A run of a key's other forms not found yet goes on past the text's end: it lies
        # in the run of its characters the text ends with (its last word, mostly), and
        # within the longest spelling's length of the end. That much is held back.
        cut = min(cut, max(len(text.rstrip(forms.alphabet)), len(text) - forms.reach))
        assert forms.long_run is not None
        if forms.long_run.search(text) is None:
            out = text[:cut]
        else:
            # a run found across the cut is held back whole: each as found (none longer
            # than a spelling), not as joined, so that runs glued end to end (a key
            # repeated) are passed on masked one by one, and the hold stays bounded
            spans = forms.spans(text, join=False)
            moved = True
            while moved:
                moved = False
                for start, end in spans:
                    if start < cut < end:
                        cut, moved = start, True
            before = join_spans([s for s in spans if s[1] <= cut])
            out = mask_spans(text[:cut], before, REDACTED)
        self.held = text[cut:]
        return out

    def flush(self) -> str:
        # each whole key was masked as it came in; what is held may be a run of another
        # form of one that the stream's end ended
        held, self.held = self.held, ""
        forms = self.env.forms
        if forms is None or forms.long_run is None or not forms.long_run.search(held):
            return held
        return mask_spans(held, forms.spans(held), REDACTED)


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


#: a delta held back whole (the caller passes nothing on for it)
_HELD = Delta()


class ReplyEnv(NamedTuple):
    """The environment's secret values as a reply is read for them: their pattern, how
    they begin (their first three characters), and their other forms (None: no value is
    key-like)."""

    values: tuple[str, ...]
    pattern: re.Pattern[str]
    #: any key's first three characters, and the ends of one or two that begin a key
    heads: re.Pattern[str]
    starts: tuple[str, ...]
    forms: SecretForms | None


def reply_env() -> ReplyEnv | None:
    """The environment's secrets now (None: it holds none, nothing to do)."""
    return _reply_env(secret_env_values())


@lru_cache(maxsize=8)
def _reply_env(values: tuple[str, ...]) -> ReplyEnv | None:
    pattern = env_pattern(values)
    if pattern is None:
        return None
    forms = secret_forms(values)
    heads = sorted({v[:3] for v in values})
    return ReplyEnv(
        values,
        pattern,
        re.compile("|".join(re.escape(h) for h in heads)),
        tuple(sorted({h[:1] for h in heads} | {h[:2] for h in heads})),
        forms if forms.long_run else None,
    )


def passes(env: ReplyEnv, text: str) -> bool:
    """Whether ``text`` holds no key and no beginning of one: none of the keys' heads in
    it, and it does not end as one begins (a key's first letter alone, ``s``, was in
    nearly every piece); nor a run of a key's other forms, nor an end that may begin one
    (a word at the end: the next piece may go on with it)."""
    if not exact_clean(env, text):
        return False
    forms = env.forms
    if forms is None or not text:
        return True
    assert forms.long_run is not None
    return text[-1] not in forms.alphabet and forms.long_run.search(text) is None


def exact_clean(env: ReplyEnv, text: str) -> bool:
    """Whether ``text`` holds no key as it is and does not end as one begins: none of the
    keys' heads in it (an end of three characters or more that begins a key holds its
    head), nor an end of one or two characters that begins one."""
    return env.heads.search(text) is None and not text.endswith(env.starts)


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

    __slots__ = (
        "_calls",
        "_env",
        "_held_whole",
        "_reasoning",
        "_text",
        "count",
        "pattern",
        "values",
    )

    def __init__(self, env: ReplyEnv) -> None:
        self._env = env
        self.values, self.pattern = env.values, env.pattern
        self.count = 0
        self._text: _Piece | None = None
        self._reasoning: _Piece | None = None
        self._calls: dict[int, _Piece] = {}
        #: the last delta, held back whole and unchanged (:meth:`rest` passes it on)
        self._held_whole: Delta | None = None

    @classmethod
    def for_environment(cls) -> ReplyMasker | None:
        """A masker, or None when the environment holds no secret (nothing to do)."""
        env = reply_env()
        return None if env is None else cls(env)

    def _clean(self, text: str) -> bool:
        return passes(self._env, text)

    def _piece(
        self, piece: _Piece | None, text: str, clean: bool | None = None
    ) -> tuple[_Piece | None, str]:
        if (piece is None or not piece.held) and (self._clean(text) if clean is None else clean):
            return piece, text
        if piece is None:
            piece = _Piece(self._env)
        return piece, piece.feed(text)

    def delta(self, item: Delta) -> Delta:
        clean = self._clean(item.text)
        if (
            clean
            and (self._text is None or not self._text.held)
            and (self._reasoning is None or not self._reasoning.held)
            and not self._calls
            and not item.reasoning
            and not item.tool_calls
        ):
            return item  # (most deltas: no key and no beginning of one, nothing held)
        self._text, text = self._piece(self._text, item.text, clean)
        # A part's held end stays held while another part streams: it is passed on when
        # its own part goes on, or at the end. (Passing it on when another part came was
        # tried, for the order: a part that then went on, text after a call, gave the
        # client a password whole in two pieces, each masked alone: a review's fuzz.)
        if item.reasoning or self._reasoning is not None:
            self._reasoning, reasoning = self._piece(self._reasoning, item.reasoning)
        else:
            reasoning = item.reasoning
        calls = [self._call(c) for c in item.tool_calls] if item.tool_calls else item.tool_calls
        if text == item.text and reasoning == item.reasoning and calls == item.tool_calls:
            self._held_whole = None
            return item
        if not (text or reasoning or calls or item.stop_sequence):
            # all of it held back (a reply's last word, mostly): passed on as it came when
            # the stream ends with it unchanged (no second delta made for it)
            self._held_whole = (
                item if self._text is not None and self._text.held == item.text else None
            )
            return _HELD
        self._held_whole = None
        return Delta(  # (a third faster than model_copy: a delta at most words apart)
            text=text, reasoning=reasoning, tool_calls=calls, stop_sequence=item.stop_sequence
        )

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
        whole = self._held_whole
        if whole is not None and whole.text == text and not (reasoning or calls):
            return whole
        return Delta(text=text, reasoning=reasoning, tool_calls=calls)

    def result(self, result: ChatResult) -> ChatResult:
        """The whole reply masked, as the streamed pieces were: each value as it is, and
        each key-like value in another case, spelling or part
        (:mod:`app.audit.secret_forms`)."""
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
        if not exact_clean(self._env, text):  # (the other forms: the spans below)
            text, n = self.pattern.subn(REDACTED, text)
            self.count += n
        if len(text) < FRAGMENT:  # (no window fits: nothing of a key's to find)
            return text
        spans = secret_forms(self.values).spans(text)
        self.count += len(spans)
        return mask_spans(text, spans, REDACTED)


def _with_arguments(call: ToolCall, arguments: str) -> ToolCall:
    return call.model_copy(update={"arguments": arguments})
