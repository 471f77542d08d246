"""Cost estimates from the catalog's list prices (pure)."""

from __future__ import annotations

from app.policy.schema import Model


def cost_usd(model: Model, tokens_in: int, tokens_out: int) -> float:
    """USD for a call; local models are always 0."""
    if model.provider == "local":
        return 0.0
    return (
        tokens_in * model.price_in_usd_per_mtok + tokens_out * model.price_out_usd_per_mtok
    ) / 1_000_000
