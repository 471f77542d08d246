"""The quick way of making an audit line (the C encoder, app.audit.prepared) writes exactly
what the slow way (``redact(jsonable(..))`` then canonical JSON) writes, or steps aside."""

from __future__ import annotations

import enum
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from app.audit.base import _prepare
from app.audit.canonical import GENESIS_HASH, canonical_json, jsonable, line_hash
from app.audit.prepared import prepare, prepare_plain
from app.audit.quick_redact import looks_clean, redact_fields
from app.audit.types import AuditLine


class Model(BaseModel):
    a: int = 1
    b: list[str] = ["x"]


class Colour(str, enum.Enum):  # noqa: UP042 (a StrEnum member's str() is its value already)
    RED = "red"
    KEY = "api_key"


class Shown:
    def __str__(self) -> str:
        return "shown!"


def _raw(values: Any, provenance: Any = None, detail: str = "d") -> dict[str, Any]:
    return {
        "session": "s",
        "run": None,
        "kind": "call",
        "role": "architect",
        "from": None,
        "to": "m",
        "reason_codes": ["R"],
        "values": values,
        "policy_version": "1.0.0",
        "provenance": provenance if provenance is not None else {},
        "detail": detail,
    }


def _slow(raw: dict[str, Any]) -> tuple[Any, str]:
    made = prepare_plain(redact_fields(jsonable(raw))).chain(7, GENESIS_HASH, "2026-01-01T00:00Z")
    return made.line, made.text


def _quick(raw: dict[str, Any]) -> tuple[Any, str] | None:
    made = prepare(raw)
    if made is None or not looks_clean(made[1], made[2]):
        return None
    line = made[0].chain(7, GENESIS_HASH, "2026-01-01T00:00Z")
    return line.line, line.text


def _verifies(text: str) -> bool:
    data = json.loads(text)
    return canonical_json(data) == text and line_hash(data) == data["hash"]


keys = st.one_of(
    st.text(max_size=6), st.integers(-20, 20), st.booleans(), st.none(), st.sampled_from(Colour)
)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["sk-abcdefghijklmnop123", "Bearer abcdefghij12345", "\ud800", "İ", "→"]),
    st.builds(Model),
    st.builds(Shown),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.frozensets(st.integers(0, 9), max_size=3),
        st.dictionaries(keys, inner, max_size=4),
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(keys, values, max_size=5), st.dictionaries(st.text(max_size=5), values))
def test_the_quick_way_writes_what_the_slow_way_writes(v: Any, p: Any) -> None:
    raw = _raw(v, p)
    slow_line, slow_text = _slow(raw)
    assert _verifies(slow_text)
    quick = _quick(raw)
    if quick is not None:
        assert quick[1] == slow_text
        # the line is read from its text by pydantic's parser: what json.loads reads
        assert quick[0] == slow_line == AuditLine.model_validate(json.loads(slow_text))


def test_what_takes_the_slow_way() -> None:
    # keys that sort as numbers, a NaN, a lone surrogate, and anything that may be a secret
    for v in ({10: "a", 9: "b"}, {"x": float("nan")}, {"x": "\ud800"}, {"k": "sk-" + "a1" * 9}):
        assert _quick(_raw(v)) is None
    assert _quick(_raw({"api_key": "x"})) is None
    # what is plain goes the quick way
    assert _quick(_raw({"a": [1, 2.5, None, True], "b": {"z": (1, 2)}}, detail="a → b"))


def test_a_str_enum_key_is_spelled_as_its_value_both_ways() -> None:
    # the C encoder writes a str subclass key as the string it is; str() of a (str, Enum)
    # member is "Colour.RED" on Python 3.11, which the slow way wrote until issue 20. orjson
    # refuses a key that is not exactly a str, so the quick way now steps aside for it.
    raw = _raw({Colour.RED: 1, "v": Colour.RED})
    assert _quick(raw) is None
    assert '"values":{"red":1,"v":"red"}' in _slow(raw)[1]
    assert _quick(_raw({"red": 1, "v": Colour.RED}))[1] == _slow(raw)[1]  # type: ignore[index]
    # and a key that is a secret's name by its value is blanked by name, both ways
    raw = _raw({Colour.KEY: "x"})
    assert _quick(raw) is None
    assert '"api_key":"[REDACTED]"' in _slow(raw)[1]


