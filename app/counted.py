"""A count with its noun, in the singular when the count is one: "1 line", "2 lines",
"0 lines". What the workbench, the CLI and audit details say (the budget meter read
"1 calls this session" after a session's first call)."""

from __future__ import annotations


def counted(n: int, noun: str) -> str:
    """``n`` and ``noun``, with an "s" unless ``n`` is 1 (every noun counted here takes one)."""
    return f"{n} {noun if n == 1 else noun + 's'}"
