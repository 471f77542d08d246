"""Cost estimates from the catalog's list prices (pure)."""

from __future__ import annotations

from app.policy.schema import Model


def cost_usd(model: Model, tokens_in: int, tokens_out: int) -> float:
    """USD for a call, to the nano-dollar the ledger counts in; local models are always 0.

    Rounded here, where it is made, so every figure read from it (decide()'s estimate,
    which the escalation and approval lines, the approval prompts and ``policy simulate``
    carry) is the ledger's: unrounded, an estimate went into the audit as
    0.00011675999999999999 beside the call line's 0.00011676."""
    if model.provider == "local":
        return 0.0
    usd = tokens_in * model.price_in_usd_per_mtok + tokens_out * model.price_out_usd_per_mtok
    return round(usd / 1_000_000, 9)
