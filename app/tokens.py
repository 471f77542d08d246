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
from collections.abc import Callable, Iterable

from app.remembered import Remembered, digest

__all__ = [
    "MESSAGE_OVERHEAD",
    "REPLY_PRIMING",
    "TextCount",
    "clip_text",
    "count_messages",
    "count_text",
]

MESSAGE_OVERHEAD = 4
REPLY_PRIMING = 3

_LETTER, _DIGIT, _SYMBOL = "A-Za-z", "0-9", r"!-/:-@\[-`{-~"
_PIECE = re.compile(
    rf" ?[{_LETTER}]+"  # an ASCII word, with its leading space
    rf"| ?[{_DIGIT}]{{1,3}}"  # up to three digits
    rf"| ?[{_SYMBOL}]+"  # ASCII punctuation and symbols
    r"|\s+"  # whitespace
    rf"|[^\s{_LETTER}{_DIGIT}{_SYMBOL}]"  # anything else, one character at a time
)


def count_text(text: str) -> int:
    """Tokens in ``text`` by the heuristic above (0 for an empty string)."""
    if len(text) >= _BY_BYTES_FROM and (text.isascii() or not _WIDE_SPACE.search(text)):
        return _count_bytes(text)
    return _count_pieces(text)


def _count_pieces(text: str) -> int:
    """:func:`count_text` piece by piece (the rules' own spelling; ~75 ns a character on
    code, from under 1 inside a blob of one class to ~290 for control characters)."""
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


# ── the same count in C-speed passes over the text's bytes (~20-30 ns a character) ───────
#
# Each character's class (letter, digit, punctuation, space, other whitespace, other) is
# one byte of a translated copy of the UTF-8 text, and each rule's pieces are counted as
# patterns of those bytes (``bytes.count``, never a Python step per piece): a run begins
# where its class follows another, so a pattern such as ``xa`` (a letter after a
# non-letter) counts each run once and cannot overlap itself. A character past ASCII is
# one lead byte (an "other" piece) and continuation bytes that join nothing; a text with
# whitespace past ASCII (which joins the runs of whitespace) is counted piece by piece.

#: texts shorter than this are counted piece by piece (as quick there, with less set-up)
_BY_BYTES_FROM = 64
#: the characters past ASCII that ``\s`` matches (tests/unit/test_tokens.py checks them)
_WIDE_SPACE = re.compile("[\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")


#: an ASCII character's class, by the pieces' own sets: ``a`` a letter, ``d`` a digit,
#: ``p`` punctuation, ``w`` whitespace (``S`` the space itself), else ``o`` other
_CLASS_OF = re.compile(rf"(?P<a>[{_LETTER}])|(?P<d>[{_DIGIT}])|(?P<p>[{_SYMBOL}])|(?P<w>\s)")
_CLASSES = [
    "S" if ch == " " else (m.lastgroup or "o") if (m := _CLASS_OF.fullmatch(ch)) else "o"
    for ch in map(chr, range(128))
]


def _table(symbols: dict[str, str], other: str, lead: str | None = None) -> bytes:
    """A ``bytes.translate`` table: each ASCII class to its symbol (else ``other``),
    continuation bytes to ``other``, lead bytes to ``lead`` (else ``other``)."""
    ascii_part = "".join(symbols.get(c, other) for c in _CLASSES)
    return (ascii_part + other * 64 + (lead or other) * 64).encode("ascii")


_LETTERS = _table({"a": "a"}, "x")
_DIGITS = _table({"d": "d"}, "x")
_PUNCT = _table({"p": "p"}, "x")
_SPACES = _table({"S": "w", "w": "w"}, "x")
#: ``n``: a character a lone space before it goes with (a letter, a digit, punctuation)
_BEFORE = _table({"S": "S", "w": "w", "a": "n", "d": "n", "p": "n"}, "o")
_OTHER = _table({"o": "o"}, "x", lead="o")


#: lengths looked for with one pass each, before the runs that are longer still are
#: measured one by one (a pass per length would make a blob of letters quadratic)
_PASSES = 8


def _runs_of(data: bytes, symbol: bytes, first: int, step: int) -> int:
    """Over the runs of ``symbol`` in ``data`` (each before an ``x``): how many of the
    lengths ``first``, ``first + step``, … each run reaches, summed."""
    total, length = 0, first
    for _ in range(_PASSES):
        # (a run's end, ``aa…ax``: measured faster than its start, ``xaa…a``, on real text:
        # app/router/service.py 52 -> 28 ns a character in all, the README 34 -> 29;
        # slower only inside a blob of one class, 25 -> 40)
        found = data.count(symbol * length + b"x")
        if not found:
            return total
        total += found
        length += step
    # (each match is a whole run, tried only where one starts: linear in the text)
    one = re.escape(symbol)
    for run in re.finditer(b"(?<!%s)%s{%d,}" % (one, one, length), data):
        total += (run.end() - run.start() - length) // step + 1
    return total


