"""The audit lines a simulation reads, grouped into the requests that made them.

A request (one ``Router.complete``) decides one or more times: each decision is a line
of a :data:`~app.router.recorded.DECISION_KINDS` kind carrying the inputs decide() read,
and a served request ends in a ``call`` line with its tokens. Lines name their request
with ``values["req"]`` (:mod:`app.router.recorded`). What cannot be grouped is kept
apart: decision lines written before the inputs were recorded (counted, never guessed)
and the cost of calls that belong to no replayable request (a simulated ledger still
charges them, so the caps bind as they did).

A ``check`` line (:data:`~app.router.recorded.CHECK`) is a request that asked no model:
a pipeline step's escalation decision that sent nothing to the cloud (the Architect's on
its final plan, the second opinion's gate, ACE's and the Librarian's escalations kept
local at once, read with their skip lines). What the log shows of such decisions from
before they were recorded is kept apart, counted, never guessed:

- a run whose Architect planned (its Implementer was routed after it) with no decision
  on the plan, neither a check nor an escalation that read the plan's confidence
  (:attr:`Collected.unchecked`);
- a run's occasion for a second opinion (the Judge's High-Risk change, a plan whose
  trigger fired and that the cloud planner did not serve, the escalated plan still low,
  the Implementer's attempts spent) with no decision of the sidecar's
  (:attr:`Collected.unchecked_sidecar`);
- skip lines no decision line followed: a ``cloud_only`` request kept local at its first
  decision (:attr:`Collected.kept_local`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from sys import intern
from types import MappingProxyType
from typing import Any, NamedTuple

from app.router.ledger.money import NANO
from app.router.recorded import CHECK, DECISION_KINDS, RecordedInputs, read_inputs
from app.router.simulate.gcpause import gc_paused
from app.router.types import Signals


class Inputs:
    """A decision line's recorded inputs (read with :class:`RecordedInputs`), kept small:
    a log holds a hundred thousand. The signals stay the line's own mapping until a
    replay asks for them (most never do)."""

    __slots__ = (
        "_signals",
        "approved",
        "denied",
        "down",
        "failed",
        "left",
        "local_only",
        "policy",
        "unavailable",
        "windows",
    )

    def __init__(self, read: RecordedInputs, signals: Mapping[str, Any]) -> None:
        self.policy = read.policy
        self.local_only = read.local_only
        self.left = read.left
        self.down: tuple[str, ...] = tuple(read.down)
        self.failed: Mapping[str, str] = read.failed or _NO_MAP
        self.denied: tuple[str, ...] = tuple(read.denied)
        self.approved: frozenset[str] = frozenset(read.approved) if read.approved else _NO_SET
        self.unavailable: Mapping[str, str] = read.unavailable or _NO_MAP
        self.windows: Mapping[str, int] = _shared(read.windows)
        self._signals = tuple(signals.items())  # a third of the line's mapping

    def signals(self) -> Signals:
        """The recorded Signals (validated when the line was read)."""
        return Signals.model_validate(dict(self._signals))


_NO_MAP: Mapping[str, Any] = MappingProxyType({})
_NO_SET: frozenset[str] = frozenset()
#: context windows recorded alike, shared (most requests record the same few)
_WINDOWS: dict[tuple[tuple[str, int], ...], Mapping[str, int]] = {}


def _shared(windows: dict[str, int]) -> Mapping[str, int]:
    if not windows:
        return _NO_MAP
    key = tuple(windows.items())
    found = _WINDOWS.get(key)
    if found is None:
        if len(_WINDOWS) > 1024:
            _WINDOWS.clear()
        found = _WINDOWS[key] = MappingProxyType(dict(windows))
    return found


class Step(NamedTuple):
    """One recorded decision of a request (tuples: made by the hundred thousand)."""

    seq: int
    kind: str
    to: str | None
    inputs: Inputs
    #: the line's reason codes, and an escalation's estimate (what decide() returned)
    codes: tuple[str, ...] = ()
    est_cost_usd: float = 0.0


class Call(NamedTuple):
    """One recorded model call: ``model`` is ``model@runtime`` for a local one."""

    seq: int
    ts: str
    session: str
    cloud: bool
    model: str
    provider: str | None
    tokens_in: int
    tokens_out: int
    cost_nusd: int
    #: of tokens_in: read from the provider's prompt cache, written to it (its line's
    #: ``tokens_cached`` and ``tokens_cache_write``; 0 in a line from before them)
    tokens_cached: int = 0
    tokens_cache_write: int = 0


@dataclass(slots=True)
class Request:
    id: int
    #: the seq of its first decision line: where it stands in the replay, and what
    #: ``audit tail`` shows around
    seq: int
    ts: str
    session: str
    role: str
    steps: list[Step]
    calls: list[Call]
    #: the cloud models a budget skipped (its ``skip`` lines)
    budget_skips: list[str]
    #: a decision line of it whose inputs do not read
    unreadable: bool = False
    #: the cloud models skipped as unreachable (no key) before anyone was asked
    unasked: frozenset[str] = frozenset()

    @property
    def day(self) -> str:
        return self.ts[:10]


@dataclass(slots=True)
class OldDecision:
    """A request's end written before decisions recorded their inputs."""

    seq: int
    ts: str
    session: str
    role: str | None


