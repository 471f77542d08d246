"""``simulate(collected, new, against)``: replay every recorded request under both
policies, in order, each with its own simulated ledger, and compare (pure).

The caps bind as they would have: besides the replayed requests' own spend, each ledger
is charged what every other recorded cloud call cost (requests outside the range or the
session asked for, requests that cannot be replayed, lines from before decisions were
recorded), at the point in the log where it was made. On the team store, where the caps
are shared, it is charged the rest of the team's spend too (:mod:`.team`), each charge
between the replayed lines the database received before and after it.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from app.policy.schema import Policy
from app.router.ledger.money import NANO
from app.router.recorded import CHECK
from app.router.simulate.gcpause import gc_paused
from app.router.simulate.picks import Outcome, role_view
from app.router.simulate.replay import Replayer
from app.router.simulate.report import (
    BlockedRow,
    CapReached,
    Change,
    PolicyRef,
    Range,
    RoleRow,
    SimulationReport,
    SpendRow,
    TeamSpend,
    Unsimulated,
)
from app.router.simulate.requests import PLANNER, SIDECAR, Call, Collected, Request
from app.router.simulate.team import Charge, TeamCharges
from app.router.simulate.world import World

TOP_CHANGES = 10
#: request seqs listed when the replay under the current policy differs from the record
DIFFERS_LISTED = 20

_LOCAL_KINDS = frozenset({"route", "runtime_fallback", CHECK})

WHY_OLD = "written before decisions recorded their inputs"
WHY_UNREADABLE = "recorded inputs do not read"
WHY_ROLE_AGAINST = "role not in the current policy"
WHY_ROLE_NEW = "role not in the new policy"
WHY_LOCAL_ONLY = "local_only was on and the new policy turns it off (its source is not recorded)"
WHY_UNCHECKED = (
    "an Architect's decision on its final plan from before it was recorded (its confidence "
    "and scope are not in the log, and the policies' architect triggers differ)"
)
WHY_SIDECAR_UNCHECKED = (
    "a run's occasion for a second opinion with no decision of the sidecar's in the log "
    "(no trigger fired, from before that was recorded; and the policies' second_opinion "
    "triggers differ)"
)
WHY_KEPT_LOCAL = (
    "a cloud_only request kept local at its first decision, from before that decision was "
    "recorded (only its skip lines are in the log, and the policies decide its role "
    "or budget differently)"
)


@dataclass(slots=True)
class _CapHit:
    seq: int
    ts: str
    limit_usd: float
    blocked: int = 0


@dataclass(frozen=True)
class Filters:
    """ISO dates or times; ``until`` as a bare date means the end of that day."""

    since: str | None = None
    until: str | None = None
    session: str | None = None

    def within(self, ts: str, session: str) -> bool:
        if self.session is not None and session != self.session:
            return False
        if self.since is not None and ts < self.since:
            return False
        if self.until is not None:
            return (
                ts[: len(self.until)] <= self.until if len(self.until) == 10 else ts <= self.until
            )
        return True


def describe(out: Outcome) -> str:
    if out.kind in ("cloud", "local"):
        return f"{out.target} ({out.kind})"
    return out.kind if out.target is None else f"{out.kind} at {out.target}"


def change_kind(a: Outcome, b: Outcome) -> str | None:
    if a.key == b.key:
        return None
    if a.kind != "cloud" and b.kind == "cloud":
        return "escalation_added"
    if a.kind == "cloud" and b.kind != "cloud":
        return "escalation_removed"
    return "different_target"


def _usd(n: int) -> float:
    return round(n / NANO, 6)


class _Tally:
    """The counters the report is made of, filled request by request."""

    def __init__(self) -> None:
        self.roles: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.spend: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        self.blocked: list[BlockedRow] = []
        self.caps: dict[tuple[str, str, str, str | None], _CapHit] = {}
        self.top: list[tuple[int, int, Change]] = []
        self.unsimulated: dict[str, int] = defaultdict(int)
        self.unsimulated_nusd = 0
        self.decisions = 0
        self.changed = 0
        self.differs = 0
        self.differs_seqs: list[int] = []

    def outcome(
        self, policy: str, req: Request, out: Outcome, limit_usd: Callable[[str], float]
    ) -> None:
        if not out.asks and out.kind != "cloud" and not out.blocked:
            return  # nothing to count: most requests
        col = 0 if policy == "against" else 1
        row = self.roles[req.role]
        row[f"approvals_{policy}"] += out.asks
        if out.kind == "cloud":
            row[f"cloud_nusd_{policy}"] += out.cost_nusd
            cell = self.spend[(req.day, str(out.provider))]
            cell[col] += out.cost_nusd
            if out.estimated:
                cell[2 + col] += out.cost_nusd
        seen: set[str] = set()
        caps: set[tuple[str, str, str, str | None]] = set()
        for b in out.blocked:
            if b.model in seen:
                continue
            seen.add(b.model)
            self.blocked.append(
                BlockedRow(
                    policy=policy,
                    seq=req.seq,
                    ts=req.ts,
                    session=req.session,
                    role=req.role,
                    model=b.model,
                    provider=b.provider,
                    cap=b.cap,
                    then=describe(out),
                )
            )
            session = req.session if b.cap == "session" else None
            key = (policy, b.cap, req.day, session)
            hit = self.caps.get(key)
            if hit is None:
                hit = self.caps[key] = _CapHit(req.seq, req.ts, limit_usd(b.cap))
            if key not in caps:  # requests, not the chain steps each one lost
                caps.add(key)
                hit.blocked += 1

    def unchanged(self, req: Request) -> None:
        """A request both policies end as it ended, locally, for free."""
        self.decisions += 1
        self.roles[req.role]["decisions"] += 1

    def compare(self, w: World, a: Outcome, b: Outcome) -> None:
        req = w.req
        self.decisions += 1
        row = self.roles[req.role]
        row["decisions"] += 1
        if a.key != w.recorded_key():
            self.differs += 1
            if len(self.differs_seqs) < DIFFERS_LISTED:
                self.differs_seqs.append(req.seq)
        kind = change_kind(a, b)
        if kind is None:
            return
        self.changed += 1
        row["changed"] += 1
        row[kind] += 1
        delta = b.cost_nusd - a.cost_nusd
        change = Change(
            seq=req.seq,
            ts=req.ts,
            session=req.session,
            role=req.role,
            kind=kind,
            against=describe(a),
            new=describe(b),
            against_usd=_usd(a.cost_nusd),
            new_usd=_usd(b.cost_nusd),
            delta_usd=_usd(delta),
            estimated=(a.kind == "cloud" and a.estimated) or (b.kind == "cloud" and b.estimated),
            reasons=list(b.reasons if b.kind == "cloud" else a.reasons),
        )
        # the biggest by dollars moved, the earliest first on a tie
        entry = (abs(delta), -req.seq, change)
        if len(self.top) < TOP_CHANGES:
            heapq.heappush(self.top, entry)
        elif entry[:2] > self.top[0][:2]:
            heapq.heapreplace(self.top, entry)


class _TeamFeed:
    """The rest of the team's charges, fed to both ledgers up to each replayed line: those
    the database took before it received the line (a decision's line is written after
    the ledger read its decision went by)."""

    def __init__(self, team: TeamCharges, replayers: tuple[Replayer, ...]) -> None:
        self._charges = team.charges
        self._received = team.received
        self._replayers = replayers
        self._next = 0
        self.calls = 0
        self.nusd = 0
        #: reservations made and not yet closed, and those a replayed request met
        self._open: set[str] = set()
        self._met: set[str] = set()

    def upto(self, seq: int, request: bool) -> None:
        at = self._received.get(seq)
        if at is not None:  # (a line with no time of the database's: fed at the next one)
            charges = self._charges
            while self._next < len(charges) and charges[self._next].at < at:
                self._feed(charges[self._next])
                self._next += 1
        if request:
            self._met |= self._open

    def _feed(self, c: Charge) -> None:
        for replayer in self._replayers:
            replayer.ledger.charge(c.session, c.day, c.provider, c.amount, user=c.user)
        if c.reservation is not None:
            if c.cost is None:
                self._open.add(c.reservation)
            else:
                self._open.discard(c.reservation)
        if c.cost:
            self.calls += 1
            self.nusd += c.cost

    def report(self) -> TeamSpend:
        return TeamSpend(calls=self.calls, usd=_usd(self.nusd), in_flight=len(self._met))


def simulate(
    collected: Collected,
    new: Policy,
    against: Policy,
    *,
    new_ref: PolicyRef,
    against_ref: PolicyRef,
    filters: Filters | None = None,
    trust_record: bool = True,
    team: TeamCharges | None = None,
) -> SimulationReport:
    """``trust_record``: a first decision made under the very policy replayed, from the
    same state and budget, is read from its line instead of being made again (decide()
    is deterministic, GR-004); False re-makes every one (the property tests do both).
    ``team``: the rest of the team's spend, when ``collected`` is a chain of the team
    store (:func:`~app.router.simulate.team.read_team_charges`)."""
    with gc_paused():
        return _simulate(collected, new, against, new_ref, against_ref, filters, trust_record, team)


def _simulate(
    collected: Collected,
    new: Policy,
    against: Policy,
    new_ref: PolicyRef,
    against_ref: PolicyRef,
    filters: Filters | None,
    trust_record: bool,
    team: TeamCharges | None,
) -> SimulationReport:
    filters = filters or Filters()
    user = team.user if team is not None else None
    rep_a = Replayer(against, trust_record=trust_record, user=user)
    rep_b = Replayer(new, trust_record=trust_record, reference=rep_a, user=user)
    feed = _TeamFeed(team, (rep_a, rep_b)) if team is not None else None
    tally = _Tally()
    events: list[tuple[int, Call | Request]] = [(c.seq, c) for c in collected.loose_calls]
    for req in collected.requests:
        if not filters.within(req.ts, req.session):
            events += [(c.seq, c) for c in req.calls]
            continue
        why = _unsimulated(req, new, against)
        if why is None:
            events.append((req.seq, req))
            continue
        tally.unsimulated[why] += 1
        tally.unsimulated_nusd += sum(c.cost_nusd for c in req.calls if c.cloud)
        events += [(c.seq, c) for c in req.calls]
    for old in collected.old:
        if filters.within(old.ts, old.session):
            tally.unsimulated[WHY_OLD] += 1
    if collected.unchecked and new.triggers_for(PLANNER) != against.triggers_for(PLANNER):
        # (under the same triggers it would stay as it was, local: nothing to replay)
        for old in collected.unchecked:
            if filters.within(old.ts, old.session):
                tally.unsimulated[WHY_UNCHECKED] += 1
    if collected.unchecked_sidecar and new.triggers_for(SIDECAR) != against.triggers_for(SIDECAR):
        # (under the same triggers none would fire now either: it stays unasked)
        for old in collected.unchecked_sidecar:
            if filters.within(old.ts, old.session):
                tally.unsimulated[WHY_SIDECAR_UNCHECKED] += 1
    if collected.kept_local:
        differs: dict[str | None, bool] = {}
        same_budget = new.budget == against.budget
        for old in collected.kept_local:
            if old.role not in differs:
                role = str(old.role)
                differs[old.role] = not same_budget or role_view(new, role) != role_view(
                    against, role
                )
            if differs[old.role] and filters.within(old.ts, old.session):
                tally.unsimulated[WHY_KEPT_LOCAL] += 1
    for call in collected.loose_calls:
        if call.cloud and filters.within(call.ts, call.session):
            tally.unsimulated_nusd += call.cost_nusd
    events.sort(key=lambda e: e[0])

    for seq, event in events:
        if feed is not None:
            feed.upto(seq, not isinstance(event, Call))
        if isinstance(event, Call):
            if event.cloud and event.cost_nusd:
                for replayer in (rep_a, rep_b):
                    provider = event.provider or _provider_of(event.model, replayer.policy)
                    replayer.ledger.settle(event.session, event.ts[:10], provider, event.cost_nusd)
            continue
        req = event
        world = World.of(req)
        if _local_as_recorded(world, rep_a, rep_b):
            tally.unchanged(req)
            continue
        recorded_lo = world.first.local_only
        a = rep_a.replay(world, recorded_lo or against.privacy.local_only)
        b = rep_b.replay(world, recorded_lo or new.privacy.local_only)
        tally.outcome("against", req, a, rep_a.ledger.limit_usd)
        tally.outcome("new", req, b, rep_b.ledger.limit_usd)
        tally.compare(world, a, b)
    team_spend = feed.report() if feed is not None else None
    return _report(tally, new_ref, against_ref, filters, collected.start, team_spend)


def _local_as_recorded(w: World, a: Replayer, b: Replayer) -> bool:
    """Most requests: decided once, locally, with no budget read, under a policy both
    replays read their decisions from (:meth:`Replayer.trust`), and local_only as it
    was. Both replays end it as it ended, at no cost and with no approval: the full
    replay would say the same (the property tests compare the two), only slower."""
    req = w.req
    if not w.single or req.budget_skips:
        return False
    step = req.steps[0]
    first = step.inputs
    if step.kind not in _LOCAL_KINDS or first.left is not None or first.policy is None:
        return False
    if not first.local_only and (a.policy.privacy.local_only or b.policy.privacy.local_only):
        return False
    (fp_a, quiet_a), (fp_b, quiet_b) = a.trust(req.role), b.trust(req.role)
    if first.policy != fp_a or first.policy != fp_b:
        return False
    return not ((quiet_a and not a.quiet(w)) or (quiet_b and not b.quiet(w)))


def _unsimulated(req: Request, new: Policy, against: Policy) -> str | None:
    if req.unreadable or not req.steps:
        return WHY_UNREADABLE
    if req.role not in against.roles:
        return WHY_ROLE_AGAINST
    if req.role not in new.roles:
        return WHY_ROLE_NEW
    if req.steps[0].inputs.local_only and against.privacy.local_only and not new.privacy.local_only:
        return WHY_LOCAL_ONLY
    return None


def _provider_of(model: str, policy: Policy) -> str | None:
    spec = policy.models.get(policy.resolve(model))
    return spec.provider if spec is not None else None


def _report(
    t: _Tally,
    new_ref: PolicyRef,
    against_ref: PolicyRef,
    filters: Filters,
    read_from: int,
    team_spend: TeamSpend | None,
) -> SimulationReport:
    roles = [
        RoleRow(
            role=role,
            decisions=c["decisions"],
            changed=c["changed"],
            escalations_added=c["escalation_added"],
            escalations_removed=c["escalation_removed"],
            different_target=c["different_target"],
            approvals_against=c["approvals_against"],
            approvals_new=c["approvals_new"],
            cloud_usd_against=_usd(c["cloud_nusd_against"]),
            cloud_usd_new=_usd(c["cloud_nusd_new"]),
        )
        for role, c in sorted(t.roles.items())
    ]
    spend = [
        SpendRow(
            day=day,
            provider=provider,
            against_usd=_usd(cell[0]),
            new_usd=_usd(cell[1]),
            against_estimated_usd=_usd(cell[2]),
            new_estimated_usd=_usd(cell[3]),
        )
        for (day, provider), cell in sorted(t.spend.items())
    ]
    caps = [
        CapReached(
            policy=policy,
            cap=cap,
            day=day,
            session=session,
            seq=hit.seq,
            ts=hit.ts,
            blocked=hit.blocked,
            limit_usd=hit.limit_usd,
        )
        for (policy, cap, day, session), hit in sorted(t.caps.items(), key=lambda kv: kv[1].seq)
    ]
    top = [c for _, _, c in sorted(t.top, key=lambda e: (-e[0], -e[1]))]
    against_n = sum(c["cloud_nusd_against"] for c in t.roles.values())
    new_n = sum(c["cloud_nusd_new"] for c in t.roles.values())
    return SimulationReport(
        new=new_ref,
        against=against_ref,
        range=Range(since=filters.since, until=filters.until, session=filters.session),
        decisions=t.decisions,
        changed=t.changed,
        roles=roles,
        spend=spend,
        cloud_usd_against=_usd(against_n),
        cloud_usd_new=_usd(new_n),
        blocked=sorted(t.blocked, key=lambda b: (b.seq, b.policy)),
        caps_reached=caps,
        biggest_changes=top,
        unsimulated=Unsimulated(
            count=sum(t.unsimulated.values()),
            reasons=dict(sorted(t.unsimulated.items())),
            recorded_usd=_usd(t.unsimulated_nusd),
        ),
        against_differs_from_recorded=t.differs,
        differs_seqs=t.differs_seqs,
        read_from_seq=read_from,
        team_spend=team_spend,
    )