def _count_bytes(text: str) -> int:
    """:func:`_count_pieces`, exactly, for a text with no whitespace past ASCII."""
    # (a byte of class "other" either side: every run begins and ends beside another
    # class, the last one too)
    data = b"\0" + text.encode("utf-8", "surrogatepass") + b"\0"
    letters = data.translate(_LETTERS)
    punct = data.translate(_PUNCT)
    before = data.translate(_BEFORE)
    return (
        # a word, and one more per 5 letters past 6
        letters.count(b"xa")
        + _runs_of(letters, b"a", 7, 5)
        # punctuation: one per 2 characters, rounded up
        + punct.count(b"xp")
        + _runs_of(punct, b"p", 3, 2)
        # digits: one per 3, rounded up
        + _runs_of(data.translate(_DIGITS), b"d", 1, 3)
        # a run of whitespace, unless it is one space before a word, digits or punctuation
        + data.translate(_SPACES).count(b"xw")
        - (before.count(b"Sn") - before.count(b"wSn") - before.count(b"SSn"))
        # any other character (the two bytes added are two)
        + data.translate(_OTHER).count(b"o")
        - 2
    )


class TextCount:
    """The tokens of a text that comes in parts (a streamed reply), as :func:`count_text`
    counts the whole, each part counted once: up to the end of its last word (before a
    space or a line break that follows anything but whitespace, where every rule's piece
    ends), the rest again with the next part. Parts counted each on its own came to more
    (a word split across two parts is two pieces, a space at a part's end one of its
    own): 20 parts of "word word " to 60 tokens, where the whole is 41."""

    __slots__ = ("done", "rest")

    def __init__(self) -> None:
        #: the tokens of the parts up to :attr:`rest`
        self.done = 0
        #: the end of the parts so far past their last word's end
        self.rest = ""

    def add(self, text: str) -> int:
        """Take the next part; the tokens of all the parts so far."""
        text = self.rest + text if self.rest else text
        cut = _word_end(text)
        if cut:
            self.done += count_text(text[:cut])
        self.rest = text[cut:]
        return self.done + count_text(self.rest)


def _word_end(text: str) -> int:
    """The last place in ``text`` before a space or a line break that follows anything
    but whitespace (0: none). No piece of :data:`_PIECE` spans it, so the text either
    side of it counts as it does within the whole."""
    end = len(text)
    while end > 0:
        at = max(text.rfind(" ", 0, end), text.rfind("\n", 0, end))
        if at <= 0:
            return 0
        if not text[at - 1].isspace():
            return at
        end = at
    return 0


def clip_text(text: str, tokens: int) -> str:
    """The longest head of ``text`` (to within a few characters) that counts at most
    ``tokens``: a first cut at 4 characters a token, then shrunk in proportion."""
    if tokens <= 0:
        return ""
    head = text[: tokens * 4]
    while head and (n := count_text(head)) > tokens:
        head = head[: max(0, len(head) * tokens // n - 1)]
    return head


def count_messages(contents: Iterable[str], digest_of: Callable[[str], bytes] = digest) -> int:
    """Prompt tokens of a chat: each message's text plus framing, plus the reply priming.

    A long message's count is remembered (:mod:`app.remembered`) by its text's digest
    (``digest_of``: a request's :class:`~app.remembered.Digests`, which its masking and
    its hash share): an agent sends its whole conversation again on every turn, and the
    gateway and the router each count it."""
    # (one loop, no call per message but the look-up: a conversation of 108 messages is
    # counted on every turn, issue 20)
    total = REPLY_PRIMING
    remembered = REMEMBERED
    least, get = remembered.min_chars, remembered.get
    for text in contents:
        if len(text) < least:  # (a short text is counted faster than looked up)
            total += MESSAGE_OVERHEAD + count_text(text)
            continue
        key = digest_of(text)
        n = get(key)
        if n is None:
            n = count_text(text)
            remembered.put(key, n)
        total += MESSAGE_OVERHEAD + n
    return total


#: the counts of long messages lately counted, by their text's digest
REMEMBERED: Remembered[bytes, int] = Remembered(min_chars=128, max_entries=65536)
