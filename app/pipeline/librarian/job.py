"""The condensation job: map, reduce, the Kimi escalation on its triggers, the audit
line; and the entry point :func:`condense`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.audit.types import AuditSink
from app.backends.base import ChatRequest, Message
from app.pipeline.librarian.notes import (
    EXCERPT_CHARS,
    MAX_REDUCE_ROUNDS,
    MIN_CAPACITY,
    ROLE,
    WINDOW_SHARE,
    Condensed,
    LibrarianNotes,
    NotePoint,
    Source,
)
from app.pipeline.librarian.packing import (
    _clip,
    _Piece,
    _pieces,
    _point_line,
    _source_block,
    _unique,
    pack,
    render_notes,
    render_sources,
)
from app.pipeline.librarian.prompts import (
    MAP_SYSTEM,
    REDUCE_SYSTEM,
    WHOLE_SYSTEM,
    _map_user,
    _reduce_user,
)
from app.pipeline.structured import ask_model
from app.router.decide import fired_triggers
from app.router.service import (
    RouteFailed,
    Router,
    RouteRefused,
    RouteStaysLocal,
    request_tokens,
)
from app.router.types import Decision, Signals
from app.stage0.context import context_estimate
from app.tokens import count_text


@dataclass
class _Notes:
    points: list[NotePoint]
    contradictions: list[str]
    confidence: float


class _Job:
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
        self.flags = flags
        role = self.policy.roles.get(ROLE)
        self.max_output = role.max_output_tokens if role else 2048
        self.calls = 0
        self.map_calls = 0
        self.groups = 0
        self.reduce_rounds = 0
        self.models: list[str] = []
        self.model: str | None = None
        self.escalated = False
        self.declined = False
        self.notes: list[str] = []
        self.codes: list[str] = []
        self.local_window: int | None = None

    # ── sizes ──

    def _window(self, model_id: str) -> int:
        known = self.router.backends.context_windows()
        return known.get(model_id, self.policy.model(model_id).context_window)

    def _out_room(self, window: int) -> int:
        # what decide() reserves for the answer on a local runtime
        return min(self.max_output, max(window // 4, 1))

    def _context_cap(self) -> int | None:
        """The context_estimate threshold of the librarian's trigger: local calls stay
        below it, so a map step never escalates by itself."""
        caps = [
            t.threshold
            for t in self.policy.triggers_for(ROLE)
            if t.signal == "context_estimate" and t.op in ("gt", "ge") and t.threshold
        ]
        return int(min(caps)) if caps else None

    def _confidence_threshold(self) -> float | None:
        values = [
            t.threshold
            for t in self.policy.triggers_for(ROLE)
            if t.signal == "local_synth_confidence" and t.op in ("lt", "le")
        ]
        return min((v for v in values if v is not None), default=None)

    def _capacity(self, window: int, out_room: int, overhead: int) -> int:
        room = int((window - out_room) * WINDOW_SHARE) - overhead
        cap = self._context_cap()
        if cap is not None:
            room = min(room, cap - overhead)
        return max(MIN_CAPACITY, room)

    def _overhead(self, system: str, user: str) -> int:
        return request_tokens(
            ChatRequest(
                messages=[
                    Message(role="system", content=system),
                    Message(role="user", content=user),
                ]
            )
        )

    # ── one structured call ──

    async def _ask(
        self,
        cloud_only: bool,
        system: str,
        user: str,
        extra: Signals,
        max_tokens: int,
        known: Sequence[str],
    ) -> tuple[_Notes | None, str | None]:
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
        self.calls += answer.calls
        if answer.route_failed:
            raise RouteFailed(answer.error or f"{ROLE}: no step could serve")
        if answer.value is None or answer.result is None:
            return None, answer.error
        result = answer.result
        self.model = result.model
        if result.model not in self.models:
            self.models.append(result.model)
        self.escalated = self.escalated or result.escalated
        return self._cleaned(answer.value, known), None

    def _cleaned(self, notes: LibrarianNotes, known: Sequence[str]) -> _Notes:
        """Drop source ids the model invented; a point left with none is attributed to
        every source it was given (it came from one of them)."""
        allowed = set(known)
        points: list[NotePoint] = []
        orphans = 0
        for p in notes.points:
            ids = _unique(s for s in p.sources if s in allowed)
            if not ids:
                orphans += 1
                ids = _unique(known)[:12]
            points.append(NotePoint(text=p.text, sources=ids))
        if orphans:
            self.notes.append(
                f"{orphans} point(s) named no known source id: attributed to their group"
            )
        return _Notes(points, list(notes.contradictions), notes.confidence)

    # ── map ──

    def _map_request(self, pieces: Sequence[_Piece], target: int, whole: bool) -> tuple[str, str]:
        return (WHOLE_SYSTEM if whole else MAP_SYSTEM), _map_user(self.task, pieces, target)

    async def _map_group(
        self,
        cloud_only: bool,
        pieces: Sequence[_Piece],
        extra: Signals,
        max_tokens: int,
        whole: bool,
    ) -> tuple[_Notes | None, str | None]:
        system, user = self._map_request(pieces, max(64, self.budget), whole)
        known = _unique(p.id for p in pieces)
        before = self.calls
        try:
            return await self._ask(cloud_only, system, user, extra, max_tokens, known)
        except RouteFailed as exc:
            return None, str(exc)
        finally:
            self.map_calls += self.calls - before

    def _excerpt(self, pieces: Sequence[_Piece]) -> _Notes:
        points = []
        for piece in pieces:
            flat = " ".join(piece.text.split())
            cut = flat[:EXCERPT_CHARS] + ("…" if len(flat) > EXCERPT_CHARS else "")
            points.append(NotePoint(text=f"(raw excerpt) {cut}"[:600], sources=[piece.id]))
        return _Notes(points, [], 0.0)

    async def map_local(self, sources: Sequence[Source]) -> list[_Notes]:
        if self.local_window is None:
            raise RouteFailed(f"{ROLE}: no local runtime can serve the map step")
        window = self.local_window
        out_room = self._out_room(window)
        overhead = self._overhead(*self._map_request([], max(64, self.budget), False))
        capacity = self._capacity(window, out_room, overhead)
        pieces = _pieces(sources, capacity)
        groups = pack([p.cost for p in pieces], capacity)
        self.groups += len(groups)
        self.codes.append("LIBRARIAN_MAP_REDUCE")
        out: list[_Notes] = []
        for n, group in enumerate(groups, start=1):
            chosen = [pieces[i] for i in group]
            notes, why = await self._map_group(False, chosen, Signals(), out_room, False)
            if notes is None:
                self.codes.append("LIBRARIAN_MAP_UNUSABLE")
                self.notes.append(
                    f"map group {n}/{len(groups)} ({chosen[0].id} …): {why}; kept a raw excerpt"
                )
                notes = self._excerpt(chosen)
            out.append(notes)
        return out

    async def map_cloud(self, sources: Sequence[Source], target: str) -> list[_Notes]:
        """The job on the escalation target's window; what it does not serve goes local."""
        window = self._window(target)
        out_room = min(self.max_output, max(1024, self.budget * 2))
        system, user = self._map_request([], max(64, self.budget), True)
        overhead = self._overhead(system, user)
        capacity = max(MIN_CAPACITY, int((window - self.max_output) * WINDOW_SHARE) - overhead)
        pieces = _pieces(sources, capacity)
        costs = [p.cost for p in pieces]
        groups = [[pieces[i] for i in g] for g in pack(costs, capacity, balanced=True)]
        if len(groups) > 1:
            self.codes.append("LIBRARIAN_MAP_REDUCE")
        out: list[_Notes] = []
        for n, group in enumerate(groups):
            try:
                notes, why = await self._map_group(
                    True, group, self.flags, out_room, whole=len(groups) == 1
                )
            except (RouteStaysLocal, RouteRefused) as exc:
                decision = exc.decision
                if isinstance(exc, RouteStaysLocal) and not decision.reasons:
                    # no trigger fires for this part on its own: it is mapped locally
                    out += await self.map_local([(p.id, p.text) for p in group])
                    continue
                self._declined(decision)
                rest = [(p.id, p.text) for g in groups[n:] for p in g]
                return out + await self.map_local(rest)
            self.groups += 1
            if notes is None:
                self.codes.append("LIBRARIAN_ESCALATED_REPLY_UNUSABLE")
                self.notes.append(f"{target}: {why}; that part is condensed locally")
                out += await self.map_local([(p.id, p.text) for p in group])
                continue
            out.append(notes)
        return out

    def _declined(self, decision: Decision, then: str = "condensing locally") -> None:
        self.declined = True
        self.codes.append("LIBRARIAN_ESCALATION_DECLINED")
        denied = [s.model for s in decision.skipped if s.reason == "denied"]
        why = f"denied ({', '.join(denied)})" if denied else "; ".join(decision.notes)
        self.notes.append(f"the escalation was not served: {why or 'not served'}; {then}")

    # ── reduce ──

    async def reduce(self, notes: _Notes, force: bool) -> _Notes:
        """Merge ``notes`` locally until they fit the budget (at most MAX_REDUCE_ROUNDS
        rounds in all); ``force``: one round even if they fit (several map groups)."""
        current = notes
        while self.reduce_rounds < MAX_REDUCE_ROUNDS and self.local_window is not None:
            if not force and self._tokens(current) <= self.budget:
                break
            force = False
            self.reduce_rounds += 1
            new, stop = await self._reduce_round(current, self.local_window)
            better = self._tokens(new) <= self.budget or self._tokens(new) < self._tokens(current)
            if better:
                current = new
            if stop or not better:
                break
        return current

    async def _reduce_round(self, current: _Notes, window: int) -> tuple[_Notes, bool]:
        out_room = self._out_room(window)
        overhead = self._overhead(REDUCE_SYSTEM, _reduce_user(self.task, [], self.budget))
        capacity = self._capacity(window, out_room, overhead)
        groups = pack([count_text(_point_line(p)) + 1 for p in current.points], capacity)
        target = max(64, self.budget // max(1, len(groups)))
        merged: list[NotePoint] = []
        contradictions = list(current.contradictions)
        confidences: list[float] = []
        stop = False
        for n, group in enumerate(groups, start=1):
            points = [current.points[i] for i in group]
            known = _unique(s for p in points for s in p.sources)
            try:
                got, why = await self._ask(
                    False,
                    REDUCE_SYSTEM,
                    _reduce_user(self.task, points, target),
                    Signals(),
                    out_room,
                    known,
                )
            except (RouteRefused, RouteFailed) as exc:
                got, why, stop = None, str(exc), True
            if got is None:
                self.codes.append("LIBRARIAN_REDUCE_UNUSABLE")
                self.notes.append(
                    f"reduce round {self.reduce_rounds}, group {n}/{len(groups)}: {why}; "
                    "kept its notes as they were"
                )
                merged += points
                confidences.append(current.confidence)
                continue
            merged += got.points
            contradictions += got.contradictions
            confidences.append(got.confidence)
        conf = min(confidences, default=current.confidence)
        return _Notes(merged, _unique(contradictions)[:8], conf), stop

    def _tokens(self, notes: _Notes) -> int:
        return count_text(render_notes(notes.points, notes.contradictions))

    # ── the low-confidence escalation ──

    async def second_try(self, sources: Sequence[Source], local: _Notes) -> _Notes | None:
        """One request with ``local_synth_confidence`` so the router may escalate; None:
        not served (the local result stands). It carries the whole sources when they fit
        the escalation target's window, else the local notes to improve."""
        signals = self.flags.model_copy(update={"local_synth_confidence": local.confidence})
        pieces = [_Piece(sid, text) for sid, text in sources]
        system, user = self._map_request(pieces, max(64, self.budget), True)
        known = _unique(sid for sid, _ in sources)
        fired = fired_triggers(self.policy, ROLE, signals)
        entry = fired[0][0].target if fired else None
        entry = self.policy.resolve(entry) if entry else ""
        room = self._window(entry) if entry in self.policy.models else None
        if room is not None and self._overhead(system, user) + self.max_output > room:
            # too big for the escalation target in one call: it improves the local notes
            system = REDUCE_SYSTEM
            user = _reduce_user(self.task, local.points, self.budget)
            known = _unique(s for p in local.points for s in p.sources)
        probe = signals.model_copy(update={"context_estimate": self._overhead(system, user)})
        decision = await self.router.decide(ROLE, probe)
        if decision.action != "escalate":
            self.codes.append("LIBRARIAN_ESCALATION_UNAVAILABLE")
            why = "; ".join(decision.notes) or "no cloud step can serve"
            self.notes.append(
                f"local confidence {local.confidence:g}: no escalation ({why}); "
                "kept the local result"
            )
            return None
        out_room = min(self.max_output, max(1024, self.budget * 2))
        try:
            got, problem = await self._ask(True, system, user, signals, out_room, known)
        except (RouteStaysLocal, RouteRefused) as exc:
            self._declined(exc.decision, "kept the local result")
            return None
        except RouteFailed as exc:
            got, problem = None, str(exc)
        if got is None:
            self.codes.append("LIBRARIAN_ESCALATED_REPLY_UNUSABLE")
            self.notes.append(
                f"the escalated reply was unusable ({problem}); kept the local result"
            )
            return None
        return got


# ── The entry point ─────────────────────────────────────────────────────────────────────


async def condense(
    router: Router,
    task: str,
    sources: Sequence[Source],
    budget: int,
    *,
    run: str | None = None,
    full_sweep: bool = False,
    contradictions_detected: bool = False,
    tool_heavy: bool = False,
    audit: AuditSink | None = None,
) -> Condensed:
    """Condense ``sources`` (ordered ``(id, text)`` pairs) for ``task`` into ``budget``
    tokens. See the module docstring for the steps.

    ``full_sweep`` / ``contradictions_detected`` / ``tool_heavy`` are the Librarian's
    §3 signals; ``context_estimate`` is computed here over the sources. ``audit``
    defaults to the router's audit log. Never raises for a refused or failed route: the
    result is then the sources clipped to the budget, with ``LIBRARIAN_ROUTE_FAILED``.
    """
    if budget < 1:
        raise ValueError("budget must be at least 1 token")
    sink = audit if audit is not None else router.audit
    sources = [(str(sid), str(text)) for sid, text in sources]
    blocks = [_source_block(sid, text) for sid, text in sources]
    whole = render_sources(sources)
    tokens_in = context_estimate([whole])
    if tokens_in <= budget:
        return Condensed(
            text=whole,
            condensed=False,
            model=None,
            tokens_in=tokens_in,
            tokens_out=tokens_in,
            budget=budget,
        )

    flags = Signals(
        full_sweep=full_sweep,
        contradictions_detected=contradictions_detected,
        tool_heavy=tool_heavy,
    )
    job = _Job(router, task, budget, run, flags)
    result: _Notes | None = None
    clipped = False
    try:
        # the role's own model on the first healthy runtime (not whichever runtime happens
        # to fit the whole job, e.g. a tiny embedded model): the groups are cut to its window
        local = await router.decide(ROLE, Signals())
        job.local_window = local.local.context_window if local.local else None
        result = await _condense(job, sources, tokens_in)
    except (RouteRefused, RouteFailed) as exc:
        job.codes.append("LIBRARIAN_ROUTE_FAILED")
        job.notes.append(f"no model could condense: {exc}")
    points: list[NotePoint] = []
    contradictions: list[str] = []
    if result is not None:
        points, contradictions = result.points, result.contradictions
        text = render_notes(points, contradictions)
        if count_text(text) > budget:
            lines = [_point_line(p) for p in points]
            lines += [f"- contradiction: {c}" for c in contradictions]
            text, kept = _clip(lines, budget, "points")
            clipped = True
            job.notes.append(f"clipped to {kept} of {len(lines)} points")
            points = points[:kept]
            contradictions = contradictions[: max(0, kept - len(result.points))]
    else:
        text, kept = _clip(blocks, budget, "sources")
        clipped = True
        job.notes.append(f"clipped to {kept} of {len(blocks)} sources")
    if clipped:
        job.codes.append("LIBRARIAN_CLIPPED")
    tokens_out = count_text(text)
    codes = _unique(job.codes)
    condensed = Condensed(
        text=text,
        condensed=True,
        model=job.model,
        models=job.models,
        escalated=job.escalated,
        calls=job.calls,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        budget=budget,
        confidence=result.confidence if result is not None else None,
        points=points,
        contradictions=contradictions,
        notes=job.notes,
        reason_codes=codes,
        groups=job.groups,
        map_calls=job.map_calls,
        reduce_rounds=job.reduce_rounds,
        clipped=clipped,
    )
    how = f"{job.map_calls} map call(s), {job.reduce_rounds} reduce round(s)"
    await sink.append(
        "condense",
        session=router.session,
        run=run,
        role=ROLE,
        to=job.model,
        reason_codes=codes,
        values={
            "sources": len(sources),
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "budget": budget,
            "groups": job.groups,
            "map_calls": job.map_calls,
            "reduce_rounds": job.reduce_rounds,
            "calls": job.calls,
            "model": job.model,
            "models": job.models,
            "escalated": job.escalated,
            "confidence": condensed.confidence,
            "local_window": job.local_window,
            "clipped": clipped,
        },
        detail=f"{len(sources)} sources, ~{tokens_in} → ~{tokens_out} tokens (budget {budget}): "
        + how
        + (f", by {', '.join(job.models)}" if job.models else "")
        + (" [escalated]" if job.escalated else "")
        + (" [clipped]" if clipped else ""),
    )
    return condensed


async def _condense(job: _Job, sources: Sequence[Source], tokens_in: int) -> _Notes:
    router = job.router
    signals = job.flags.model_copy(update={"context_estimate": tokens_in})
    fired = fired_triggers(job.policy, ROLE, signals)
    notes: list[_Notes] | None = None
    if fired:
        job.codes += [reason.code for _, reason in fired]
        decision = await router.decide(ROLE, signals)
        too_big = any(
            s.runtime == "cloud" and s.reason == "context_too_small" for s in decision.skipped
        )
        entry = fired[0][0].target
        if decision.action != "escalate" and too_big and entry:
            # the whole job does not fit one call: the target's window, in big groups
            room = job._window(job.policy.resolve(entry)) - job.max_output
            probe = await router.decide(ROLE, signals.model_copy(update={"context_estimate": room}))
            decision = probe if probe.action == "escalate" else decision
        if decision.action == "escalate" and decision.target is not None:
            notes = await job.map_cloud(sources, decision.target)
        else:
            job.codes.append("LIBRARIAN_ESCALATION_UNAVAILABLE")
            why = "; ".join(decision.notes) or "no cloud step can serve"
            job.notes.append(f"the escalation is unavailable ({why}); condensing locally")
    if notes is None:
        notes = await job.map_local(sources)
    if job.escalated:
        job.codes.append("LIBRARIAN_ESCALATED")
    merged = _Notes(
        [p for n in notes for p in n.points],
        _unique(c for n in notes for c in n.contradictions)[:8],
        min((n.confidence for n in notes), default=0.0),
    )
    result = await job.reduce(merged, force=len(notes) > 1)
    threshold = job._confidence_threshold()
    if (
        threshold is not None
        and result.confidence < threshold
        and not job.escalated
        and not job.declined
    ):
        job.codes.append("LIBRARIAN_LOW_SYNTH_CONFIDENCE")
        better = await job.second_try(sources, result)
        if better is not None:
            job.codes.append("LIBRARIAN_ESCALATED")
            result = await job.reduce(better, force=False)
    return result
