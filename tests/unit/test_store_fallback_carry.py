"""database_fallback's switch, ordered by events with stores that stand in for the team's
(the PostgreSQL paths are tests/integration/test_team_store_fallback.py): what the team
ledger holds of this process reaches this machine's ledger once, whenever it comes.

A review found both: a team reservation that returned after another request had switched
was counted in neither ledger; a switch that failed half-way gave everything again when
it was tried next."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.clock import SystemClock
from app.router.ledger.records import Reservation
from app.router.store_fallback import FallbackLedger, StoreFallback
from app.store import postgres
from app.store.errors import StorePrivacyError, StoreUnavailable
from app.store.postgres import Probed, gone, gone_or_silent
from app.store.url import parse_database_url


def _reservation(rid: str, **kw: Any) -> Reservation:
    return Reservation(
        id=rid,
        session=kw["session"],
        run="",
        provider=kw["provider"],
        role=kw["role"],
        model=kw["model"],
        amount_usd=kw["amount_usd"],
        created="2026-12-07T00:00:00.000Z",
        expires="2026-12-07T00:05:00.000Z",
    )


class TeamLedger:
    budget = None

    def __init__(self) -> None:
        self.answer = asyncio.Event()

    async def reserve(self, **kw: Any) -> Reservation:
        await self.answer.wait()  # the database answered this one as it went away
        return _reservation("team-1", **kw)

    async def left_usd(self, session: str, provider: str) -> float:
        raise StoreUnavailable("team ledger: connection refused")

    async def close(self) -> None:
        return None


class LocalLedger:
    def __init__(self, fail_after: int | None = None) -> None:
        self.carried: list[float] = []
        self.fail_after = fail_after

    async def record_call(self, **kw: Any) -> tuple[()]:
        if self.fail_after is not None and len(self.carried) >= self.fail_after:
            self.fail_after = None
            raise OSError(28, "No space left on device")
        self.carried.append(kw["cost_usd"])
        return ()

    async def left_usd(self, session: str, provider: str) -> float:
        return 1.0

    async def close(self) -> None:
        return None


class Audit:
    policy_version = "1"
    shared = False

    def __init__(self) -> None:
        self.kinds: list[str] = []

    async def append(self, kind: str, **fields: Any) -> None:
        self.kinds.append(kind)

    async def close(self) -> None:
        return None


def _fallback(local: LocalLedger, audit: Audit, team: TeamLedger) -> StoreFallback:
    async def open_local() -> tuple[Any, Any]:
        return audit, local

    return StoreFallback(
        Audit(),  # type: ignore[arg-type]
        team,  # type: ignore[arg-type]
        session="s",
        database="postgresql://u@127.0.0.1/db",
        clock=SystemClock(),
        open_local=open_local,
    )


ASK = {"session": "s", "provider": "deepseek", "role": "architect", "model": "m"}


async def test_a_team_reservation_that_returns_after_the_switch_is_carried() -> None:
    team, local, audit = TeamLedger(), LocalLedger(), Audit()
    fb = _fallback(local, audit, team)
    ledger = FallbackLedger(fb)
    in_flight = asyncio.create_task(ledger.reserve(**ASK, amount_usd=0.5))
    await asyncio.sleep(0)
    assert await ledger.left_usd("s", "deepseek") == 1.0  # another request switched
    assert local.carried == []  # (nothing was held when the switch read the rows)
    team.answer.set()
    assert (await in_flight).id == "team-1"
    assert local.carried == [0.5]  # counted here, once
    assert audit.kinds == ["degradation", "budget"]


async def test_a_switch_tried_again_gives_only_what_it_had_not() -> None:
    team, audit = TeamLedger(), Audit()
    local = LocalLedger(fail_after=1)
    fb = _fallback(local, audit, team)
    fb.held = {("s", "", "deepseek", "architect", "a"): 300_000_000}
    fb.held[("s", "", "deepseek", "architect", "b")] = 200_000_000
    with pytest.raises(StoreUnavailable, match="No space left"):
        await fb.switch(StoreUnavailable("gone"))
    assert fb.local is None and local.carried == [0.3]
    await fb.switch(StoreUnavailable("gone"))
    assert local.carried == [0.3, 0.2]  # the rest, not all of it again
    assert audit.kinds == ["degradation", "budget", "budget"]  # the GR005 line once


def test_only_a_database_not_there_is_gone() -> None:
    import asyncpg

    assert gone(ConnectionRefusedError(111, "refused"))
    assert gone(asyncpg.ConnectionDoesNotExistError("closed"))
    assert gone(asyncpg.AdminShutdownError("terminating connection"))  # 57P01
    assert gone(asyncpg.CannotConnectNowError("starting up"))  # 57P03
    # answered with an error of its own, or a wait that ran out: fail closed
    assert not gone(asyncpg.InsufficientPrivilegeError("permission denied"))  # 42501
    assert not gone(asyncpg.CheckViolationError("never_over_cap"))  # 23514
    assert not gone(asyncpg.QueryCanceledError("statement timeout"))  # 57014
    assert not gone(TimeoutError())


def test_a_fault_of_this_process_is_not_the_database_gone() -> None:
    import asyncpg

    assert not gone(asyncpg.exceptions._base.InterfaceError("pool is closing"))
    assert not gone(asyncpg.DataError("invalid input for query argument $1"))


def _finding(found: Probed, asked: list[Probed]) -> Any:
    async def probe() -> Probed:
        asked.append(found)
        return found

    return probe


async def test_only_a_timeout_asks_a_probe_and_only_no_answer_there_is_gone() -> None:
    """A timeout alone cannot tell a silent database (every statement timing out, its TCP
    open: the fallback never switched) from a slow or locked one: a probe tells."""
    import asyncpg

    asked: list[Probed] = []
    # an error that says it by itself: no probe
    assert await gone_or_silent(ConnectionRefusedError(111, "refused"), _finding(None, asked))
    canceled = asyncpg.QueryCanceledError("statement timeout")  # the server's own: it answered
    assert not await gone_or_silent(canceled, _finding(TimeoutError(), asked))
    assert asked == []
    timed_out = TimeoutError()
    assert not await gone_or_silent(timed_out, _finding(None, asked))  # it answered: slow
    assert await gone_or_silent(timed_out, _finding(TimeoutError(), asked))  # silent there too
    assert await gone_or_silent(timed_out, _finding(ConnectionRefusedError(111, "x"), asked))
    assert await gone_or_silent(timed_out, _finding(asyncpg.CannotConnectNowError("x"), asked))
    # it answered with a refusal, or the probe was refused here: alive, or not known gone
    for refusal in (
        asyncpg.TooManyConnectionsError("too many clients already"),  # 53300
        asyncpg.InvalidPasswordError("password authentication failed"),
        FileNotFoundError(2, "No such file or directory", "root.crt"),  # the URL's ?sslrootcert
        StorePrivacyError("local_only is on and the team database is not local"),
    ):
        assert not await gone_or_silent(timed_out, _finding(refusal, asked)), refusal
    assert len(asked) == 8  # (each timeout asked once)


async def test_requests_that_timed_out_together_share_one_probe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[str] = []
    answer = asyncio.Event()

    async def silent(url: Any, **kw: Any) -> Probed:
        asked.append(url.display())
        await answer.wait()
        return TimeoutError()

    monkeypatch.setattr(postgres, "probe", silent)
    url = parse_database_url("postgresql://u@127.0.0.1:5432/db")
    shared = postgres.Probe(url, local_only=False, named=frozenset())
    waiting = [asyncio.ensure_future(gone_or_silent(TimeoutError(), shared)) for _ in range(3)]
    await asyncio.sleep(0)
    answer.set()
    assert await asyncio.gather(*waiting) == [True, True, True]
    assert len(asked) == 1
    await shared()  # (a timeout after that answer asks anew)
    assert len(asked) == 2
