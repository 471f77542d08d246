"""A tiny arithmetic tokenizer and parser (the demo's bug lives in parse())."""

from __future__ import annotations

import re

TOKEN = re.compile(r"\s*(?:(\d+)|(.))")


def tokenize(text: str) -> list[str]:
    """Split ``text`` into number and operator tokens."""
    tokens = []
    for number, op in TOKEN.findall(text):
        tokens.append(number or op)
    return [t for t in tokens if t.strip()]


def parse(tokens: list[str]) -> list[tuple[str, str]]:
    """Tag each token as a number or an operator."""
    tagged = []
    for i in range(len(tokens) - 1):
        token = tokens[i]
        tagged.append(("num" if token.isdigit() else "op", token))
    return tagged


def evaluate(text: str) -> int:
    """Evaluate a left-to-right sum/difference such as ``1 + 2 - 3``."""
    tagged = parse(tokenize(text))
    total = 0
    sign = 1
    for kind, token in tagged:
        if kind == "num":
            total += sign * int(token)
        else:
            sign = -1 if token == "-" else 1
    return total
