"""The budget ledger (GR-011): reserve before a cloud call, settle or release after it.

Every cap check and the reservation it guards happen under one lock, the file's spool's
(:mod:`.spooled`): the writer first applies every record the others appended since it
last looked, checks the running totals, then appends its own. So concurrent callers
(coroutines, ledger instances, processes sharing the file) are serialised and a race can
never cross a cap. Money is stored as integer nano-dollars so sums are exact and
comparisons never wobble.

Durability: a record stands when its ``write`` returns: it survives the process being
killed at any point (the crash tests SIGKILL a writer mid-churn). The ledger folds the
records into the tables (WAL with ``synchronous = NORMAL``) in batches, a quarter of a
second after a write, and at close; every report folds what is
left first. After a power cut or an OS crash the last records or transactions before it
may be lost, as if they had not happened (a record carries a CRC; the file stays
consistent). FULL would fsync every write: about 3 ms each on this project's machines,
several per routed request. See ``SYNCHRONOUS``.

The caps are checked against running totals (session, day, provider-day): in memory on
the request path (a session's or a day's read from the tables once), and in the tables
kept by triggers in the same transactions as the rows they sum, so a check costs the
same with ten calls on file or a million.

A reservation left behind by a killed process is never freed: once ``reservation_ttl_s``
has passed it is settled at its full amount (status ``expired``), lazily, by the next
reserve, snapshot or report. A cost belongs to the UTC day of its reservation, so a call
that spans midnight is counted once, on the day its reservation was checked against.

The package: :mod:`.budget_ledger` (the class), :mod:`.spooled` (the records, the totals
in memory, the fold), :mod:`.transactions` (the connection and the rows a fold writes),
:mod:`.caps` (the cap arithmetic and the totals it reads),
:mod:`.schema` (tables, triggers, migrations), :mod:`.reports` (snapshot and report),
:mod:`.call_groups` (the snapshot's breakdown, read on from the last one),
:mod:`.records`, :mod:`.errors` and :mod:`.money` (nano-dollars).
"""

from __future__ import annotations

from app.router.ledger.budget_ledger import LOCAL_PROVIDER, SYNCHRONOUS, BudgetLedger
from app.router.ledger.errors import (
    CapExceeded,
    LedgerError,
    LedgerSpoolDamaged,
    LedgerUnreadable,
    ReservationClosed,
    UnknownReservation,
)
from app.router.ledger.money import NANO
from app.router.ledger.records import BudgetSnapshot, CapUsage, Reservation
from app.router.ledger.schema import SCHEMA_VERSION
from app.router.ledger.transactions import ReservationStatus

__all__ = [
    "LOCAL_PROVIDER",
    "NANO",
    "SCHEMA_VERSION",
    "SYNCHRONOUS",
    "BudgetLedger",
    "BudgetSnapshot",
    "CapExceeded",
    "CapUsage",
    "LedgerError",
    "LedgerSpoolDamaged",
    "LedgerUnreadable",
    "Reservation",
    "ReservationClosed",
    "ReservationStatus",
    "UnknownReservation",
]
