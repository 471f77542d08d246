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
    if 0 < usd < 0.0000005:
        return "<$0.000001"  # it read "$0.00", as nothing
    cents = round(usd * 100)
    if abs(usd * 100 - cents) < 1e-6:
        return f"${cents / 100:.2f}"
    text = f"{usd:.6f}".rstrip("0")
    whole, _, places = text.partition(".")
    return f"${whole}.{places.ljust(2, '0')}"
