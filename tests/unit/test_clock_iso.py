"""``iso()``: the audit's and the ledger's time stamps, made from a cache of seconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from app.clock import iso

_WHEN = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


def _spelled(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@settings(max_examples=300, deadline=None)
@given(st.lists(_WHEN, min_size=1, max_size=40), st.integers(-12, 12))
def test_iso_spells_every_stamp_as_isoformat_does(stamps: list[datetime], hours: int) -> None:
    # stamps now and a TTL later, alternating (the ledger's reserve), and far apart
    for dt in stamps:
        later = dt + timedelta(seconds=300, microseconds=999)
        for moment in (dt, later, dt, dt.astimezone(timezone(timedelta(hours=hours)))):
            assert iso(moment) == _spelled(moment)


def test_iso_is_to_the_millisecond_truncated() -> None:
    dt = datetime(2026, 12, 5, 10, 0, 59, 999_999, tzinfo=UTC)
    assert iso(dt) == "2026-12-05T10:00:59.999Z"
    assert iso(dt + timedelta(microseconds=1)) == "2026-12-05T10:01:00.000Z"


def test_the_same_time_of_day_on_other_dates_is_spelled_with_its_own_date() -> None:
    # the remembered seconds are keyed on the whole date: each field on its own differs
    base = datetime(2026, 12, 5, 10, 20, 30, 123_000, tzinfo=UTC)
    others = [
        base.replace(year=2027),
        base.replace(month=11),
        base.replace(day=6),
        base.replace(hour=11),
        base.replace(minute=21),
    ]
    for other in others:
        for moment in (base, other, base, other):
            assert iso(moment) == _spelled(moment)