class Backwards(str):
    """A key that sorts otherwise than its text (the C encoder sorts by ``<``)."""

    def __lt__(self, other: object) -> bool:
        return str.__gt__(self, other)  # type: ignore[operator]

    __hash__ = str.__hash__


def test_a_key_that_sorts_otherwise_than_its_text_takes_the_slow_way() -> None:
    # found by a review of issue 20: the C encoder wrote {"b":1,"a":null}, which no
    # _ODD_KEY look caught, and the line did not verify
    raw = _raw({"x": {Backwards("a"): None, Backwards("b"): 1}})
    assert _quick(raw) is None
    assert _verifies(_slow(raw)[1])
    assert '"values":{"x":{"a":null,"b":1}}' in _slow(raw)[1]


def test_an_append_redacts_a_secret_the_quick_way_would_have_kept() -> None:
    made = _prepare(
        "call", "s", None, None, None, None, ["R"], {"k": "sk-" + "a1" * 9}, None, "", "1"
    )
    assert "a1a1a1" not in made.chain(1, GENESIS_HASH, "t").text


class Named(str):
    """A str subclass: AuditLine takes it; the quick way does not vouch for it."""


scalars = st.one_of(
    st.none(),
    st.text(max_size=6),
    st.builds(Named, st.text(max_size=4)),
    st.integers(-3, 3),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.text(max_size=3), max_size=2),
)


_FIELDS = (
    "session",
    "run",
    "kind",
    "role",
    "from",
    "to",
    "detail",
    "policy_version",
    "reason_codes",
)


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(  # the line's own scalars (valid), one of them as any of these, or all
        st.just({}),
        st.sampled_from(_FIELDS).flatmap(lambda k: scalars.map(lambda v: {k: v})),
        st.fixed_dictionaries({k: scalars for k in _FIELDS}),
    ),
    st.one_of(st.dictionaries(st.text(max_size=4), values, max_size=3), values),
    st.one_of(st.dictionaries(st.text(max_size=4), values, max_size=3), values),
    st.integers(0, 230),
)
def test_a_line_is_written_only_when_it_reads_back(
    fields: dict[str, Any], v: Any, p: Any, depth: int
) -> None:
    # The quick way vouches for a line without reading it back only when its text is a
    # valid line's; any other is read (validated) when chained, so one that does not
    # read back is refused before it is written.
    raw = {**_raw(v, p), **fields}
    if depth:
        raw["values"] = {"deep": _nested(depth)}
    made = prepare(raw)
    prepared = made[0] if made is not None else prepare_plain(jsonable(raw))
    try:
        line = prepared.chain(1, GENESIS_HASH, "2026-01-01T00:00:00.000Z")
    except ValidationError:
        assert not prepared.checked
        return
    assert line.line == AuditLine.model_validate_json(line.text)
    assert (line.line.seq, line.line.hash) == (line.seq, line.hash)


def test_the_quick_way_vouches_for_a_plain_line_and_reads_it_when_asked() -> None:
    made = prepare(_raw({"a": [1, 2.5]}, {"m": "x"}))
    assert made is not None and made[0].checked
    line = made[0].chain(3, GENESIS_HASH, "t")
    assert line._line is None  # not read yet
    assert line.line.values == {"a": [1, 2.5]} and line.line is line.line
    # a scalar of another type than the line's, a list for the values, a deep nesting:
    # read when chained
    for odd in (
        {"role": 5},
        {"role": Named("r")},
        {"detail": None},
        {"values": [1]},
        {"values": _nested(120)},
        {"reason_codes": [1]},
        {"reason_codes": "R"},
    ):
        made = prepare({**_raw({}), **odd})
        assert made is not None and not made[0].checked
