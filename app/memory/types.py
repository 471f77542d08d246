"""Plain records of the memory overlay: a memory, a memory to add, a search hit."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.clock import iso
from app.errors import UsageError
from app.memory import scoring

#: kinds the product writes; others are allowed if they look like a kind
KNOWN_KINDS = ("note", "commit", "outcome", "playbook")
KIND_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,31}")
STATUS_ACTIVE = "active"
STATUS_DEPRECATED = "deprecated"
STATUSES = (STATUS_ACTIVE, STATUS_DEPRECATED)
MAX_TAG_LEN = 64


def check_kind(kind: str) -> str:
    if not KIND_PATTERN.fullmatch(kind):
        raise UsageError(
            f"memory kind {kind!r}: expected lowercase letters, digits, '-' or '_' "
            f"(e.g. {', '.join(KNOWN_KINDS)})"
        )
    return kind


def check_priority(priority: int) -> int:
    if not scoring.PRIORITY_MIN <= priority <= scoring.PRIORITY_MAX:
        raise UsageError(
            f"priority {priority}: expected {scoring.PRIORITY_MIN}…{scoring.PRIORITY_MAX}"
        )
    return priority


def clean_tags(tags: Iterable[str]) -> tuple[str, ...]:
    out = set()
    for tag in tags:
        t = " ".join(str(tag).split())
        if not t:
            raise UsageError("empty tag")
        if len(t) > MAX_TAG_LEN:
            raise UsageError(f"tag {t[:20]!r}…: longer than {MAX_TAG_LEN} characters")
        out.add(t)
    return tuple(sorted(out))


def clean_text(text: str) -> str:
    cleaned = text.strip()
    if not cleaned:
        raise UsageError("a memory needs some text")
    return cleaned


@dataclass(frozen=True)
class NewMemory:
    """A memory to add. ``source_key`` makes the add idempotent (e.g. ``git:<sha>``)."""

    text: str
    kind: str = "note"
    tags: tuple[str, ...] = ()
    source: str = ""
    priority: int = 0
    source_key: str | None = None
    #: when the knowledge originated (a commit's date); default: now
    created: datetime | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Memory:
    id: int
    text: str
    kind: str
    tags: tuple[str, ...]
    source: str
    source_key: str | None
    created: datetime
    used: datetime | None
    use_count: int
    priority: int
    helpful: int
    harmful: int
    status: str
    merged_into: int | None
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "text": self.text,
            "kind": self.kind,
            "tags": list(self.tags),
            "source": self.source,
            "source_key": self.source_key,
            "created": iso(self.created),
            "used": iso(self.used) if self.used is not None else None,
            "use_count": self.use_count,
            "priority": self.priority,
            "helpful": self.helpful,
            "harmful": self.harmful,
            "status": self.status,
            "merged_into": self.merged_into,
            "meta": dict(self.meta),
        }


@dataclass(frozen=True)
class MemoryHit:
    """One search result with its three components (see :mod:`app.memory.scoring`)."""

    memory: Memory
    score: float
    tfidf: float
    embedding: float
    dynamic: float
    recency: float
    usage: float
    priority: float
    #: ``model@revision/dim`` of the vectors compared, or None: no embedding took part
    #: (no embedder, embeddings turned off, or no vector of the current model yet)
    embedding_model: str | None

    @property
    def embedding_used(self) -> bool:
        return self.embedding_model is not None

    def to_json(self) -> dict[str, Any]:
        m = self.memory
        return {
            "id": m.id,
            "kind": m.kind,
            "text": m.text,
            "tags": list(m.tags),
            "source": m.source,
            "status": m.status,
            "score": self.score,
            "components": {
                "tfidf": self.tfidf,
                "embedding": self.embedding,
                "dynamic": self.dynamic,
            },
            "dynamic_parts": {
                "recency": self.recency,
                "usage": self.usage,
                "priority": self.priority,
            },
            "embedding_used": self.embedding_used,
            "embedding_model": self.embedding_model,
            "created": iso(m.created),
            "used": iso(m.used) if m.used is not None else None,
            "use_count": m.use_count,
        }
