"""The tiers block: one line per policy tier, each model named there one of the tier's
(names compared loosely, notes and ``<placeholders>`` allowed)."""

from __future__ import annotations

import re

from app.policy.spec import SpecEntry
from app.policy.spec_checks.findings import Findings

TIER_LINES = ("fast_local", "slow_cloud_escalation", "premium_judge")

_PLACEHOLDER = re.compile(r"<[^<>]*>")
_NOTE = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")
# no "\s*" around the separators: a long run of blanks would backtrack quadratically
_SPLIT = re.compile(r"\+|/|,|&|\bor\b|\band\b", re.I)
_TOKEN = re.compile(r"[a-z0-9]+(?:\.[0-9]+)*")


def check_tiers(f: Findings, *, required: bool) -> None:
    """``required``: every policy tier needs its line even when the block lists none."""
    entries = f.block.section("tiers")
    header = next((e for e in f.block.entries if e.key.endswith("tiers") and not e.section), None)
    seen: dict[str, SpecEntry] = {}
    for e in entries:
        name = e.key.replace(" ", "_")
        if name not in f.policy.tiers:
            known = ", ".join(f.policy.tiers)
            f.error(e.line, f"tiers.{e.name or '?'}", f"unknown tier (the policy's: {known})")
            continue
        if name in seen:
            f.error(e.line, f"tiers.{name}", f"repeated (first on line {seen[name].line})")
            continue
        seen[name] = e
        check_tier(f, e, name)
    if not required and not entries:
        return
    where = header.line if header is not None else f.heading
    for name in f.policy.tiers:
        if name not in seen:
            f.error(where, f"tiers.{name}", "tier line missing from 'Primary tiers:'")


def check_tier(f: Findings, e: SpecEntry, tier: str) -> None:
    models = [f.policy.resolve(m) for m in f.policy.tiers[tier].models]
    for mention in model_mentions(e.value):
        if not any(mentions(f, mention, m) for m in models):
            f.error(
                e.line,
                f"tiers.{tier}",
                f"{mention!r} is not in the policy's {tier} tier ({', '.join(models)})",
            )


def mentions(f: Findings, mention: str, model_id: str) -> bool:
    """Loosely: every word of the mention starts a word of the model's id or name."""
    if f.policy.resolve(_slug(mention)) == model_id:
        return True
    words = _TOKEN.findall(mention.lower())
    if not words:
        return True
    model = f.policy.models.get(model_id)
    pool = set(_TOKEN.findall(model_id.lower()))
    if model is not None:
        pool |= set(_TOKEN.findall(model.display.lower()))
        pool |= set(_TOKEN.findall(model.served_name.lower()))
    for alias, target in f.policy.aliases.items():
        if target == model_id:
            pool |= set(_TOKEN.findall(alias.lower()))
    return all(any(p.startswith(w) for p in pool) for w in words)


def model_mentions(value: str) -> list[str]:
    """Model names in a tier line, without notes ``(...)``/``[...]`` and ``<placeholders>``."""
    text = _PLACEHOLDER.sub(" ", value)
    for _ in range(4):  # nested notes, a few levels
        text = _NOTE.sub(" ", text)
    text = text.replace("(", " ").replace(")", " ").replace("[", " ").replace("]", " ")
    parts = [p.strip(" .*`-") for p in _SPLIT.split(text)]
    return [p for p in parts if _TOKEN.search(p.lower())]


def _slug(text: str) -> str:
    return re.sub(r"[\s_]+", "-", text.strip().lower())
