"""The memory's own small TF-IDF analyzer (memories are prose mixed with identifiers).

Words are split on snake_case and camelCase; a compound identifier is also kept whole,
so ``parse_tokens`` matches both ``parse_tokens`` and ``tokens``. Lower-cased; a short
English stop list and one-letter parts are dropped.
"""

from __future__ import annotations

import hashlib
import re

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+")
_PART = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")

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
    """Tokens of ``text`` for TfidfVectorizer(analyzer=analyze)."""
    tokens: list[str] = []
    for match in _WORD.finditer(text):
        word = match.group()
        parts = [p.lower() for piece in word.split("_") for p in _PART.findall(piece)]
        if len(parts) > 1:
            tokens.append(word.lower().strip("_"))
        tokens.extend(p for p in parts if len(p) > 1 and p not in STOP_WORDS)
    return tokens


def text_hash(text: str) -> str:
    """Short content hash: a stored vector is stale when its text's hash changed."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
