"""The overrides list: present, and either "none" or each override listed."""

from __future__ import annotations

from app.policy.spec import clean_value
from app.policy.spec_checks.findings import Findings


def check_overrides(f: Findings) -> None:
    header = next(
        (e for e in f.block.entries if e.key.startswith("overrides") and not e.section), None
    )
    if header is None:
        f.error(f.heading, "overrides", "missing 'Overrides (must be rare):' and its list")
        return
    if clean_value(header.value):
        return  # "Overrides: none" on one line
    if not [e for e in f.block.section("overrides") if clean_value(e.value)]:
        f.error(
            header.line,
            "overrides",
            "overrides are not listed: write '- none' or list each override",
        )
