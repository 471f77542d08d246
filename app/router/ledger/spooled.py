"""The ledger's spool (issue 20): the request path's writes as records in
``ledger.db-spool`` (:mod:`app.spool`), the running totals they are checked against kept
in memory, and the fold that moves them into the tables.

Every write (reserve, settle or release, an expiry, a call without a reservation) is one
record appended under the spool's lock, after the writer has applied every record the
others appended since it last looked: so the cap check and the reservation it guards see
the same state, across processes, as they did inside one ``BEGIN IMMEDIATE``. The record
stands (killed or not) when the write returns. The ledger folds the records into the
tables (in batches, a quarter of a second after a write, at close), which the triggers of
:mod:`.schema` sum as before; every read of the tables folds what is left first.

The in-memory totals (:class:`Mirror`) hold only what this process has needed: a session
or a day is read from the tables the first time, under the lock, right after a fold, so
the tables then hold every record there is; from then on each record read or written is
applied to it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import orjson

from app.compact_json import PASSTHROUGH, encoder
from app.router.ledger.caps import Caps, Sums, sums
from app.router.ledger.errors import LedgerSpoolDamaged
from app.router.ledger.money import usd
from app.router.ledger.records import CapTotal, CapTotals, Expired, Reservation
from app.router.ledger.transactions import insert_call
from app.spool import Spool, mark, unfolded

log = logging.getLogger(__name__)

_DUMPS = encoder()
_ORJSON = orjson.dumps


class Live(NamedTuple):
    """A live reservation, as the mirror keeps it."""

    id: str
    session: str
    run: str
    provider: str
    role: str
    model: str
    amount: int
    day: str
    created: str
    expires: str
    expires_at: float

    def reservation(self) -> Reservation:
        return Reservation(
            id=self.id,
            session=self.session,
            run=self.run,
            provider=self.provider,
            role=self.role,
            model=self.model,
            amount_usd=usd(self.amount),
            created=self.created,
            expires=self.expires,
        )

    def expired(self, caps: CapTotals) -> Expired:
        """This reservation charged by its expiry, which left ``caps`` spent past."""
        return Expired(**self.reservation().model_dump(), caps=caps)


# ── records ─────────────────────────────────────────────────────────────────────────────
# ["r", *Live]                                          a reservation
# ["c", id, status, closed, cost, outcome, tin, tout, ms, *where, (cached)]
#                                                       a reservation settled or released
# ["x", id, closed, *where]                             one expired: charged its amount
#   where: the reservation's day, session, run, role, model, provider (its call row's)
# ["k", ts, day, session, run, role, model, provider, tin, tout, ms, cost, outcome, (cached)]
#                                                       a call without a reservation
#   cached: of tin, the tokens read from the provider's prompt cache; written only when
#   there are some (a record without it, an older one too, reads 0)
# ["n", id, expires, expires_at]                        one renewed: its call in flight
#   (a Switchyard from before renewals skips these records, in its mirror and its fold:
#   beside one, a renewed reservation can still be expired, as before renewals)


def encode(record: list[Any]) -> bytes:
    """A record's JSON. Only read back (folds parse it; no hash or comparison holds its
    bytes), so orjson's spelling of a float serves as well as Python's (``1e-5`` for
    ``1e-05``, both the same float): 0.8 -> 0.3 µs a record (issue 20). A ``null`` is
    orjson's spelling of a NaN or an infinity too, so a record holding one is written by
    the C encoder (``NaN``, as ever), as is one orjson refuses: a datetime, a dataclass or
    a subclass of a JSON type are passed through to it, as it read them before. (A plain
    Enum or a UUID, which the C encoder refuses, orjson writes as its value: no record
    holds one, as the ledger's arguments are str, int and float.)"""
    try:
        data = _ORJSON(record, None, PASSTHROUGH)
    except TypeError:  # (orjson.JSONEncodeError is one: an int past 64 bits, a Decimal)
        return _DUMPS(record).encode()
    if data.find(b"null") >= 0:  # (find: ``in`` tries a bytes needle as an int first)
        return _DUMPS(record).encode()
    return data


#: json.loads' own scanner, called at each record's start (json.loads, once per record,
#: sets up more than it parses: a fold's 512 records took ~1 ms more)
_SCAN: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


#: the least each kind of record holds (a newer Switchyard's longer records are read as
#: ever, and a kind this one does not know is skipped, as "n" was by those before it)
_LEAST = {"r": 12, "c": 9, "x": 3, "k": 13, "n": 4}
#: the places of each kind's numbers (amounts, tokens, times): a string there was a
#: TypeError in the sums
_NUMBERS = {"r": (7, 11), "c": (4, 6, 7, 8), "k": (8, 9, 10, 11), "n": (3,)}
#: the place of a record's cached tokens, which it holds only when there were some
CACHED_AT = {"c": 15, "k": 13}


def damaged(where: object, why: str) -> LedgerSpoolDamaged:
    return LedgerSpoolDamaged(
        f"{where}: a record of the budget ledger's spool is damaged ({why}); the ledger is "
        "refused, as what follows it cannot be read: move the spool file aside to go on "
        "(the records not yet folded into the ledger go with it)"
    )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cached_number(r: list[Any]) -> bool:
    """A record's cached tokens, where it holds them, are a number."""
    at = CACHED_AT.get(r[0])
    return at is None or len(r) <= at or _number(r[at])


def checked(records: list[Any], where: object) -> list[Any]:
    """``records`` (decoded), each of a ledger record's shape; else :func:`damaged`. A
    record whose check held but whose content was no record raised a KeyError or an
    IndexError (a traceback from every command) or a bindings error read as "cannot open
    the budget ledger" (an audit)."""
    for r in records:
        if not (
            isinstance(r, list)
            and r
            and isinstance(r[0], str)
            and len(r) >= _LEAST.get(r[0], 1)
            and (len(r) < 2 or isinstance(r[1], str))
            and all(_number(r[i]) for i in _NUMBERS.get(r[0], ()))
            and _cached_number(r)
        ):
            raise damaged(where, f"not a ledger record: {str(r)[:60]!r}")
    return records


def decode(records: list[bytes]) -> list[Any]:
    """Each record read as JSON, as ``json.loads`` reads it alone: the records joined by
    newlines (which no record holds: :meth:`app.spool.Spool.write`) and scanned in one
    text, each value ending where its record does; else, record by record (a record
    that is no JSON alone fails as it did)."""
    data = b"\n".join(records)
    if data.count(b"\n") == len(records) - 1:
        try:
            text = data.decode("utf-8")
            out: list[Any] = []
            pos, size = 0, len(text)
            for _ in records:
                value, pos = _SCAN(text, pos)
                if pos < size and text[pos] != "\n":
                    raise ValueError(pos)
                out.append(value)
                pos += 1
            return out
        except (ValueError, StopIteration):  # (UnicodeDecodeError is a ValueError)
            pass
    try:
        return [json.loads(record) for record in records]
    except ValueError as exc:  # (UnicodeDecodeError and JSONDecodeError are ValueErrors)
        raise DamagedRecord(str(exc)) from None


class DamagedRecord(ValueError):
    """A spool record that is no JSON (:func:`decode`)."""


# ── the totals in memory ─────────────────────────────────────────────────────────────────


class Mirror:
    """The live reservations (every one) and the running totals of the sessions and days
    loaded so far, kept by applying records in the spool's order."""

    def __init__(self) -> None:
        self.live: dict[str, Live] = {}
        #: session -> [spent, reserved]; day -> [spent, reserved]; day -> provider -> …
        self.sessions: dict[str, list[int]] = {}
        self.days: dict[str, list[int]] = {}
        self.providers: dict[str, dict[str, list[int]]] = {}
        #: the status of reservations closed while this process looked (an error's text)
        self.closed: dict[str, str] = {}

    def has(self, session: str, day: str) -> bool:
        return session in self.sessions and day in self.days

    def load(self, db: sqlite3.Connection, session: str, day: str) -> None:
        """Read ``session``'s and ``day``'s totals from the tables (which hold every record
        there is: the caller folded under the lock)."""
        u = sums(db, session, day)
        self.sessions.setdefault(session, [u.s_spent, u.s_res])
        if day not in self.days:
            self.days[day] = [u.d_spent, u.d_res]
            self.providers[day] = {p: [s, r] for p, (s, r) in u.per_provider.items()}

    def reset(self) -> None:
        """Forget every total and live reservation (read again from the tables)."""
        self.live.clear()
        self.sessions.clear()
        self.days.clear()
        self.providers.clear()

    def load_live(self, db: sqlite3.Connection) -> None:
        self.live = {
            row[0]: Live(*row)
            for row in db.execute(
                "SELECT id, session, run, provider, role, model, amount_nusd, day, created,"
                " expires, expires_at FROM reservations WHERE status = 'live'"
            )
        }

    def sums(self, session: str, day: str) -> Sums:
        u = Sums()
        u.s_spent, u.s_res = self.sessions[session]
        u.d_spent, u.d_res = self.days[day]
        u.per_provider = {p: (s, r) for p, (s, r) in self.providers[day].items()}
        return u

    def left_usd(
        self, caps: Caps, session: str, day: str, providers: Iterable[str]
    ) -> dict[str, float]:
        """``caps.left_usd(self.sums(session, day), providers)``, read from the totals as
        they are, no :class:`Sums` made (the request path's budget read: issue 20)."""
        s, d = self.sessions[session], self.days[day]
        return caps.left_of(s[0] + s[1], d[0] + d[1], self.providers[day], providers)

    def crosses(self, caps: Caps, session: str, day: str, provider: str, amount: int) -> bool:
        """Whether reserving ``amount`` crosses a cap (:meth:`Caps.crossed`), read from the
        totals as they are, no :class:`Sums` made: the request path's reservation, which
        makes the error (:meth:`Caps.check`) only when one is crossed."""
        s, d = self.sessions[session], self.days[day]
        used = self.providers[day].get(provider)
        p_used = 0 if used is None else used[0] + used[1]
        return caps.crossed(s[0] + s[1], d[0] + d[1], p_used, provider, amount) is not None

    def past(self, caps: Caps, session: str, day: str, provider: str, cost: int) -> CapTotals:
        """The caps that a write of ``cost`` against ``session``, ``day`` and ``provider``
        has just left spent past, with their spend just before it (``cost`` less) and just
        after: read from the totals as the write left them, under the spool's lock it
        held (the caller's). Within every cap, the usual case: nothing made."""
        if self.sessions[session][0] <= caps.session and self.days[day][0] <= caps.day:
            p_cap = caps.provider.get(provider)
            if p_cap is None:
                return ()
            used = self.providers[day].get(provider)
            if used is None or used[0] <= p_cap:
                return ()
        s, d = self.sessions[session][0], self.days[day][0]
        used = self.providers[day].get(provider)
        p, p_cap = 0 if used is None else used[0], caps.provider.get(provider)
        scopes = (("session", caps.session, s), ("day", caps.day, d), (f"{provider} day", p_cap, p))
        return tuple(
            CapTotal(name, cap, after - cost, after)
            for name, cap, after in scopes
            if cap is not None and after > cap
        )

    def expiring(self, caps: Caps, stale: Sequence[Live]) -> list[Expired]:
        """``stale`` as their expiry, about to be written in this order, charges them, each
        with the caps its charge leaves spent past: its totals just before and after it,
        as :meth:`past` reads a settlement's, those charged before it in the same write
        counted (so of one write's expiries exactly one crosses each cap). The caller holds
        the spool's lock and has each one's session and day loaded."""
        running: dict[tuple[str, ...], int] = {}
        out: list[Expired] = []
        for s in stale:
            past: list[CapTotal] = []
            if s.amount:  # (a free reservation's charge crosses nothing)
                used = self.providers[s.day].get(s.provider)
                scopes = (
                    ("session", caps.session, ("s", s.session), self.sessions[s.session][0]),
                    ("day", caps.day, ("d", s.day), self.days[s.day][0]),
                    (
                        f"{s.provider} day",
                        caps.provider.get(s.provider),
                        ("p", s.day, s.provider),
                        0 if used is None else used[0],
                    ),
                )
                for name, cap, key, spent in scopes:
                    before = running.get(key, spent)
                    running[key] = after = before + s.amount
                    if cap is not None and after > cap:
                        past.append(CapTotal(name, cap, before, after))
            out.append(s.expired(tuple(past)))
        return out

    def sums_after(self, session: str, day: str, expiring: Iterable[Live]) -> Sums:
        """:meth:`sums` as they will be once ``expiring`` are charged (reserved → spent)."""
        u = self.sums(session, day)
        for res in expiring:
            if res.session == session:
                u.s_spent, u.s_res = u.s_spent + res.amount, u.s_res - res.amount
            if res.day == day:
                u.d_spent, u.d_res = u.d_spent + res.amount, u.d_res - res.amount
                spent, held = u.provider(res.provider)
                u.per_provider[res.provider] = (spent + res.amount, held - res.amount)
        return u

    @staticmethod
    def where(live: Live) -> list[str]:
        """What a close record carries of its reservation (its call row's columns)."""
        return [live.day, live.session, live.run, live.role, live.model, live.provider]

    def stale(self, now_ts: float) -> list[Live]:
        return [res for res in self.live.values() if res.expires_at <= now_ts]

    def _add(self, session: str, day: str, provider: str, column: int, amount: int) -> None:
        if not amount:
            return
        if (s := self.sessions.get(session)) is not None:
            s[column] += amount
        if (d := self.days.get(day)) is not None:
            d[column] += amount
            per = self.providers[day]
            p = per.get(provider)
            if p is None:
                p = per[provider] = [0, 0]
            p[column] += amount

    def apply(self, records: Iterable[bytes], where: object = "the budget ledger") -> None:
        # (one by one: a record that is no JSON stops the rest, those before it applied)
        for record in records:
            try:
                r = json.loads(record)
            except ValueError as exc:
                raise damaged(where, f"not JSON: {exc}") from None
            self.apply_one(checked([r], where)[0])

    def apply_one(self, r: list[Any]) -> None:
        kind = r[0]
        if kind == "r":
            live = Live(*r[1:])
            self.live[live.id] = live
            self._add(live.session, live.day, live.provider, 1, live.amount)
        elif kind == "c" or kind == "x":
            live_res = self.live.pop(r[1], None)
            if live_res is None:
                return
            status, cost = (r[2], r[4]) if kind == "c" else ("expired", live_res.amount)
            self.closed[r[1]] = status
            if len(self.closed) > 10_000:
                del self.closed[next(iter(self.closed))]
            self._add(live_res.session, live_res.day, live_res.provider, 1, -live_res.amount)
            self._add(live_res.session, live_res.day, live_res.provider, 0, cost)
        elif kind == "k":
            # ts, day, session, run, role, model, provider, tin, tout, ms, cost, outcome
            self._add(r[3], r[2], r[7], 0, r[11])
        elif kind == "n":  # renewed: id, expires, expires_at
            renewed = self.live.get(r[1])
            if renewed is not None:
                self.live[r[1]] = renewed._replace(expires=r[2], expires_at=r[3])


# ── folding ─────────────────────────────────────────────────────────────────────────────

#: the table that records how far the spool is folded (app.spool.watermark)
SPOOL_TABLE = "ledger_spool"
_INSERT_RESERVATION = (
    "INSERT INTO reservations (id, session, run, provider, role, model, amount_nusd, day,"
    " created, expires, expires_at, status) VALUES (?,?,?,?,?,?,?,?,?,?,?,'live')"
)
#: a reservation opened and closed within one fold, inserted as it ends up
_INSERT_CLOSED = (
    "INSERT INTO reservations (id, session, run, provider, role, model, amount_nusd, day,"
    " created, expires, expires_at, status, closed) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_CLOSE = "UPDATE reservations SET status = ?, closed = ? WHERE id = ? AND status = 'live'"
_AMOUNT = "SELECT amount_nusd FROM reservations WHERE id = ?"
#: a live reservation renewed (its call still in flight); a closed one is left as it is
_RENEW = "UPDATE reservations SET expires = ?, expires_at = ? WHERE id = ? AND status = 'live'"


def _insert_closed(db: sqlite3.Connection, r: list[Any], close: list[Any]) -> bool:
    """Reservation record ``r`` inserted as ``close`` (its first close) leaves it; False,
    with nothing written, when the tables refuse that row (the reservation is then
    inserted live and the close applied to it, as when each is folded alone: the same
    rows, or the same error)."""
    ended = (close[2], close[3]) if close[0] == "c" else ("expired", close[2])
    try:  # (a refused statement is undone whole, its triggers' writes with it)
        db.execute(_INSERT_CLOSED, (*r[1:], *ended))
    except sqlite3.IntegrityError:
        return False
    return True


def fold(db: sqlite3.Connection, spool: Spool) -> tuple[str, int]:
    """Apply the spool's records after the last fold to the tables (inside a write
    transaction the caller holds); the spool id and offset folded to. A record the tables
    cannot take (a reservation closed twice: written around the spool) is logged and
    left out, never a fold that stops every later one.

    A reservation closed by a later record of the same fold (nearly every one: a call
    takes far less than a fold's quarter of a second) is inserted closed, its close
    record then writing only its call row: the tables end as the insert and the update
    leave them, while the totals' triggers skip adding the reservation and taking it
    back (six upserts of three rows a call, most of a fold's time: issue 20).
    """
    records, end = unfolded(db, spool, SPOOL_TABLE)
    if not records:
        return spool.ident, end
    try:
        parsed = checked(decode(records), spool.path)
    except DamagedRecord as exc:
        raise damaged(spool.path, f"not JSON: {exc}") from None
    # for each reservation record, the index of the first close of its id after it
    closes: dict[int, int] = {}
    after: dict[str, int] = {}
    for at in range(len(parsed) - 1, -1, -1):
        kind, rid = parsed[at][0], parsed[at][1]
        if kind == "c" or kind == "x":
            after[rid] = at
        elif kind == "r" and rid in after:
            closes[at] = after[rid]
    # the close records whose reservation was inserted closed: they write their call row
    consumed: set[int] = set()
    for at, r in enumerate(parsed):
        kind = r[0]
        if kind == "r":
            close = closes.get(at)
            if close is not None and _insert_closed(db, r, parsed[close]):
                consumed.add(close)
                continue
            try:
                db.execute(_INSERT_RESERVATION, r[1:])
            except sqlite3.IntegrityError as exc:
                log.error("%s: reservation %s not folded: %s", spool.path, r[1], exc)
        elif kind == "c" or kind == "x":
            rid, status, when = (r[1], r[2], r[3]) if kind == "c" else (r[1], "expired", r[2])
            if at not in consumed and db.execute(_CLOSE, (status, when, rid)).rowcount != 1:
                log.error("%s: reservation %s not live: %s not folded", spool.path, rid, status)
                continue
            if kind == "c":
                cost, outcome, tin, tout, ms = r[4], r[5], r[6], r[7], r[8]
                day, session, run, role, model, provider = r[9:15]
                cached = r[15] if len(r) > 15 else 0
            else:
                day, session, run, role, model, provider = r[3:9]
                cost = db.execute(_AMOUNT, (rid,)).fetchone()[0]
                outcome, tin, tout, ms, cached = "expired", 0, 0, 0.0, 0
            row = (when, day, session, run, role, model, provider, tin, tout, ms, cost, outcome)
            insert_call(db, (*row, rid), cached)
        elif kind == "k":
            insert_call(db, (*r[1:13], None), r[13] if len(r) > 13 else 0)
        elif kind == "n":
            db.execute(_RENEW, (r[2], r[3], r[1]))
    mark(db, SPOOL_TABLE, spool.ident, end)
    return spool.ident, end
