"""The ledger's records and errors (pure: no database)."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from app.errors import BudgetExceeded, SwitchyardError
from app.router.ledger import (
    CapExceeded,
    LedgerError,
    LedgerUnreadable,
    Reservation,
    ReservationClosed,
    UnknownReservation,
)


def test_cap_exceeded_names_the_cap_its_limit_and_the_amounts() -> None:
    err = CapExceeded(
        cap="provider:deepseek",
        limit_usd=5.0,
        spent_usd=4.2,
        reserved_usd=0.7,
        requested_usd=0.25,
        session="s1",
        provider="deepseek",
        model="deepseek-reasoner",
    )
    assert isinstance(err, BudgetExceeded)
    assert err.exit_code == 1
    assert (err.cap, err.limit_usd, err.spent_usd, err.reserved_usd, err.requested_usd) == (
        "provider:deepseek",
        5.0,
        4.2,
        0.7,
        0.25,
    )
    text = str(err)
    for part in (
        "provider:deepseek cap of $5.00",
        "spent $4.20",
        "reserved $0.70",
        "requested $0.25",
        "deepseek/deepseek-reasoner",
        "session s1",
    ):
        assert part in text
    assert "\n" not in text  # the CLI prints one line per error line


def test_closed_reservation_says_how_it_was_closed() -> None:
    assert "already settled" in str(ReservationClosed("r1", "settled"))
    expired = ReservationClosed("r1", "expired")
    assert "charged at its full amount" in str(expired)
    assert expired.status == "expired"


def test_ledger_errors_belong_to_the_one_family() -> None:
    for cls in (LedgerError, UnknownReservation, ReservationClosed, LedgerUnreadable):
        assert issubclass(cls, SwitchyardError)
    assert LedgerError.exit_code == 1
    assert LedgerUnreadable.exit_code == 2


def test_reservation_is_frozen_and_strict() -> None:
    res = Reservation(
        id="a",
        session="s",
        provider="p",
        role="r",
        model="m",
        amount_usd=0.1,
        created="2026-01-01T00:00:00.000Z",
        expires="2026-01-01T00:15:00.000Z",
    )
    assert res.run == ""
    with pytest.raises(ValidationError):
        res.amount_usd = 2.0  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Reservation.model_validate({**res.model_dump(), "extra": 1})


def test_spool_records_read_in_one_pass_as_one_by_one() -> None:
    from app.router.ledger.spooled import decode, encode

    records = [
        encode(["r", "id1", "s", "", "openai", "architect", "gpt", 5, "2026-12-05", "a", "b", 1.5]),
        encode(["c", "id1", "settled", "t", 3, "ok", 1, 2, 0.5, "d", "s", "", "r", "m", "p"]),
        encode(["k", "t", "d", "s", None, "r", "m", "p", 1, 2, 0.5, 7, "ok"]),
    ]
    assert decode(records) == [json.loads(r) for r in records]
    assert decode([]) == []


@pytest.mark.parametrize(
    ("record", "by_c"),
    [
        (["c", "id1", "settled", "t", 3, "ok", 1, 2, 1e-05, "d", "s", "", "r", "m", "p"], False),
        (["c", "id1", "settled", "t", 3, "ok", 1, 2, 1e16, "d", "s", "", "r", "m", "p"], False),
        (["k", "t", "d", "s", None, "r", "m", "p", 1, 2, 0.5, 7, "ok"], True),  # a null
        (["k", "t", "d", "nullable", "", "r", "m", "p", 1, 2, 0.5, 7, "ok"], True),  # its text
        (
            ["c", "id1", "settled", "t", 3, "ok", 1, 2, float("inf"), "d", "", "", "r", "m", "p"],
            True,
        ),
        (["r", "id1", "s", 'é → \u2028\x00"\n', "p", "a", "g", 5, "d", "a", "b", 1.5], False),
        (["r", "id1", "s", "", "p", "a", "g", 2**70, "d", "a", "b", 1.5], True),  # past 64 bits
    ],
)
def test_a_spool_record_reads_back_as_it_was(
    record: list[Any], by_c: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """orjson writes what it can; a NaN or an infinity (orjson's ``null``), a null, an int
    past 64 bits (orjson refuses it) go by the C encoder, as they always did."""
    from app.router.ledger import spooled

    asked: list[object] = []
    c_encoder = spooled._DUMPS
    monkeypatch.setattr(spooled, "_DUMPS", lambda r: asked.append(r) or c_encoder(r))
    data = spooled.encode(record)
    assert bool(asked) is by_c
    assert b"\n" not in data
    assert spooled.decode([data]) == [record] == [json.loads(data)]
    if not by_c:
        assert data == orjson.dumps(record)
    if float("inf") in record:
        assert b"Infinity" in data  # (orjson would have written null)


def test_a_spool_record_orjson_would_write_otherwise_goes_by_the_c_encoder() -> None:
    """A datetime, a dataclass, a str subclass: refused or written as before, never a
    text the C encoder would not have written."""
    from datetime import UTC, datetime

    from app.router.ledger.spooled import encode

    class Tag(str):
        pass

    assert encode(["r", Tag("x")]) == b'["r","x"]'
    with pytest.raises(TypeError):
        encode(["r", datetime(2026, 1, 1, tzinfo=UTC)])


@pytest.mark.parametrize(
    "records",
    [
        [b'["r", 1]', b"not json"],
        [b"[1", b"2]"],  # one array only when read together
        [b"[1],[2", b"3]"],  # as many values together, neither of them JSON alone
        [b"[1]\n[2,", b"3]"],  # the same across a newline inside a record
        [b"[1] ", b"[2]"],  # JSON alone, with a space
        [b"[1]", b"2", b'"\xc3\xa9"'],  # JSON alone, not arrays, one not ASCII
        [b"[1]", b"\xff"],  # no UTF-8
    ],
)
def test_spool_records_that_are_odd_read_or_fail_as_each_alone_does(
    records: list[bytes],
) -> None:
    from app.router.ledger.spooled import DamagedRecord, decode

    try:
        alone = [json.loads(r) for r in records]
    except ValueError:
        with pytest.raises(DamagedRecord):  # (a ValueError: the fold says the spool is damaged)
            decode(records)
    else:
        assert decode(records) == alone


def test_a_cap_the_ledger_refuses_is_named_as_it_is() -> None:
    err = CapExceeded(
        cap="provider:deepseek",
        limit_usd=0.002,
        spent_usd=0.0015,
        reserved_usd=0.0,
        requested_usd=0.000728,
        session="s1",
        provider="deepseek",
        model="m",
    )
    assert "cap of $0.002 would be crossed" in str(err) and "requested $0.000728" in str(err)
