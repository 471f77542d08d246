"""What ``switchyard audit verify --json`` prints: one shape for both stores (docs/json.md).

It was a chain's report on a machine's SQLite log and ``ok`` plus ``chains`` on the team
store, so a script had to know which store answered (a team machine falls back to its
SQLite files when the database is away). Now both carry every key; what does not apply
to a store is null there.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from app.audit.canonical import VerifyReport


class _Strict(BaseModel):
    # every key required and no other: the tests hold both stores' output to this
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChainResult(_Strict):
    """One chain's report. ``chain``, ``user``, ``host``: null on a machine's own log,
    whose one chain has no id and no owner record."""

    chain: str | None
    user: str | None
    host: str | None
    ok: bool
    lines_checked: int
    first_bad_seq: int | None
    problem: str | None
    head_hash: str | None

    @classmethod
    def of(
        cls, report: VerifyReport, chain: str | None = None, user: str = "", host: str = ""
    ) -> ChainResult:
        return cls(
            chain=chain,
            user=user if chain is not None else None,
            host=host if chain is not None else None,
            **report.model_dump(),
        )


class VerifyResult(_Strict):
    """Every chain checked, and the whole: ``first_bad_seq`` and ``problem`` are the first
    failing chain's (the one the error line names), ``head_hash`` the chain's when one
    was checked (several have no one head), ``lines_checked`` the sum."""

    store: Literal["sqlite", "postgresql"]
    ok: bool
    lines_checked: int
    first_bad_seq: int | None
    problem: str | None
    head_hash: str | None
    chains: list[ChainResult]

    @classmethod
    def of(cls, chains: list[ChainResult], *, shared: bool) -> VerifyResult:
        bad = next((c for c in chains if not c.ok), None)
        return cls(
            store="postgresql" if shared else "sqlite",
            ok=bad is None,
            lines_checked=sum(c.lines_checked for c in chains),
            first_bad_seq=bad.first_bad_seq if bad else None,
            problem=bad.problem if bad else None,
            head_hash=chains[0].head_hash if len(chains) == 1 else None,
            chains=chains,
        )
