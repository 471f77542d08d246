"""The Librarian's model calls: what every step of a job shares (the router, the task,
the budget, the tally), the sizes that bound a request, and one structured call."""

from __future__ import annotations

import re
from collections.abc import Sequence

from app.backends.base import ChatRequest, Message
from app.counted import counted
from app.pipeline.librarian.notes import (
    MIN_CAPACITY,
    ROLE,
    WINDOW_SHARE,
    LibrarianNotes,
    NotePoint,
    NoteSet,
)
from app.pipeline.librarian.packing import _unique
from app.pipeline.librarian.result import Tally
from app.pipeline.structured import ask_model
from app.router.service import RouteFailed, Router, request_tokens
from app.router.types import Signals


class Caller:
    """One condensation job's access to the models. The map, reduce and escalation steps
    call through it, so every call is counted in one :class:`Tally`."""

    def __init__(
        self,
        router: Router,
        task: str,
        budget: int,
        run: str | None,
        flags: Signals,
    ) -> None:
        self.router = router
        self.policy = router.policy
        self.task = task
        self.budget = budget
        self.run = run
        #: the Librarian's §3 signals of this job (full sweep, contradictions, tool-heavy)
        self.flags = flags
        role = self.policy.roles.get(ROLE)
        self.max_output = role.max_output_tokens if role else 2048
        #: the window of the role's own local model (None: no local runtime can serve)
        self.local_window: int | None = None
        self.tally = Tally()

    # ── sizes ──

    def window(self, model_id: str) -> int:
        known = self.router.backends.context_windows()
        return known.get(model_id, self.policy.model(model_id).context_window)

    def out_room(self, window: int) -> int:
        # what decide() reserves for the answer on a local runtime
        return min(self.max_output, max(window // 4, 1))

    def context_cap(self) -> int | None:
        """The context_estimate threshold of the librarian's trigger: local calls stay
        below it, so a map step never escalates by itself."""
        caps = [
            t.threshold
            for t in self.policy.triggers_for(ROLE)
            if t.signal == "context_estimate" and t.op in ("gt", "ge") and t.threshold
        ]
        return int(min(caps)) if caps else None

    def confidence_threshold(self) -> float | None:
        values = [
            t.threshold
            for t in self.policy.triggers_for(ROLE)
            if t.signal == "local_synth_confidence" and t.op in ("lt", "le")
        ]
        return min((v for v in values if v is not None), default=None)

    def capacity(self, window: int, out_room: int, overhead: int) -> int:
        room = int((window - out_room) * WINDOW_SHARE) - overhead
        cap = self.context_cap()
        if cap is not None:
            room = min(room, cap - overhead)
        return max(MIN_CAPACITY, room)

    def overhead(self, system: str, user: str) -> int:
        return request_tokens(
            ChatRequest(
                messages=[
                    Message(role="system", content=system),
                    Message(role="user", content=user),
                ]
            )
        )

    # ── one structured call ──

    async def ask(
        self,
        cloud_only: bool,
        system: str,
        user: str,
        extra: Signals,
        max_tokens: int,
        known: Sequence[str],
    ) -> tuple[NoteSet | None, str | None]:
        """Notes from one request with one GR-012 repair; (None, why) when unusable.
        RouteRefused / RouteFailed / RouteStaysLocal go to the caller."""
        messages = [Message(role="system", content=system), Message(role="user", content=user)]
        # each request's own size is its context estimate (the router measures it)
        answer = await ask_model(
            self.router,
            ROLE,
            LibrarianNotes,
            messages,
            extra.model_copy(update={"context_estimate": None}),
            run=self.run,
            max_tokens=max(1, max_tokens),
            cloud_only=cloud_only,
            temperature=0,
        )
        self.tally.calls += answer.calls
        if answer.route_failed:
            raise RouteFailed(answer.error or f"{ROLE}: no step could serve")
        if answer.value is None or answer.result is None:
            return None, answer.error
        notes = self._cleaned(answer.value, known)
        if not notes.points:
            # Valid JSON, but nothing to cite: taken as a condensation it would drop every
            # source (and its confidence would vouch for that). The caller keeps them.
            return None, "the reply holds no point"
        self.tally.used(answer.result.model, answer.result.escalated)
        return notes, None

    def _cleaned(self, notes: LibrarianNotes, known: Sequence[str]) -> NoteSet:
        """Drop empty points, junk contradictions and source ids the model invented; a
        point left with no id is attributed to every source it was given (it came from
        one of them)."""
        allowed = set(known)
        points: list[NotePoint] = []
        orphans = 0
        for p in notes.points:
            if not _SAYS_SOMETHING.search(p.text):
                continue
            ids = _unique(s for s in p.sources if s in allowed)
            if not ids:
                orphans += 1
                ids = _unique(known)[:12]
            points.append(NotePoint(text=p.text, sources=ids))
        if orphans:
            self.tally.notes.append(
                f"{counted(orphans, 'point')} named no known source id: attributed to their group"
            )
        contradictions = _unique(c.strip() for c in notes.contradictions if is_contradiction(c))
        return NoteSet(points, contradictions, notes.confidence)


#: a point with no letter or digit (" ", "-", "…") says nothing
_SAYS_SOMETHING = re.compile(r"\w")
_WORD = re.compile(r"[^\W\d_]{2,}")
#: what models put in ``contradictions`` when they found none
_NONE_FOUND = re.compile(
    r"^\W*(none|nothing|n/?a|null|nil|no)(\W+(found|detected|identified|noted|here))?\W*$"
    r"|\bno\s+(contradictions?|conflicts?|disagreements?)\b",
    re.IGNORECASE,
)


def is_contradiction(text: str) -> bool:
    """Whether a reply's ``contradictions`` entry is words about the sources, not a
    number, a placeholder or "no contradictions": a junk entry would be passed on as a
    finding and fire the Librarian's contradictions trigger (an escalation request)."""
    return len(_WORD.findall(text)) >= 2 and not _NONE_FOUND.search(text)
