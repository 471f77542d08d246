"""The code tokenizer: identifiers split at ``_``, camelCase and digits, and kept whole.

``parse_http_response2`` gives ``parse_http_response2 parse http response`` (the ``2``
is too short to keep); ``HTTPServerError`` gives ``httpservererror http server error``.
Tokens are lowercase, at least two characters long, and never in the small stopword
list. The same function serves documents and queries, so both meet in one vocabulary.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

#: Bumped whenever the tokens a text gives change: it is part of every cache key.
TOKENIZER_VERSION = "1"

MIN_LEN = 2
#: Longer runs of digits are ids and hashes (issue numbers, dates, hex), not words.
MAX_DIGITS = 4

_WORD = re.compile(r"\w+")
_PART = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
# Outside ASCII there is no reliable case split: letter runs and digit runs only.
_PART_UNICODE = re.compile(r"[^\W\d_]+|\d+")

# English function words and the handful of keywords every Python chunk repeats. Kept
# small on purpose: idf already discounts what is common in *this* corpus.
_STOP_TEXT = """
    a an and are as at be been but by can could do does for from had has have he her
    him his how if in into is it its let may me might my no nor not of off on once only
    or our out over own she should so some such than that the their them then there these
    they this those through to too under until up very was we were what when where which
    while who whom why will with would you your
    self cls def return import none true false pass elif else
"""
STOPWORDS = frozenset(_STOP_TEXT.split())

_cache: dict[str, tuple[str, ...]] = {}
_CACHE_MAX = 500_000


def split_identifier(word: str) -> tuple[str, ...]:
    """The tokens of one identifier-like word, whole first, then its parts in order."""
    hit = _cache.get(word)
    if hit is not None:
        return hit
    out: list[str] = []
    whole = word.strip("_").lower()
    finder = _PART if word.isascii() else _PART_UNICODE
    parts = [p.lower() for p in finder.findall(word)]
    if len(parts) > 1 and _keep(whole):
        out.append(whole)
    out.extend(p for p in parts if _keep(p))
    result = tuple(out)
    if len(_cache) >= _CACHE_MAX:
        _cache.clear()
    _cache[word] = result
    return result


def _keep(token: str) -> bool:
    if len(token) < MIN_LEN or token in STOPWORDS:
        return False
    return not (token.isdigit() and len(token) > MAX_DIGITS)


def tokenize(text: str) -> list[str]:
    """Every token of ``text``, in order (repeats kept: callers count them)."""
    out: list[str] = []
    extend = out.extend
    for word in _WORD.findall(text):
        extend(split_identifier(word))
    return out


def count_tokens(texts: Iterable[str]) -> Counter[str]:
    """Term counts over several texts (e.g. a chunk's body and its path)."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(tokenize(text))
    return counts
