"""What ``switchyard policy simulate`` reports (``--json`` prints it as it is).

"against" is the current policy, "new" the proposed one. Dollars are USD; a figure
marked estimated rests on tokens the router never sent to a cloud model (an escalation
only the new policy makes is priced on the request's recorded local call).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, computed_field


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PolicyRef(Model):
    path: str
    version: str


class Range(Model):
    since: str | None = None
    until: str | None = None
    session: str | None = None


class RoleRow(Model):
    role: str
    decisions: int
    changed: int
    escalations_added: int
    escalations_removed: int
    different_target: int
    approvals_against: int
    approvals_new: int
    cloud_usd_against: float
    cloud_usd_new: float


class SpendRow(Model):
    day: str
    provider: str
    against_usd: float
    new_usd: float
    #: the part of each that is an estimate
    against_estimated_usd: float
    new_estimated_usd: float


class BlockedRow(Model):
    policy: str  # against | new
    seq: int
    ts: str
    session: str
    role: str
    model: str
    provider: str
    cap: str  # session | day | user:NAME (the team store's) | provider:NAME
    #: what served the request instead
    then: str


class CapReached(Model):
    policy: str
    cap: str
    day: str
    session: str | None = None
    limit_usd: float
    #: the first request it blocked
    seq: int
    ts: str
    blocked: int


class Change(Model):
    seq: int
    ts: str
    session: str
    role: str
    kind: str  # escalation_added | escalation_removed | different_target
    against: str
    new: str
    against_usd: float
    new_usd: float
    delta_usd: float
    estimated: bool
    reasons: list[str] = Field(default_factory=list)


class Unsimulated(Model):
    count: int = 0
    reasons: dict[str, int] = Field(default_factory=dict)
    #: what those requests cost as recorded (their calls still count toward the caps)
    recorded_usd: float = 0.0


class TeamSpend(Model):
    """On the team store: the rest of the team's spend both simulated ledgers were
    charged, each charge where the team ledger made it (the replayed chain's own costs
    are replayed, not read)."""

    #: the team's calls that cost something, closed before the last replayed line
    calls: int
    usd: float
    #: reservations of the team's calls in flight when a replayed request was decided
    #: (they counted against the caps then, as they did for the router)
    in_flight: int


class SimulationReport(Model):
    new: PolicyRef
    against: PolicyRef
    range: Range
    decisions: int
    changed: int
    roles: list[RoleRow]
    spend: list[SpendRow]
    cloud_usd_against: float
    cloud_usd_new: float
    blocked: list[BlockedRow]
    caps_reached: list[CapReached]
    biggest_changes: list[Change]
    unsimulated: Unsimulated
    #: requests whose replay under the current policy does not end as recorded (another
    #: policy was in force, or concurrent requests raced for a cap), first seqs listed
    against_differs_from_recorded: int = 0
    differs_seqs: list[int] = Field(default_factory=list)
    #: the first audit line read, the chain verified from it to its head: 1 unless the
    #: range asked for (``since``, ``session``) needs only the lines from a later one
    read_from_seq: int = 1
    #: the team store's rest of the team's spend that was counted; None on a machine's
    #: own log, which holds every cost its caps count
    team_spend: TeamSpend | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def empty(self) -> bool:
        """Nothing in the range: no decision, replayable or not."""
        return self.decisions == 0 and self.unsimulated.count == 0
