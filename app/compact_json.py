"""Compact JSON text from CPython's C encoder, built once (a leaf: the standard library
only).

``json.dumps`` and ``JSONEncoder.encode`` build that encoder again on every call, and go
through a few Python frames to reach it: about a microsecond each time, paid several
times a request on the router's path (audit values, ledger records, the input hash). The
text is exactly ``json.dumps(value, separators=(",", ":"), ...)``'s with the same options.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any


def _refuse(obj: Any) -> Any:
    """``JSONEncoder.default``: a value JSON has no spelling for is an error."""
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def encoder(
    *,
    sort_keys: bool = False,
    ensure_ascii: bool = False,
    allow_nan: bool = True,
    default: Callable[[Any], Any] = _refuse,
) -> Callable[[Any], str]:
    """``lambda value: json.dumps(value, separators=(",", ":"), sort_keys=..., ...)``,
    without the per-call set-up. Without circular-reference markers: a value that holds
    itself is a RecursionError (``json.dumps`` says ValueError)."""
    make: Any = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # an interpreter without json's C encoder
        dumps = json.JSONEncoder(
            separators=(",", ":"),
            sort_keys=sort_keys,
            ensure_ascii=ensure_ascii,
            allow_nan=allow_nan,
            default=default,
        ).encode
        return dumps
    quote = encode_basestring_ascii if ensure_ascii else encode_basestring
    c_encode = make(None, default, quote, None, ":", ",", sort_keys, False, allow_nan)

    def encode(value: Any) -> str:
        return "".join(c_encode(value, 0))

    return encode
