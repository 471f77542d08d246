"""Rendering and packing sources and notes (pure): deterministic groups that fit a
window, explicit clipping as the last resort."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from app.pipeline.librarian.notes import (
    CLIP_MARKER,
    NotePoint,
    Source,
)
from app.tokens import clip_text, count_text


def _source_block(source_id: str, text: str, part: str = "") -> str:
    attr = f' part="{part}"' if part else ""
    return f'<source id="{source_id}"{attr}>\n{text}\n</source>'


def render_sources(sources: Iterable[Source]) -> str:
    """The sources as a reader (and a model) sees them: each wrapped with its id."""
    return "\n".join(_source_block(sid, text) for sid, text in sources)


def _point_line(point: NotePoint) -> str:
    cite = f" [{', '.join(point.sources)}]" if point.sources else ""
    return f"- {point.text}{cite}"


def render_notes(points: Sequence[NotePoint], contradictions: Sequence[str] = ()) -> str:
    """Notes as text: one line per point, its source ids in brackets."""
    lines = [_point_line(p) for p in points]
    if contradictions:
        lines += ["", "Contradictions:", *(f"- {c}" for c in contradictions)]
    return "\n".join(lines)


@dataclass(frozen=True)
class _Piece:
    """A source, or a part of one too big for a group (it keeps the source's id)."""

    id: str
    text: str
    part: str = ""

    def render(self) -> str:
        return _source_block(self.id, self.text, self.part)

    @property
    def cost(self) -> int:
        return count_text(self.render()) + 1


def _split_text(text: str, capacity: int) -> list[str]:
    """``text`` in consecutive parts of at most ``capacity`` tokens (lines kept whole)."""
    parts: list[str] = []
    current: list[str] = []
    used = 0
    for line in text.splitlines(keepends=True):
        while count_text(line) > capacity:  # one line longer than a whole group
            cut = max(1, capacity * 3)
            if current:
                parts.append("".join(current))
                current, used = [], 0
            parts.append(line[:cut])
            line = line[cut:]
        if not line:
            continue
        cost = count_text(line)
        if current and used + cost > capacity:
            parts.append("".join(current))
            current, used = [], 0
        current.append(line)
        used += cost
    if current or not parts:
        parts.append("".join(current))
    return parts


def _pieces(sources: Iterable[Source], capacity: int) -> list[_Piece]:
    out: list[_Piece] = []
    for sid, text in sources:
        piece = _Piece(sid, text)
        if piece.cost <= capacity:
            out.append(piece)
            continue
        overhead = _Piece(sid, "", "99/99").cost + 2
        parts = _split_text(text, max(1, capacity - overhead))
        out += [_Piece(sid, p, f"{i}/{len(parts)}") for i, p in enumerate(parts, start=1)]
    return out


def pack(costs: Sequence[int], capacity: int, *, balanced: bool = False) -> list[list[int]]:
    """Indexes of ``costs`` in order, grouped so no group exceeds ``capacity`` (an item
    bigger than ``capacity`` gets a group of its own). Deterministic.

    Greedy by default (fill each group); ``balanced``: as many groups as greedy needs at
    least, each near the same size, so no group is a small remainder (a cloud group that
    small would not fire the context trigger on its own)."""
    target = float(capacity)
    if balanced and costs:
        total = sum(costs)
        target = total / max(1, -(-total // max(1, capacity)))
    groups: list[list[int]] = []
    used = 0
    for i, cost in enumerate(costs):
        if groups and used + cost <= capacity and used + cost / 2 <= target:
            groups[-1].append(i)
            used += cost
        else:
            groups.append([i])
            used = cost
    return groups


def _clip(blocks: Sequence[str], budget: int, what: str) -> tuple[str, int]:
    """As many whole ``blocks`` as fit with an explicit marker, and how many that is; when
    none fits, the head of the first one (then 0 whole blocks were kept)."""
    total = len(blocks)

    def marker(kept: int) -> str:
        return CLIP_MARKER.format(budget=budget, kept=kept, total=total, what=what)

    kept: list[str] = []
    for block in blocks:
        if count_text("\n".join([*kept, block, marker(len(kept) + 1)])) > budget:
            break
        kept.append(block)
    lines = [*kept, marker(len(kept))]
    if not kept and blocks:
        head = clip_text(blocks[0], budget - count_text(marker(0)) - 2)
        if head:
            lines.insert(0, head + " …")
    text = "\n".join(lines)
    while count_text(text) > budget and len(text) > 1:  # a budget below the marker
        text = text[: max(1, len(text) * budget // count_text(text) - 1)]
    return text, len(kept)


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