#: the role whose final output a run reads against its triggers (the plan), the signal
#: every record of that decision carries, and the role routed after it in a run
PLANNER = "architect"
PLAN_SIGNAL = "confidence"
AFTER_PLAN = "implementer"
#: the escalation-only second opinion, asked on a run's occasions (its gate's decision)
SIDECAR = "second_opinion"
#: a run's end line says so when the Implementer spent its attempts (its RunStopped:
#: "implementer: 4 failed loops in 4 attempts; …", after "stopped by the user; " or not)
_SPENT = ("implementer: ", " failed loop")


def sidecar_occasion(signals: Mapping[str, Any]) -> str:
    """The occasion a second opinion's recorded signals are about
    (app.pipeline.second_opinion.occasion_signals)."""
    if "failed_loops" in signals:
        return "failure"
    if signals.get("high_risk") is True:
        return "high_risk"
    if "confidence" in signals:
        return "low_confidence"
    return "user_request"


def _fired(kind: str, codes: tuple[str, ...], to: object) -> bool:
    """A decision line names a trigger that fired (a refusal's, and a fallback's, first
    code is its own; so is a check's with no local target)."""
    own = kind in ("refusal", "runtime_fallback") or (kind == CHECK and not to)
    return bool(codes[1:] if own else codes)


@dataclass(slots=True)
class _Planned:
    """What a run's lines say of its Architect's decision on its final plan."""

    #: its first Architect decision line (where it stands in the log)
    at: OldDecision
    #: a decision line of it read the plan's signals (a check, or the escalation)
    recorded: bool = False
    #: the user asked for the escalation: the plan was the cloud's, and no check was made
    asked: bool = False
    #: the Implementer was routed after it: the plan was made
    planned: bool = False


@dataclass(slots=True)
class _Occasions:
    """A run's occasions for a second opinion, as far as its lines say, and those its
    sidecar's decision is recorded for (a request, or the check that none was needed)."""

    seen: dict[str, OldDecision] = field(default_factory=dict)
    decided: set[str] = field(default_factory=set)

    def saw(self, occasion: str, at: OldDecision) -> None:
        self.seen.setdefault(occasion, at)


@dataclass(slots=True)
class _Skipped:
    """Skip lines no decision line followed: a ``cloud_only`` request kept local at its
    first decision, from before its caller recorded that decision (a check)."""

    at: OldDecision
    run: str | None
    #: the triggers that wanted the skipped steps
    codes: tuple[str, ...]
    #: why each step was skipped
    reasons: set[str]
    last: int


@dataclass
class Collected:
    requests: list[Request] = field(default_factory=list)
    #: calls of no replayable request, in seq order
    loose_calls: list[Call] = field(default_factory=list)
    old: list[OldDecision] = field(default_factory=list)
    #: runs whose decision on the final plan is not in the log (written before it was)
    unchecked: list[OldDecision] = field(default_factory=list)
    #: a run's occasion for a second opinion with no decision of the sidecar's in the
    #: log (its gate's, from before it was recorded when no trigger fired)
    unchecked_sidecar: list[OldDecision] = field(default_factory=list)
    #: ``cloud_only`` requests kept local at their first decision with only their skip
    #: lines in the log (written before their callers recorded it), but those skipped
    #: for local_only alone (a replay keeps the recorded local_only: they stay local)
    kept_local: list[OldDecision] = field(default_factory=list)
    lines: int = 0
    #: the first line read (1: the whole log; past the head: none): a range's requests
    #: and every cost their caps count stand from there (app.router.simulate.source)
    start: int = 1


