"""The ledger's day and its budget read: the day's text remembered (app.router.ledger.money)
and the request path's read from the mirror's totals (spooled.Mirror.left_usd) give what
their plain spellings give."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import NamedTuple

from hypothesis import given, settings
from hypothesis import strategies as st

from app.clock import iso
from app.router.ledger.caps import Caps
from app.router.ledger.money import usd, utc_day
from app.router.ledger.records import Reservation
from app.router.ledger.spooled import Mirror

_MOMENTS = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_MOMENTS, min_size=1, max_size=6), st.integers(-14, 14))
def test_the_day_is_the_stamp_s_date_whatever_came_before(
    moments: list[datetime], hours: int
) -> None:
    for moment in moments:  # (in turn: a remembered day never answers for another)
        assert utc_day(moment) == iso(moment)[:10]
        elsewhere = moment.astimezone(timezone(timedelta(hours=hours)))
        assert utc_day(elsewhere) == iso(moment)[:10]


def test_the_day_turns_at_midnight_utc() -> None:
    night = datetime(2026, 12, 6, 23, 59, 59, 999_999, tzinfo=UTC)
    assert utc_day(night) == "2026-12-06"
    assert utc_day(night + timedelta(microseconds=1)) == "2026-12-07"
    assert utc_day(night) == "2026-12-06"


_USED = st.tuples(st.integers(0, 10**9), st.integers(0, 10**9))
#: what a cap leaves over what was spent and reserved (below 0: crossed), so that each
#: cap binds in turn
_SLACK = st.integers(-(10**8), 10**9)
_NAMES = ("openai", "anthropic", "deepseek", "moonshot")


class _Totals(NamedTuple):
    """What the session "s", the day "d" and each provider that day spent and reserved,
    a mirror holding them, and caps that leave each a slack over them."""

    session: tuple[int, int]
    day: tuple[int, int]
    providers: dict[str, tuple[int, int]]
    mirror: Mirror
    caps: Caps


def _totals(
    session: tuple[int, int],
    session_slack: int,
    day: tuple[int, int],
    day_slack: int,
    providers: dict[str, tuple[int, int]],
    provider_slack: dict[str, int],
) -> _Totals:
    mirror = Mirror()
    mirror.sessions["s"] = list(session)
    mirror.days["d"] = list(day)
    mirror.providers["d"] = {p: list(v) for p, v in providers.items()}
    caps = Caps(
        session=max(0, sum(session) + session_slack),
        day=max(0, sum(day) + day_slack),
        provider={
            p: max(0, sum(providers.get(p, (0, 0))) + slack) for p, slack in provider_slack.items()
        },
    )
    return _Totals(session, day, providers, mirror, caps)


_TOTALS = st.builds(
    _totals,
    _USED,
    _SLACK,
    _USED,
    _SLACK,
    st.dictionaries(st.sampled_from(_NAMES), _USED),
    st.dictionaries(st.sampled_from(_NAMES), _SLACK),
)


@settings(max_examples=400, deadline=None)
@given(_TOTALS)
def test_the_budget_read_from_the_totals_is_the_caps_rule(totals: _Totals) -> None:
    session, day, providers, mirror, caps = totals
    # the caps' rule spelled out: the smallest of what each cap leaves, never below 0
    expected = {}
    for p in _NAMES:
        left = min(caps.session - sum(session), caps.day - sum(day))
        if p in caps.provider:
            left = min(left, caps.provider[p] - sum(providers.get(p, (0, 0))))
        expected[p] = max(0, left) / 1e9
    assert mirror.left_usd(caps, "s", "d", _NAMES) == expected
    assert caps.left_usd(mirror.sums("s", "d"), _NAMES) == expected


@settings(max_examples=600, deadline=None)
@given(
    _TOTALS,
    st.sampled_from(_NAMES),
    st.sampled_from(("session", "day", "provider", "any")),
    st.integers(-1, 1),
    st.integers(0, 2 * 10**9),
)
def test_a_reservation_crosses_a_cap_read_from_the_totals_as_the_caps_check_says(
    totals: _Totals, provider: str, at: str, by: int, anything: int
) -> None:
    session, day, providers, mirror, caps = totals
    # the amount one unit under, at or over what a cap leaves (each cap at its edge in
    # turn, a provider with a cap and nothing spent on it yet among them), or any amount
    room = {
        "session": caps.session - sum(session),
        "day": caps.day - sum(day),
        "provider": caps.provider.get(provider, 0) - sum(providers.get(provider, (0, 0))),
    }
    amount = anything if at == "any" else max(0, room[at] + by)
    res = Reservation(
        id="r1",
        session="s",
        run="",
        provider=provider,
        role="architect",
        model="m",
        amount_usd=usd(amount),
        created="2026-12-06T00:00:00+00:00",
        expires="2026-12-06T00:10:00+00:00",
    )
    refused = caps.check(mirror.sums("s", "d"), res, amount)
    assert mirror.crosses(caps, "s", "d", provider, amount) is (refused is not None)


def test_a_provider_with_a_cap_and_nothing_spent_on_it_is_crossed_by_more_than_its_cap() -> None:
    mirror = Mirror()
    mirror.sessions["s"], mirror.days["d"], mirror.providers["d"] = [0, 0], [0, 0], {}
    caps = Caps(session=10**9, day=10**9, provider={"openai": 500})
    assert not mirror.crosses(caps, "s", "d", "openai", 500)
    assert mirror.crosses(caps, "s", "d", "openai", 501)
    assert not mirror.crosses(caps, "s", "d", "anthropic", 501)  # (no cap of its own)
