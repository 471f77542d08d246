"""Cost estimates and charges from the catalog's list prices (pure).

A call's prompt is priced in its parts, as the providers bill it: the tokens the provider
read from its prompt cache at the model's cache-read price, those it wrote to its cache
at the cache-write price, the rest at the input price (a model without a cache price
charges those tokens at its input price: never less than the bill). The sum is made in
integers, pico-dollars a token (a price of $0.028 per million tokens is 28,000 of them),
and rounded once to the nano-dollar the ledger counts in: no float is summed.
"""

from __future__ import annotations

from app.policy.schema import Model
from app.router.ledger.money import NANO

#: pico-dollars (1e-12) a token per USD per million tokens
_PICO_PER_USD_MTOK = 1_000_000
#: pico-dollars per nano-dollar
_PICO_PER_NANO = 1_000


def _pico(usd_per_mtok: float) -> int:
    """A price per million tokens as pico-dollars a token (exact to six decimals)."""
    return round(usd_per_mtok * _PICO_PER_USD_MTOK)


def cost_nusd(
    model: Model,
    tokens_in: int,
    tokens_out: int,
    *,
    tokens_cached: int = 0,
    tokens_cache_write: int = 0,
) -> int:
    """Nano-dollars for a call; local models are always 0. ``tokens_in`` is the whole
    prompt; ``tokens_cached`` (read from the provider's cache) and ``tokens_cache_write``
    (written to it) are parts of it, each priced at its own rate. Parts that add up to
    more than the prompt (no usage the backends pass on: app.backends.base.plausible_usage)
    are taken as no more than it: the cache read, the cheaper part, is cut first."""
    if model.provider == "local":
        return 0
    price_in = _pico(model.price_in_usd_per_mtok)
    pico = tokens_in * price_in + tokens_out * _pico(model.price_out_usd_per_mtok)
    if tokens_cached or tokens_cache_write:
        read, write = model.price_cache_read_usd_per_mtok, model.price_cache_write_usd_per_mtok
        written = max(0, min(tokens_cache_write, tokens_in))
        cached = max(0, min(tokens_cached, tokens_in - written))
        if read is not None:
            pico += cached * (_pico(read) - price_in)
        if write is not None:
            pico += written * (_pico(write) - price_in)
    return (pico + _PICO_PER_NANO // 2) // _PICO_PER_NANO


def cost_usd(
    model: Model,
    tokens_in: int,
    tokens_out: int,
    *,
    tokens_cached: int = 0,
    tokens_cache_write: int = 0,
) -> float:
    """USD for a call, to the nano-dollar the ledger counts in (:func:`cost_nusd`); local
    models are always 0.

    Rounded here, where it is made, so every figure read from it (decide()'s estimate,
    which the escalation and approval lines, the approval prompts and ``policy simulate``
    carry) is the ledger's: unrounded, an estimate went into the audit as
    0.00011675999999999999 beside the call line's 0.00011676."""
    nano = cost_nusd(
        model,
        tokens_in,
        tokens_out,
        tokens_cached=tokens_cached,
        tokens_cache_write=tokens_cache_write,
    )
    return nano / NANO
