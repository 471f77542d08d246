"""app.compact_json's encoder writes exactly the C encoder's text (orjson where orjson
writes that text, the C encoder elsewhere), or raises as the C encoder raises."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
import random
import struct
import uuid
from collections import OrderedDict
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app import compact_json
from app.compact_json import encoder, stdlib_encoder


class Plain(enum.Enum):
    A = "a"
    B = (1, 2.5e-7)
    C = frozenset({3})


class Number(enum.IntEnum):
    ONE = 1


class Word(str, enum.Enum):  # noqa: UP042 (a member's str() is "Word.RED" on 3.11)
    RED = "red"


class Text(str):
    def __str__(self) -> str:
        return "not what is written"


class Whole(int):
    def __repr__(self) -> str:
        return "not what is written"


class Real(float):
    def __repr__(self) -> str:
        return "not what is written"


class Items(list[Any]):
    def __iter__(self) -> Any:
        return iter(["not what is written"])


class Pair(NamedTuple):
    x: Any
    y: Any


class Ordered(OrderedDict[Any, Any]):
    pass


@dataclasses.dataclass
class Point:
    x: int = 1


def _default(obj: Any) -> Any:
    """A caller's default, as the audit's: sets sorted, anything else its str."""
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=repr)
    return str(obj)


def _encoded(encode: Any, value: Any) -> tuple[str, Any]:
    try:
        return "text", encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        return "error", type(exc)


_floats = st.one_of(
    st.floats(),
    st.floats(min_value=-1e-3, max_value=1e-3),
    st.sampled_from([1e-5, 1e-7, 1.5e-300, 5e-324, 1e16, 1e22, 0.0001, -0.0, 1e15]),
    st.builds(Real, st.floats()),
)
_texts = st.one_of(
    st.text(max_size=8),
    st.text(st.characters(codec="utf-8", categories=["Cc", "Zl", "Zp", "Co"]), max_size=4),
    st.sampled_from(["\ud800", "null", "a:1e5", ",0.00001", "\u2028", '"\\']),
    st.builds(Text, st.text(max_size=4)),
)
_keys = st.one_of(
    st.text(max_size=5),
    st.builds(Text, st.text(max_size=3)),
    st.sampled_from([Word.RED, "\udfff"]),
    st.integers(-3, 3),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, max_value=1e3, min_value=-1e3),
)
_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.builds(Whole, st.integers(-(2**66), 2**66)),
    _floats,
    _texts,
    st.sampled_from([*Plain, *Number, *Word]),
    st.builds(Point),
    st.builds(lambda s: dt.datetime(2026, 1, 1, 0, s), st.integers(0, 59)),
    st.builds(uuid.UUID, st.sampled_from(["12345678123456781234567812345678"])),
    st.frozensets(st.integers(0, 9), max_size=3),
)
_values = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.builds(Items, st.lists(inner, max_size=3)),
        st.tuples(inner, inner),
        st.builds(Pair, inner, inner),
        st.dictionaries(_keys, inner, max_size=4),
        st.builds(Ordered, st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    ),
    max_leaves=14,
)

_OPTIONS = [
    {"sort_keys": True, "allow_nan": False, "default": _default},
    {"sort_keys": False, "allow_nan": True},
    {"sort_keys": True, "allow_nan": True},
]


@pytest.mark.parametrize("options", _OPTIONS, ids=["audit", "records", "sorted"])
@settings(max_examples=600, deadline=None)
@given(value=_values)
def test_the_encoder_writes_the_c_encoders_text(options: dict[str, Any], value: Any) -> None:
    assert _encoded(encoder(**options), value) == _encoded(stdlib_encoder(**options), value)


def test_every_float_is_spelled_as_repr() -> None:
    encode, rng = encoder(allow_nan=False), random.Random(20)
    floats = [struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0] for _ in range(20_000)]
    floats += [rng.uniform(-1, 1) * 10.0 ** rng.randint(-12, 20) for _ in range(20_000)]
    for f in floats:
        if math.isfinite(f):
            assert encode(f) == repr(f) == json.dumps(f)
            assert encode([f]) == f"[{f!r}]"
        else:
            with pytest.raises(ValueError):
                encode(f)


def test_orjson_writes_the_common_case(monkeypatch: pytest.MonkeyPatch) -> None:
    # the line's values as the router writes them go orjson's way (not the C encoder's
    # every time, which would pass the tests above too)
    slow: list[Any] = []
    real = compact_json.stdlib_encoder

    def counted(**options: Any) -> Any:
        inner = real(**options)
        return lambda value: slow.append(value) or inner(value)

    monkeypatch.setattr(compact_json, "stdlib_encoder", counted)
    encode = compact_json.encoder(sort_keys=True, allow_nan=False, default=_default)
    values = {"est_cost_usd": 0.2048125, "inputs": {"left": {"b": 999999.99955, "a": 1}}}
    assert encode(values) == json.dumps(values, sort_keys=True, separators=(",", ":"))
    assert slow == []
    # and what orjson would spell otherwise goes the C encoder's
    for odd in ({"x": None}, {"x": 1e-05}, {"x": 1e16}, {1: "a"}, {"x": 2**64}):
        encode(odd)
    assert len(slow) == 5


def test_a_plain_enum_is_written_as_its_value_both_ways() -> None:
    for encode in (encoder(default=_default), stdlib_encoder(default=_default)):
        assert encode([Plain.A, Plain.B, Plain.C, Number.ONE, Word.RED]) == (
            '["a",[1,2.5e-07],[3],1,"red"]'
        )


class Twice(dict[Any, Any]):
    """A dict whose items() gives a key twice: the C encoder writes both."""

    def items(self) -> Any:
        return [("a", 1), ("a", 2)]


class Listed(dict[Any, Any]):
    """A dict whose items() are lists: the C encoder refuses them."""

    def items(self) -> Any:
        return [["a", 1]]


def test_a_dict_read_otherwise_by_its_items_is_left_to_the_c_encoder() -> None:
    for options in _OPTIONS:
        for value in (Twice(a=0), Listed(a=0), {"k": [Twice(a=0)]}):
            assert _encoded(encoder(**options), value) == _encoded(stdlib_encoder(**options), value)


def test_an_orjson_that_spells_floats_otherwise_is_not_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert compact_json.USABLE  # this one spells them as checked
    real = compact_json.orjson.dumps

    def unsigned(value: Any, *args: Any) -> bytes:  # orjson before 3.11.7: 1e16
        return real(value, *args).replace(b"e+", b"e")

    monkeypatch.setattr(compact_json.orjson, "dumps", unsigned)
    assert not compact_json._spells_floats_as_checked()
