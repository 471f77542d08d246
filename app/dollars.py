"""Dollars as a person reads them: whole cents as cents, any other amount to as many
places as it has (up to six), never rounded to a cent.

Rounded to cents, $0.018068 left read "$0.02" beside a provider's "$0.0093", $9.996 left
read "$10.00", a $0.002 cap was "the cap of $0.00", and a skip said "estimated $0.0001 >
$0.0001 left" of 0.000128 and 0.000068 (an audit found all four).
"""

from __future__ import annotations


def dollars(usd: float) -> str:
    if usd < 0:
        return "-" + dollars(-usd)  # "$-0.005" before
    if usd > 0 and f"{usd:.6f}" == "0.000000":
        # it read "$0.00", as nothing (half a micro-dollar too, as 6 places round it down)
        return "<$0.000001"
    cents = round(usd * 100)
    if abs(usd * 100 - cents) < 1e-6:
        return f"${cents / 100:.2f}"
    text = f"{usd:.6f}".rstrip("0")
    whole, _, places = text.partition(".")
    return f"${whole}.{places.ljust(2, '0')}"


#: the ledger keeps nano-dollars; :func:`dollars` shows micro-dollars at most
_NANO = 1_000_000_000
_NANO_PER_MICRO = 1_000


def _micro(usd: float, *, up: bool) -> int:
    """``usd`` in whole micro-dollars, rounded up or down from its nano-dollars."""
    nano = round(usd * _NANO)
    return -(-nano // _NANO_PER_MICRO) if up else nano // _NANO_PER_MICRO


def spent(usd: float) -> float:
    """An amount spent (or held) rounded up to the micro-dollar, as :func:`cap_row` shows it."""
    return _micro(usd, up=True) / 1_000_000


def cap_row(
    cap_usd: float | None, spent_usd: float, reserved_usd: float
) -> tuple[float | None, float, float, float | None]:
    """A cap's limit, spent, reserved and left as a table shows them (micro-dollars):
    spent and reserved rounded up, the cap down, and left what those three leave (never
    below 0), so the shown figures add up to the cap and left is never more than there
    is (money fails closed). ``cap_usd`` None: uncapped, no limit and no left.

    Each rounded to the nearest, $0.1709925 spent of a $20 cap read "$0.170992 spent,
    $19.829007 left" (a micro-dollar gone), and of a $5 cap "$4.829008 left", more than
    the $4.8290075 there was.
    """
    spent, reserved = _micro(spent_usd, up=True), _micro(reserved_usd, up=True)
    shown = (spent / 1_000_000, reserved / 1_000_000)
    if cap_usd is None:
        return None, *shown, None
    cap = _micro(cap_usd, up=False)
    return cap / 1_000_000, *shown, max(0, cap - spent - reserved) / 1_000_000