class Collector:
    """Feed it every line of the chain in seq order (:meth:`feed`); then :meth:`done`."""

    def __init__(self) -> None:
        self._by_id: dict[int, Request] = {}
        self._out = Collected()
        #: budget skips written before their request's first decision line, by request
        self._skips: dict[int, list[str]] = {}
        #: by run: its Architect's decision on the final plan, as far as the lines say
        self._plans: dict[str, _Planned] = {}
        #: by run: its occasions for a second opinion
        self._occasions: dict[str, _Occasions] = {}
        #: (run, request) of the Architect's decisions on a plan that fired a trigger:
        #: a second opinion's occasion unless the cloud served it (:meth:`done`)
        self._fired_plans: list[tuple[str, Request]] = []
        #: skip lines by their request, until a decision line of it comes
        self._skipped: dict[int, _Skipped] = {}

    def feed(self, line: Mapping[str, Any]) -> None:
        self._out.lines += 1
        kind = line["kind"]
        if kind in DECISION_KINDS:
            if self._skipped:
                self._unskip(line)
            self._decision(line, kind)
        elif kind == "call":
            self._call(line)
        elif kind == "skip":
            self._skip(line)
            self._skipped_step(line)
        elif kind == "run" and line.get("run") is not None:
            self._run_line(line)

    def _decision(self, line: Mapping[str, Any], kind: str) -> None:
        values = line["values"]
        raw = values.get("inputs")
        if raw is None:
            if "req" in values:
                return  # a repair's repeat of its request's cloud step: not a decision
            if kind == "refusal" and not values:
                # the router's, written before decisions recorded their inputs; another
                # writer's refusal (the sandbox's, the Implementer's edits outside an
                # editor's folder) says what it refused in its values, and is no decision
                self._out.old.append(_old(line))
            return
        run = line.get("run")
        if run is not None:
            self._planned(line, run, raw)
        rid = values.get("req", line["seq"])
        req = self._by_id.get(rid)
        if req is None:
            skips = self._skips.pop(rid, []) if self._skips else []
            session, role = intern(line["session"]), intern(line["role"])
            req = Request(rid, line["seq"], line["ts"], session, role, [], [], skips)
            self._by_id[rid] = req
            self._out.requests.append(req)
        read = read_inputs(values)
        if read is None:
            req.unreadable = True
            return
        inputs = Inputs(read, raw["signals"])
        codes = tuple(line.get("reason_codes") or ())
        est = float(values.get("est_cost_usd") or 0.0)
        to = line.get("to")
        if run is not None and read.step == 0 and line["role"] in _OCCASIONS:
            self._occasion(line, run, kind, codes, raw["signals"], req)
        if kind == CHECK and not to:
            kind = "refusal"  # no local target to stand: decide() refused, as a refusal line says
        req.steps.append(Step(line["seq"], kind, intern(to) if to else None, inputs, codes, est))

    def _planned(self, line: Mapping[str, Any], run: str, raw: Any) -> None:
        role = line["role"]
        if role == PLANNER:
            plan = self._plans.get(run)
            if plan is None:
                plan = self._plans[run] = _Planned(_old(line))
            signals = raw.get("signals") if isinstance(raw, dict) else None
            if isinstance(signals, dict):
                if PLAN_SIGNAL in signals:
                    plan.recorded = True
                if signals.get("user_request") is True:
                    plan.asked = True
        elif role == AFTER_PLAN:
            plan = self._plans.get(run)
            if plan is not None:
                plan.planned = True

    def _occasion(
        self,
        line: Mapping[str, Any],
        run: str,
        kind: str,
        codes: tuple[str, ...],
        signals: Mapping[str, Any],
        req: Request,
    ) -> None:
        """A first decision that is, or answers, a run's occasion for a second opinion:
        the sidecar's own; the Judge's on a High-Risk change (asked after the sidecar's
        gate); the Architect's on a plan whose trigger fired (the gate is consulted
        unless the cloud planner serves it: :meth:`done`)."""
        role = line["role"]
        runs = self._occasions.get(run)
        if runs is None:
            runs = self._occasions[run] = _Occasions()
        if role == SIDECAR:
            runs.decided.add(sidecar_occasion(signals))
        elif role == "judge":
            if signals.get("high_risk") is True:
                runs.saw("high_risk", _old(line))
        elif PLAN_SIGNAL in signals and _fired(kind, codes, line.get("to")):
            self._fired_plans.append((run, req))

    def _run_line(self, line: Mapping[str, Any]) -> None:
        """A run's own lines that say a second opinion's gate was consulted: the escalated
        plan still low, or the Implementer's attempts spent (the run's end line)."""
        codes = line.get("reason_codes") or ()
        if line.get("role") == PLANNER and "ARCHITECT_ESCALATED_PLAN_LOW" in codes:
            occasion = "low_confidence"
        elif line.get("role") is None and "outcome" in (line.get("values") or {}):
            detail = str(line.get("detail") or "")
            if not (_SPENT[0] in detail and _SPENT[1] in detail):
                return
            occasion = "failure"
        else:
            return
        run = str(line["run"])
        runs = self._occasions.get(run)
        if runs is None:
            runs = self._occasions[run] = _Occasions()
        runs.saw(occasion, _old(line))

    def _skipped_step(self, line: Mapping[str, Any]) -> None:
        """Skip lines are kept by their request until a decision line of it comes; those
        no decision follows were kept local at once (:attr:`Collected.kept_local`). A
        caller's skip lines written before they named their request, one line each
        (the Librarian's), are read as one decision when they follow each other."""
        values = line["values"]
        seq = line["seq"]
        reason = str(values.get("reason") or "")
        rid = values.get("req")
        codes = tuple(line.get("reason_codes") or ())[1:]
        if rid is not None:
            open_ = self._skipped.get(rid)
            if open_ is not None:
                open_.reasons.add(reason)
                open_.last = seq
            return
        run = line.get("run")
        if self._skipped:
            last = self._skipped[next(reversed(self._skipped))]
            if (
                last.last == seq - 1
                and last.run == run
                and last.at.session == line["session"]
                and last.at.role == line["role"]
                and last.codes == codes
            ):
                last.reasons.add(reason)
                last.last = seq
                return
        self._skipped[seq] = _Skipped(_old(line), run, codes, {reason}, seq)

    def _unskip(self, line: Mapping[str, Any]) -> None:
        values = line["values"]
        if self._skipped.pop(values.get("req", line["seq"]), None) is not None:
            return
        if values.get("inputs") is None and "req" not in values:
            # a decision line from before the lines named their request: its skips were
            # written just before it, each on its own (counted with it as an old one)
            for rid in [
                r
                for r, s in self._skipped.items()
                if s.at.session == line["session"] and s.at.role == line["role"]
            ]:
                del self._skipped[rid]

    def _skip(self, line: Mapping[str, Any]) -> None:
        values = line["values"]
        if values.get("reason") == "budget":
            rid = values.get("req", line["seq"])
            req = self._by_id.get(rid)
            skips = req.budget_skips if req is not None else self._skips.setdefault(rid, [])
            skips.append(str(line.get("to")))
        elif values.get("reason") == "unavailable" and "approver" not in values:
            # the cloud step found no key before asking (a skip after an approval names
            # its approver)
            req = self._by_id.get(values.get("req", -1))
            if req is not None:
                req.unasked = req.unasked | {str(line.get("to"))}

    def _call(self, line: Mapping[str, Any]) -> None:
        values = line["values"]
        to = intern(str(line.get("to") or ""))
        provider = values.get("provider")
        call = Call(
            line["seq"],
            line["ts"],
            intern(line["session"]),
            "@" not in to,
            to,
            intern(provider) if provider else None,
            int(values.get("tokens_in") or 0),
            int(values.get("tokens_out") or 0),
            round(float(values.get("cost_usd") or 0.0) * NANO),
            int(values.get("tokens_cached") or 0),
            int(values.get("tokens_cache_write") or 0),
        )
        req = self._by_id.get(values["req"]) if "req" in values else None
        if req is not None:
            req.calls.append(call)
            return
        if "req" not in values:
            self._out.old.append(_old(line))
        self._out.loose_calls.append(call)

    def done(self) -> Collected:
        self._out.unchecked = [
            p.at for p in self._plans.values() if p.planned and not (p.recorded or p.asked)
        ]
        for run, req in self._fired_plans:
            if not any(c.cloud for c in req.calls):
                # not served by the cloud planner: the run went on with the local plan,
                # and asked the sidecar's gate about it
                at = OldDecision(req.seq, req.ts, req.session, req.role)
                self._occasions[run].saw("low_confidence", at)
        for skipped in self._skipped.values():
            if skipped.run is not None and skipped.at.role == PLANNER and skipped.codes:
                # the plan's escalation kept local at once, from before its check: the run
                # went on with the local plan too
                runs = self._occasions.setdefault(skipped.run, _Occasions())
                runs.saw("low_confidence", skipped.at)
            elif skipped.at.role != PLANNER and skipped.reasons - {"local_only"}:
                # (the Architect's are the run's unchecked plan: Collected.unchecked)
                self._out.kept_local.append(skipped.at)
        self._out.unchecked_sidecar = [
            at
            for runs in self._occasions.values()
            for occasion, at in runs.seen.items()
            if occasion not in runs.decided
        ]
        self._out.unchecked_sidecar.sort(key=lambda o: o.seq)
        return self._out


def _old(line: Mapping[str, Any]) -> OldDecision:
    return OldDecision(seq=line["seq"], ts=line["ts"], session=line["session"], role=line["role"])


#: the roles whose first decisions say something of a run's second-opinion occasions
_OCCASIONS = frozenset({SIDECAR, "judge", PLANNER})


def collect(lines: Iterable[Mapping[str, Any]]) -> Collected:
    collector = Collector()
    with gc_paused():
        for line in lines:
            collector.feed(line)
    return collector.done()
