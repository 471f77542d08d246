"""Canonical JSON, line hashes and chain verification, without a database."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from app.audit.canonical import (
    GENESIS_HASH,
    canonical_json,
    chain_line,
    jsonable,
    line_hash,
    verify_lines,
)
from app.audit.prepared import prepare
from app.audit.types import AuditLine


def make_chain(
    details: list[str], *, session: str = "s", runs: list[str] | None = None
) -> list[str]:
    """A valid chain as exported JSONL texts, built with the same functions the log uses."""
    out: list[str] = []
    prev = GENESIS_HASH
    for i, detail in enumerate(details, start=1):
        body: dict[str, Any] = {
            "seq": i,
            "ts": f"2026-01-01T12:00:{i % 60:02d}.000Z",
            "session": session,
            "run": runs[i - 1] if runs else None,
            "kind": "route",
            "role": "architect",
            "from": None,
            "to": "qwen",
            "reason_codes": ["r"],
            "values": {"i": i},
            "policy_version": "1.0.0",
            "provenance": {},
            "detail": detail,
            "prev_hash": prev,
        }
        body["hash"] = line_hash(body)
        prev = body["hash"]
        out.append(canonical_json(body))
    return out


def test_canonical_json_is_sorted_compact_and_unicode() -> None:
    assert canonical_json({"b": 1, "a": ["é", None]}) == '{"a":["é",null],"b":1}'


def test_line_hash_ignores_the_hash_field() -> None:
    body = {"seq": 1, "x": "y"}
    assert line_hash(body) == line_hash({**body, "hash": "anything"})
    assert len(line_hash(body)) == 64


def test_jsonable_round_trips() -> None:
    value = jsonable({"t": (1, 2), 3: float("inf"), "s": {"b", "a"}, "bad": "x\udc80"})
    assert value == {"t": [1, 2], "3": "inf", "s": ["a", "b"], "bad": "x?"}
    assert json.loads(canonical_json(value)) == value


def test_exported_lines_validate_as_audit_lines() -> None:
    for text in make_chain(["a", "b"]):
        line = AuditLine.model_validate_json(text)
        assert line.to == "qwen"


def test_full_chain_verifies() -> None:
    chain = make_chain(["a", "b", "c"])
    report = verify_lines(chain)
    assert report.ok and report.lines_checked == 3
    assert report.head_hash == json.loads(chain[-1])["hash"]
    assert verify_lines([json.loads(t) for t in chain]).ok  # dicts are accepted too
    assert verify_lines([*chain, "", "  "]).ok  # blank lines are skipped
    assert verify_lines([]).ok


def test_edit_is_caught_at_its_seq() -> None:
    chain = make_chain(["a", "b", "c"])
    chain[1] = chain[1].replace('"detail":"b"', '"detail":"B"')
    report = verify_lines(chain)
    assert not report.ok and report.first_bad_seq == 2
    assert report.lines_checked == 1
    assert "edited" in (report.problem or "")


def test_rehashed_edit_breaks_the_next_link() -> None:
    chain = make_chain(["a", "b", "c"])
    data = json.loads(chain[1])
    data["detail"] = "forged"
    data["hash"] = line_hash(data)
    chain[1] = canonical_json(data)
    report = verify_lines(chain)
    assert report.first_bad_seq == 3 and "prev_hash" in (report.problem or "")


def test_deletion_and_reordering_are_caught() -> None:
    chain = make_chain(["a", "b", "c", "d"])
    assert verify_lines(chain[:1] + chain[2:]).first_bad_seq == 2
    assert verify_lines(chain[1:]).first_bad_seq == 1
    swapped = [chain[0], chain[2], chain[1], chain[3]]
    assert verify_lines(swapped).first_bad_seq == 2


def test_truncation_needs_the_head_anchor() -> None:
    chain = make_chain(["a", "b", "c"])
    head = json.loads(chain[-1])["hash"]
    assert verify_lines(chain[:-1]).ok  # no chain can tell on its own
    report = verify_lines(chain[:-1], head_hash=head, head_seq=3)
    assert not report.ok and report.first_bad_seq == 3
    assert "cut off" in (report.problem or "")
    assert not verify_lines(chain[:-1], head_hash=head).ok


def test_malformed_input_is_a_finding_not_a_crash() -> None:
    chain = make_chain(["a", "b"])
    assert verify_lines([chain[0], "{not json"]).first_bad_seq == 2
    assert verify_lines([chain[0], "[1, 2]"]).first_bad_seq == 2
    extra = json.loads(chain[1]) | {"extra": 1}
    report = verify_lines([chain[0], canonical_json(extra)])
    assert not report.ok and "malformed" in (report.problem or "")
    missing = {k: v for k, v in json.loads(chain[1]).items() if k != "prev_hash"}
    assert not verify_lines([chain[0], json.dumps(missing)]).ok


def test_a_line_whose_text_is_not_its_datas_canonical_text_is_edited() -> None:
    """A superuser with the triggers off put forged fields before a line's own: Python's
    reader keeps the last of a key given twice, so the data still hashed and the line
    verified, while a reader that keeps the first (or a human) saw the forgery."""
    chain = make_chain(["a", "b", "c", "d", "é", "f"])
    data = json.loads(chain[4])
    forged = '{"detail":"FORGED: 0 in / 0 out, $0.00","values":{"cost_usd":0},' + chain[4][1:]
    assert json.loads(forged) == data  # the same data, read the Python way
    spaced = chain[4].replace('","', '", "', 1)
    reordered = json.dumps(dict(reversed(data.items())), separators=(",", ":"), ensure_ascii=False)
    escaped = json.dumps(data, sort_keys=True, separators=(",", ":"))  # "\u00e9" for "é"
    for text in (forged, spaced, " " + chain[4], chain[4] + " ", reordered, escaped):
        assert json.loads(text) == data
        report = verify_lines([*chain[:4], text, chain[5]])
        assert not report.ok and report.first_bad_seq == 5, text
        assert report.problem == "line 5 is not in canonical form (the line was edited)"
        assert report.lines_checked == 4
        # a filtered export (an evidence bundle's) is held to the same text
        assert verify_lines([text], chain=False).first_bad_seq == 5
    # a number spelled otherwise (1.0e0 for 1.0) reads as the same data: edited all the same
    respelt = make_chain(["a"])[0].replace('"values":{"i":1}', '"values":{"i":1.0e0}')
    assert not verify_lines([respelt]).ok


def test_a_line_nested_too_deep_or_past_a_floats_range_is_a_finding_not_a_crash() -> None:
    chain = make_chain(["a", "b"])
    report = verify_lines([chain[0], "[" * 100_000 + "]" * 100_000])
    assert not report.ok and report.first_bad_seq == 2 and "not valid JSON" in str(report.problem)
    # a number past a float's range reads as an infinity, which no canonical text holds
    # (hashing it raised ValueError: a traceback)
    huge = chain[1].replace('"values":{"i":2}', '"values":{"i":1e999}')
    report = verify_lines([chain[0], huge])
    assert report.first_bad_seq == 2 and "not in canonical form" in str(report.problem)


json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["é", "\u2028", "\x00", '"', "\\", "1e-07", "0.00001"]),
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=16,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=6), json_values, max_size=5), st.text(max_size=20))
def test_every_line_the_log_writes_is_in_canonical_form(values: Any, detail: str) -> None:
    """The check above never fails an honest line: what either way of writing a line
    makes (the quick one, and the slow one) verifies, whatever the values hold."""
    fields: dict[str, Any] = {
        "session": "s",
        "run": None,
        "kind": "call",
        "role": "architect",
        "from": None,
        "to": "m",
        "reason_codes": ["R"],
        "values": values,
        "policy_version": "1.0.0",
        "provenance": {"p": values},
        "detail": detail,
    }
    _, text = chain_line(jsonable(fields), 1, GENESIS_HASH, "2026-01-01T00:00:00.000Z")
    assert verify_lines([text]).ok, text
    quick = prepare(fields)
    if quick is not None:
        made = quick[0].chain(1, GENESIS_HASH, "2026-01-01T00:00:00.000Z")
        assert verify_lines([made.text]).ok, made.text


def test_filtered_export_is_a_sub_sequence() -> None:
    runs = ["r1", "r2", "r1", "r1", "r2"]
    chain = make_chain(list("abcde"), runs=runs)
    r1 = [t for t, r in zip(chain, runs, strict=True) if r == "r1"]
    assert not verify_lines(r1).ok  # gaps are not a chain …
    assert verify_lines(r1, chain=False).ok  # … but every line is intact and in order
    edited = [r1[0], r1[1].replace('"detail":"c"', '"detail":"x"'), r1[2]]
    assert verify_lines(edited, chain=False).first_bad_seq == 3
    assert verify_lines([r1[1], r1[0], r1[2]], chain=False).first_bad_seq == 1
    # Neighbours that are consecutive (seq 3, 4) must still link.
    data = json.loads(r1[2])
    data["prev_hash"] = "f" * 64
    data["hash"] = line_hash(data)
    assert verify_lines([r1[0], r1[1], canonical_json(data)], chain=False).first_bad_seq == 4


# ── property: any single-line edit, deletion or reordering is caught ────────────────────


@st.composite
def chain_and_mutation(draw: st.DrawFn) -> tuple[list[str], str, int, int]:
    details = draw(st.lists(st.text(max_size=12), min_size=2, max_size=12))
    n = len(details)
    op = draw(st.sampled_from(["edit", "edit_rehashed", "delete", "swap"]))
    i = draw(st.integers(0, n - 1))
    j = draw(st.integers(0, n - 1).filter(lambda k: k != i))
    return make_chain(details), op, i, j


def _mutate(chain: list[str], op: str, i: int, j: int) -> list[str]:
    out = list(chain)
    if op == "delete":
        del out[i]
    elif op == "swap":
        out[i], out[j] = out[j], out[i]
    else:
        data = json.loads(out[i])
        data["detail"] = data["detail"] + "!"
        if op == "edit_rehashed":  # a forger who recomputes the line's own hash
            data["hash"] = line_hash(data)
        out[i] = canonical_json(data)
    return out


@settings(max_examples=30, deadline=None)
@given(chain_and_mutation())
def test_any_single_line_tamper_is_caught(case: tuple[list[str], str, int, int]) -> None:
    chain, op, i, j = case
    head = json.loads(chain[-1])["hash"]
    assert verify_lines(chain, head_hash=head).ok
    report = verify_lines(_mutate(chain, op, i, j), head_hash=head)
    assert not report.ok
    assert report.first_bad_seq is not None
    assert 1 <= report.first_bad_seq <= len(chain)
    if op == "edit":
        assert report.first_bad_seq == i + 1
