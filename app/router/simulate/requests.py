"""The audit lines a simulation reads, grouped into the requests that made them.

A request (one ``Router.complete``) decides one or more times: each decision is a line
of a :data:`~app.router.recorded.DECISION_KINDS` kind carrying the inputs decide() read,
and a served request ends in a ``call`` line with its tokens. Lines name their request
with ``values["req"]`` (:mod:`app.router.recorded`). What cannot be grouped is kept
apart: decision lines written before the inputs were recorded (counted, never guessed)
and the cost of calls that belong to no replayable request (a simulated ledger still
charges them, so the caps bind as they did).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.router.ledger.money import NANO
from app.router.recorded import DECISION_KINDS, RecordedInputs, read_inputs

#: a hashable form of a request's first inputs, minus the budget (a replay brings its own)
InputsKey = tuple[Any, ...]


@dataclass(slots=True)
class Step:
    """One recorded decision of a request."""

    seq: int
    kind: str
    to: str | None
    inputs: RecordedInputs
    #: the line's reason codes, and an escalation's estimate (what decide() returned)
    codes: tuple[str, ...] = ()
    est_cost_usd: float = 0.0


@dataclass(slots=True)
class Call:
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


@dataclass(slots=True)
class Request:
    id: int
    #: the seq of its first decision line: where it stands in the replay, and what
    #: ``audit tail`` shows around
    seq: int
    ts: str
    session: str
    role: str
    steps: list[Step] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    #: a decision line of it whose inputs do not read
    unreadable: bool = False
    key: InputsKey = ()
    #: the cloud models a budget skipped (its ``skip`` lines)
    budget_skips: list[str] = field(default_factory=list)
    #: the cloud models skipped as unreachable (no key) before anyone was asked
    unasked: set[str] = field(default_factory=set)

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


@dataclass
class Collected:
    requests: list[Request] = field(default_factory=list)
    #: calls of no replayable request, in seq order
    loose_calls: list[Call] = field(default_factory=list)
    old: list[OldDecision] = field(default_factory=list)
    lines: int = 0


class Collector:
    """Feed it every line of the chain in seq order (:meth:`feed`); then :meth:`done`."""

    def __init__(self) -> None:
        self._by_id: dict[int, Request] = {}
        self._out = Collected()
        #: budget skips written before their request's first decision line, by request
        self._skips: dict[int, list[str]] = {}

    def feed(self, line: Mapping[str, Any]) -> None:
        self._out.lines += 1
        kind = line["kind"]
        if kind in DECISION_KINDS:
            self._decision(line, kind)
        elif kind == "call":
            self._call(line)
        elif kind == "skip":
            self._skip(line)

    def _decision(self, line: Mapping[str, Any], kind: str) -> None:
        values = line["values"]
        raw = values.get("inputs")
        if raw is None:
            if "req" in values:
                return  # a repair's repeat of its request's cloud step: not a decision
            if kind == "refusal":
                self._out.old.append(_old(line))
            return
        rid = values.get("req", line["seq"])
        req = self._by_id.get(rid)
        if req is None:
            req = Request(
                id=rid, seq=line["seq"], ts=line["ts"], session=line["session"], role=line["role"]
            )
            req.budget_skips = self._skips.pop(rid, [])
            self._by_id[rid] = req
            self._out.requests.append(req)
        inputs = read_inputs(values)
        if inputs is None:
            req.unreadable = True
            return
        if not req.steps:
            req.key = inputs_key(raw)
        req.steps.append(
            Step(
                seq=line["seq"],
                kind=kind,
                to=line.get("to"),
                inputs=inputs,
                codes=tuple(line.get("reason_codes") or ()),
                est_cost_usd=float(values.get("est_cost_usd") or 0.0),
            )
        )

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
                req.unasked.add(str(line.get("to")))

    def _call(self, line: Mapping[str, Any]) -> None:
        values = line["values"]
        to = str(line.get("to") or "")
        call = Call(
            seq=line["seq"],
            ts=line["ts"],
            session=line["session"],
            cloud="@" not in to,
            model=to,
            provider=values.get("provider"),
            tokens_in=int(values.get("tokens_in") or 0),
            tokens_out=int(values.get("tokens_out") or 0),
            cost_nusd=round(float(values.get("cost_usd") or 0.0) * NANO),
        )
        req = self._by_id.get(values["req"]) if "req" in values else None
        if req is not None:
            req.calls.append(call)
            return
        if "req" not in values:
            self._out.old.append(_old(line))
        self._out.loose_calls.append(call)

    def done(self) -> Collected:
        return self._out


def _old(line: Mapping[str, Any]) -> OldDecision:
    return OldDecision(seq=line["seq"], ts=line["ts"], session=line["session"], role=line["role"])


def inputs_key(raw: Mapping[str, Any]) -> InputsKey:
    """Everything of the first inputs decide() reads but the budget, hashable."""

    def items(name: str) -> tuple[tuple[str, Any], ...]:
        # the stored text is canonical JSON: keys come sorted (another order only misses)
        value = raw.get(name) or {}
        return tuple(value.items())

    return (
        items("signals"),
        bool(raw.get("local_only")),
        tuple(raw.get("down") or ()),
        tuple(raw.get("approved") or ()),
        items("windows"),
        items("unavailable"),
    )


def collect(lines: Iterable[Mapping[str, Any]]) -> Collected:
    collector = Collector()
    for line in lines:
        collector.feed(line)
    return collector.done()
