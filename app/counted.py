"""A count with its noun, in the singular when the count is one: "1 line", "2 lines",
"0 lines". What the workbench, the CLI and audit details say ("1 calls this session" read
as a typo on the budget meter of every first escalation)."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun``, plural (``plural``, else ``noun`` + "s") unless ``n`` is 1."""
    return f"{n} {noun if n == 1 else (plural if plural is not None else noun + 's')}"
