"""Results remembered by their input, in a bounded memory (a leaf: it imports nothing of
Switchyard, so the other leaves may use it).

Why: an agent sends its whole conversation again on every turn (Claude Code, Codex, aider
alike), and each request counted every message's tokens and masked every message anew,
work that grows with the conversation (issue 20: 4.0 ms a request for a 40 KB one, where
LiteLLM's Router took 3.1). What is remembered costs a digest of its text (SHA-256, about
0.6 ns a byte), so each turn costs what is new in it.

A text is remembered by its digest, never kept itself: a prompt may quote a secret that
only its masking takes out, and it stays in no memory of ours after its request.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def digest(text: str) -> bytes:
    """What a text is remembered by (any text: a lone surrogate too)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class Digests:
    """One request's digests of its texts, each made once whoever asks for it (the token
    count, the masking and the request's hash digest the same texts: ~25 µs a pass over
    a coding agent's 40 KB conversation). Each text digested is held, so that no
    other text can take its ``id``, for as long as this lives: one request."""

    __slots__ = ("_held", "_made", "counts")

    def __init__(self) -> None:
        self._made: dict[int, bytes] = {}
        #: the texts digested, held: while one lives no other object has its ``id``, so
        #: an ``id`` found is the text asked for (no check on each look: a conversation of
        #: 108 messages is looked up three times a message, issue 20)
        self._held: list[object] = []
        #: a request's prompt count, by the ids of its messages and tools lists (held):
        #: the gateway counts it, and the router again for a client's context_estimate
        #: (a tools list is dumped to JSON to be counted: ~350 µs for Claude Code's 20)
        self.counts: dict[tuple[int, int], int] = {}

    def hold(self, *objects: object) -> None:
        """Keep ``objects`` alive as long as this, so that their ids stay theirs."""
        self._held.extend(objects)

    def __call__(self, text: str) -> bytes:
        made = self._made.get(id(text))
        if made is None:
            made = self._made[id(text)] = digest(text)
            self._held.append(text)
        return made


class Remembered(Generic[K, V]):
    """The results of a pure function of a text, for texts of at least ``min_chars``
    (a shorter one is worked out faster than looked up): at most ``max_entries`` results
    and ``max_chars`` characters of them kept (what :meth:`put` says a result holds), the
    least recently used let go first; a result holding more than a quarter of that is
    never kept. Thread-safe (a result may be asked for on a worker thread) on a CPython
    with the GIL, for keys that hash and compare in C (bytes, tuples of bytes: digests),
    since :meth:`get` takes no lock; and :meth:`kept` copies the order in one ``list()``
    call, which no thread switch can enter (a loop over it could meet a ``get``'s move).
    The function runs outside the lock."""

    def __init__(self, *, min_chars: int, max_entries: int, max_chars: int = 0) -> None:
        self.min_chars = min_chars
        self.max_entries = max_entries
        self.max_chars = max_chars
        self._kept: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        # No lock: each OrderedDict call is one step under the GIL, and a ``put`` letting
        # the key go between the two only makes the move fail. (A look took 570 ns with
        # the lock, 125 without: a conversation of 108 messages is looked up 216 times a
        # turn, by its count and its masking.)
        hit = self._kept.get(key)
        if hit is None:
            return None
        try:  # noqa: SIM105 (contextlib.suppress: its object costs more than the look)
            self._kept.move_to_end(key)
        except KeyError:
            pass
        return hit[0]

    def put(self, key: K, value: V, chars: int = 0) -> None:
        """Keep ``value`` for ``key``; the value holds ``chars`` characters of text."""
        if chars > self.max_chars // 4:
            return
        with self._lock:
            if key in self._kept:
                return
            self._kept[key] = (value, chars)
            self._chars += chars
            while len(self._kept) > self.max_entries or self._chars > self.max_chars:
                _, (_, size) = self._kept.popitem(last=False)
                self._chars -= size

    def kept(self) -> list[K]:
        """What is kept, the least recently used first."""
        with self._lock:
            return list(self._kept)

    @property
    def chars(self) -> int:
        return self._chars
