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
part's held end is passed on when the part ends (another part comes: the text before a
call), so the parts stay whole and in order; a key's beginning (three characters or more)
waits for its own part or the stream's end. The whole reply is masked the same way (the
evidence, the audit's previews), and the pieces add up to it (but for a key a part paused
in and then went on with: masked from the pause on).
The masker's shapes (``sk-…``, ``password = …``) are not applied: a model writing code
quotes them on purpose (a test's fake key), and its diff must apply as written.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

from app.audit.masking import REDACTED, env_pattern, secret_env_values
from app.audit.secret_forms import (
    FRAGMENT,
    SecretForms,
    join_spans,
    key_like,
    mask_spans,
    secret_forms,
)
from app.backends.base import ChatResult, Delta, ToolCall, ToolCallDelta


class _Piece:
    """One stream's text (the reply, its reasoning, one tool call's arguments) masked as
    it comes, with the end that could start a secret held back."""

    __slots__ = ("env", "held", "shown")

    def __init__(self, env: ReplyEnv) -> None:
        self.env, self.held = env, ""
        #: how much of ``held`` was passed on already (:meth:`end`): kept, as it came, so
        #: that a key it begins is still seen whole if the part goes on; never passed on
        #: again, and a mask starts no earlier than its end
        self.shown = 0

    def feed(self, text: str) -> str:
        env = self.env
        shown = self.shown
        text = self.held + text
        if exact_clean(env, text):  # (most pieces: no key and no beginning of one)
            cut = len(text)
        else:
            text = (
                _masked_past(env.pattern, text, shown) if shown else env.pattern.sub(REDACTED, text)
            )
            cut = _start_of_secret(text, env.values)
        forms = env.forms
        if forms is None:
            return self._cut(text, cut, text[:cut])
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
            # (a run begun in what was shown is held with it: it is masked from there)
            spans = forms.spans(text, join=False)
            moved = True
            while moved:
                moved = False
                for start, end in spans:
                    if start < cut < end:
                        cut, moved = start, True
            before = join_spans([s for s in _past(spans, shown) if s[1] <= cut])
            out = mask_spans(text[:cut], before, REDACTED)
        return self._cut(text, cut, out)

    def _cut(self, text: str, cut: int, out: str) -> str:
        """``out`` (``text[:cut]`` masked) less what was shown; the rest held."""
        shown = self.shown
        if cut < shown:  # (what was shown may begin a key still: kept)
            self.held, self.shown = text[cut:], shown - cut
            return ""
        self.held, self.shown = text[cut:], 0
        return out[shown:]

    def flush(self) -> str:
        # each whole key was masked as it came in; what is held may be a run of another
        # form of one that the stream's end ended
        out = self._shown_to(len(self.held))
        self.held, self.shown = "", 0
        return out

    def end(self) -> str:
        """Its part ended, another came: the held end passed on, masked as at the
        stream's end, but for a key-like value's beginning (three characters or more: a
        key's first letters, no word's end), held on until the part goes on or the
        stream ends. All of it is kept as it came (:attr:`shown`): a part may go on
        after another (text after a call), and a key begun where it paused is masked
        from where it goes on (passed on and forgotten, a password came whole in two
        pieces each masked alone: a review's fuzz)."""
        held = self.held
        cut = _start_of_secret(held, self.env.keys)
        if len(held) - cut < 3:
            cut = len(held)
        return self._shown_to(cut)

    def _shown_to(self, cut: int) -> str:
        """``held[shown:cut]``, masked of the runs of a key's other forms in it, now
        counted as shown."""
        held, shown = self.held, self.shown
        self.shown = max(cut, shown)
        if cut <= shown:
            return ""
        forms = self.env.forms
        if forms is None or forms.long_run is None or not forms.long_run.search(held):
            return held[shown:cut]
        spans = [(s, min(e, cut)) for s, e in _past(forms.spans(held), shown) if s < cut]
        return mask_spans(held[:cut], spans, REDACTED)[shown:]


def _masked_past(pattern: re.Pattern[str], text: str, shown: int) -> str:
    """``text`` with each key masked, from ``shown`` on: a key begun in what was shown
    keeps that beginning (it is out) and is masked from there."""

    def mark(found: re.Match[str]) -> str:
        kept = shown - found.start()
        if kept <= 0:
            return REDACTED
        key = found.group()
        return key if kept >= len(key) else key[:kept] + REDACTED

    return pattern.sub(mark, text)


def _past(spans: list[tuple[int, int]], shown: int) -> list[tuple[int, int]]:
    """``spans`` from ``shown`` on (what was shown is out, and not marked again)."""
    if not shown:
        return spans
    return [(max(start, shown), end) for start, end in spans if end > shown]


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
    """The environment's secret values as a reply is read for them: their pattern, how
    they begin (their first three characters), and their other forms (None: no value is
    key-like)."""

    values: tuple[str, ...]
    pattern: re.Pattern[str]
    #: any key's first three characters, and the ends of one or two that begin a key
    heads: re.Pattern[str]
    starts: tuple[str, ...]
    forms: SecretForms | None
    #: the key-like values (:func:`app.audit.secret_forms.key_like`)
    keys: tuple[str, ...]


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
        tuple(v for v in values if key_like(v)),
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


class _Out:
    """What is passed on for one delta (or at the stream's end), its parts added in the
    order they come. A delta is read its reasoning, then its text, then its calls (so the
    gateway's encoders read one): a part to come after one of those starts a delta."""

    __slots__ = ("_rank", "_said", "changed")

    def __init__(self) -> None:
        #: each delta's reasoning and text, and its calls
        self._said: list[tuple[list[str], list[ToolCallDelta]]] = []
        self._rank = 3  # (the last part added: reasoning 0, text 1, a call 2; none yet)
        #: whether anything differs from the delta as it came
        self.changed = False

    def add(self, rank: int, value: str | ToolCallDelta | None, *, changed: bool = True) -> None:
        self.changed = self.changed or changed
        if not value:
            return
        if rank < self._rank or (rank == self._rank and rank < 2):
            self._said.append((["", ""], []))
        words, calls = self._said[-1]
        if isinstance(value, ToolCallDelta):
            calls.append(value)
        else:
            words[rank] = value
        self._rank = rank

    def deltas(self, stop_sequence: str | None = None) -> list[Delta]:
        """The deltas (the stop sequence on the last, as it came: a delta of its own when
        nothing else is passed on)."""
        out = [Delta(reasoning=r, text=t, tool_calls=c) for (r, t), c in self._said]
        if stop_sequence is not None:
            last = out.pop() if out else Delta()
            out.append(last.model_copy(update={"stop_sequence": stop_sequence}))
        return out


def _add(out: _Out, part: str | int, held: str) -> None:
    """A part's held end, passed on."""
    if not held:
        return
    if isinstance(part, int):
        out.add(2, ToolCallDelta(index=part, arguments=held))
    else:
        out.add(0 if part == "reasoning" else 1, held)


class ReplyMasker:
    """Masks one call's deltas and its result with the environment as it is now."""

    __slots__ = (
        "_calls",
        "_env",
        "_held_whole",
        "_last",
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
        #: the part that came last: "text", "reasoning", or a tool call's index
        self._last: str | int | None = None
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

    def deltas(self, item: Delta) -> list[Delta]:
        """What to pass on for ``item``, in order: the held end of the part it ends (the
        text before a call), then ``item`` masked; none when all of it is held back (it
        may begin a key)."""
        clean = self._clean(item.text)
        if (
            clean
            and (self._text is None or not self._text.held)
            and (self._reasoning is None or not self._reasoning.held)
            and not self._calls
            and not item.reasoning
            and not item.tool_calls
        ):
            if item.text:
                self._last = "text"
            return [item]  # (most deltas: no key and no beginning of one, nothing held)
        # A part's held end is passed on when another part comes (the text's last word
        # before a call: held to the stream's end, it came after the call, a block or an
        # item of its own, and Codex sent the text back cut in two, a user audit). A key
        # is not cut there: it is in one part, the text or a call's arguments; and should
        # the part go on after the other, a key begun at its end is still masked whole
        # or from there on (:meth:`_Piece.end`).
        out = _Out()
        if item.reasoning:
            self._switch("reasoning", out)
            self._reasoning, reasoning = self._piece(self._reasoning, item.reasoning)
            out.add(0, reasoning, changed=reasoning != item.reasoning)
        if item.text:
            self._switch("text", out)
            self._text, text = self._piece(self._text, item.text, clean)
            out.add(1, text, changed=text != item.text)
        for call in item.tool_calls:
            if call.id is None and call.name is None and not call.arguments:
                continue  # (says nothing: no part begins or goes on)
            self._switch(call.index, out)
            masked = self._call(call)
            out.add(2, masked, changed=masked is not call)
        if not out.changed:
            self._held_whole = None
            return [item]
        deltas = out.deltas(item.stop_sequence)
        if not deltas:
            # all of it held back (a reply's last word, mostly): passed on as it came when
            # the stream ends with it unchanged (no second delta made for it)
            self._held_whole = (
                item if self._text is not None and self._text.held == item.text else None
            )
            return []
        self._held_whole = None
        return deltas

    def _switch(self, part: str | int, out: _Out) -> None:
        """``part`` comes: the one before it, if another, ends (its held end, to ``out``)."""
        last, self._last = self._last, part
        if last is not None and last != part and (piece := self._part(last)) is not None:
            _add(out, last, piece.end())

    def _part(self, part: str | int) -> _Piece | None:
        if part == "text":
            return self._text
        if part == "reasoning":
            return self._reasoning
        assert isinstance(part, int)
        return self._calls.get(part)

    def _call(self, call: ToolCallDelta) -> ToolCallDelta | None:
        piece, arguments = self._piece(self._calls.get(call.index), call.arguments)
        if piece is not None:
            self._calls[call.index] = piece
        if arguments == call.arguments:
            return call
        if not (arguments or call.id or call.name):
            return None  # (all of it held back)
        return call.model_copy(update={"arguments": arguments})

    def rest(self) -> list[Delta]:
        """What is still held back when the stream ends, as the last deltas: the parts
        that ended on a key's beginning first (:meth:`_Piece.end`), the last part last."""
        text, reasoning = self._text, self._reasoning
        if not self._calls and (reasoning is None or not reasoning.held):
            # (most streams: the text's last word alone held back; the general way below
            # cost ~10 µs a call on the router's request, P1)
            held = text.flush() if text is not None and text.held else ""
            whole = self._held_whole
            if not held:
                return []
            if whole is not None and held == whole.text:
                return [whole]
            return [Delta(text=held)]
        parts: list[str | int] = ["reasoning", "text", *sorted(self._calls)]
        out = _Out()
        for part in sorted(parts, key=lambda part: part == self._last):
            piece = self._part(part)
            if piece is not None:
                _add(out, part, piece.flush())
        deltas = out.deltas()
        whole = self._held_whole
        if whole is not None and deltas == [Delta(text=whole.text)]:
            return [whole]
        return deltas

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
