"""The memory's own small TF-IDF analyzer (memories are prose mixed with identifiers).

Words are split on snake_case and camelCase; a compound identifier is also kept whole,
so ``parse_tokens`` matches both ``parse_tokens`` and ``tokens``. Lower-cased; a short
English stop list and one-letter parts are dropped.
"""

from __future__ import annotations

import hashlib
import re

_WORD = re.compile(r"\w+")
_PART = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
# Outside ASCII there is no reliable case split: letter runs and digit runs only
_PART_UNICODE = re.compile(r"[^\W\d_]+|\d+")
# scripts written without spaces: a run of them is read as its character pairs
_UNSPACED = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+")

STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "from",
        "has",
        "have",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "was",
        "were",
        "will",
        "with",
        "not",
        "no",
        "do",
        "does",
        "did",
        "so",
        "if",
        "then",
        "than",
        "into",
        "out",
        "up",
        "we",
        "you",
        "they",
        "he",
        "she",
        "i",
        "me",
        "my",
        "our",
        "your",
        "their",
        "them",
        "there",
        "here",
        "when",
        "what",
        "which",
        "who",
        "how",
        "why",
        "all",
        "any",
        "can",
    ]
)


def analyze(text: str) -> list[str]:
    """Tokens of ``text`` for TfidfVectorizer(analyzer=analyze). Words outside ASCII are
    words too (only ASCII ones were: a memory in Russian or Chinese could never be
    found), and a run of Chinese, Japanese or Korean characters gives its pairs."""
    tokens: list[str] = []
    for match in _WORD.finditer(text):
        word = match.group()
        if not word.isascii():
            tokens.extend(_unicode_tokens(word))
            continue
        parts = [p.lower() for piece in word.split("_") for p in _PART.findall(piece)]
        if len(parts) > 1:
            tokens.append(word.lower().strip("_"))
        tokens.extend(p for p in parts if len(p) > 1 and p not in STOP_WORDS)
    return tokens


def _unicode_tokens(word: str) -> list[str]:
    out: list[str] = []
    at = 0
    for run in _UNSPACED.finditer(word):
        out.extend(_spaced_tokens(word[at : run.start()]))
        chars = run.group()
        if len(chars) == 1:
            out.append(chars)
        else:
            out.extend(chars[i : i + 2] for i in range(len(chars) - 1))
        at = run.end()
    out.extend(_spaced_tokens(word[at:]))
    return out


def _spaced_tokens(piece: str) -> list[str]:
    parts = [p.lower() for p in _PART_UNICODE.findall(piece)]
    whole = piece.strip("_").lower()
    out = [whole] if len(parts) > 1 and len(whole) > 1 else []
    out.extend(p for p in parts if len(p) > 1 and p not in STOP_WORDS)
    return out


def text_hash(text: str) -> str:
    """Short content hash: a stored vector is stale when its text's hash changed."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
