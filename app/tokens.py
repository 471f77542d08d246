"""The one token counter (a leaf): budgets, windows, context estimates and usage.

Every layer that needs a token count without a real tokenizer uses this module: Stage0
sizing chunks and briefs, the Librarian packing notes, the router's ``context_estimate``
and reservations, and the backends counting usage for servers that report none (the
llama.cpp server sends no usage in a stream, so that usage is marked ``counted_locally``).

No real tokenizer ships offline for the models we route (tiktoken is not a dependency,
and each local model has its own vocabulary), so this is a documented heuristic, tuned
to land near BPE tokenizers (cl100k/o200k, Qwen, Llama 3) on English prose and code,
erring high rather than low: a budget estimate that is a little high is harmless, one
that is low is not.

The rules, applied to pre-tokenizer pieces much like those BPE tokenizers split on:

* a word of ASCII letters (with the one space before it) is 1 token up to 6 letters, then
  one more per 5 letters (``"internationalization"`` → 4);
* digits come in groups of up to 3, 1 token each (``"2026"`` → 2);
* a run of punctuation or symbols is 1 token per 2 characters, rounded up;
* a run of whitespace is 1 token (indentation is one token in these vocabularies);
* any other character (CJK, emoji, accented letters …) is 1 token per character.

A chat message adds 4 tokens of framing (role and separators) and a reply is primed with
3 more, as OpenAI documents for its chat format.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from app.remembered import Remembered, digest

__all__ = [
    "MESSAGE_OVERHEAD",
    "REPLY_PRIMING",
    "clip_text",
    "count_messages",
    "count_text",
]

MESSAGE_OVERHEAD = 4
REPLY_PRIMING = 3

_PIECE = re.compile(
    r" ?[A-Za-z]+"  # an ASCII word, with its leading space
    r"| ?[0-9]{1,3}"  # up to three digits
    r"| ?[!-/:-@\[-`{-~]+"  # ASCII punctuation and symbols
    r"|\s+"  # whitespace
    r"|[^\sA-Za-z0-9!-/:-@\[-`{-~]"  # anything else, one character at a time
)


def count_text(text: str) -> int:
    """Tokens in ``text`` by the heuristic above (0 for an empty string)."""
    total = 0
    for piece in _PIECE.findall(text):
        core = piece.lstrip(" ") or piece
        first = core[0]
        if first.isascii() and first.isalpha():
            total += 1 if len(core) <= 6 else 1 + -(-(len(core) - 6) // 5)
        elif first.isascii() and not first.isdigit() and not core.isspace():
            total += -(-len(core) // 2)  # punctuation and symbols
        else:
            total += 1  # a digit group, a whitespace run, or one other character
    return total


def clip_text(text: str, tokens: int) -> str:
    """The longest head of ``text`` (to within a few characters) that counts at most
    ``tokens``: a first cut at 4 characters a token, then shrunk in proportion."""
    if tokens <= 0:
        return ""
    head = text[: tokens * 4]
    while head and (n := count_text(head)) > tokens:
        head = head[: max(0, len(head) * tokens // n - 1)]
    return head


def count_messages(contents: Iterable[str]) -> int:
    """Prompt tokens of a chat: each message's text plus framing, plus the reply priming.

    A long message's count is remembered (:mod:`app.remembered`): an agent sends its whole
    conversation again on every turn, and the gateway and the router each count it."""
    return sum(MESSAGE_OVERHEAD + _count_remembered(c) for c in contents) + REPLY_PRIMING


#: the counts of long messages lately counted, by their text's digest
REMEMBERED: Remembered[bytes, int] = Remembered(min_chars=128, max_entries=65536)


def _count_remembered(text: str) -> int:
    if not REMEMBERED.worth(len(text)):
        return count_text(text)
    key = digest(text)
    n = REMEMBERED.get(key)
    if n is None:
        n = count_text(text)
        REMEMBERED.put(key, n)
    return n
