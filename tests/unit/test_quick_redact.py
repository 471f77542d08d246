"""The audit's quick redaction look (app.audit.quick_redact): its marker search finds
exactly what a search for each marker finds, and a folding character sends a line the
slow way."""

from __future__ import annotations

import json
from collections.abc import Iterator
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.audit import quick_redact
from app.audit.masking import CI_MARKERS, CS_MARKERS, LOWER_ASSIGN_NEEDLES
from app.audit.quick_redact import _SECRET_KEY_ENDS, Look, looks_clean

_CI = (*CI_MARKERS, *_SECRET_KEY_ENDS)
#: the exact needles: a lower-case secret name only as it is assigned
_EXACT = (*CS_MARKERS, *LOWER_ASSIGN_NEEDLES)
_ALL = (*_EXACT, *_CI)
# markers whole, cut short, and in the other case; with the bytes around them
_PIECES = st.one_of(
    st.sampled_from(_ALL),
    st.sampled_from(_ALL).map(lambda m: m[:-1]),
    st.sampled_from(_ALL).map(str.swapcase),
    st.text(alphabet='aAkKsSgGhHpPtT-_":\\n ixzoe', max_size=4),
)


@pytest.fixture(autouse=True)
def _no_secret_in_the_environment() -> Iterator[None]:
    # (a key variable set where the tests run would send a line the slow way whatever
    # its markers; patched, not the environment cleared, as hypothesis reruns the test)
    with patch.object(quick_redact, "_secret_values", lambda: ()):
        yield


def _plainly(data: bytes) -> bool:
    low = data.lower()
    return any(m.encode() in data for m in _EXACT) or any(m.encode() in low for m in _CI)


@settings(max_examples=600, deadline=None)
@given(st.lists(_PIECES, max_size=8).map("".join))
def test_the_marker_search_finds_what_a_find_per_marker_finds(text: str) -> None:
    data = text.encode()
    quick = Look(()).finds(data)
    assert quick == _plainly(data)


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=8).map("".join))
def test_a_line_looks_clean_when_it_holds_no_marker_in_any_case(text: str) -> None:
    # the whole look (the lowering included), with no secret in the environment
    assert looks_clean(text) == (not _plainly(text.encode()))


def test_every_marker_is_found_alone_and_in_a_line() -> None:
    for marker in _ALL:
        for text in (marker, f'{{"detail":"x {marker} y"}}'):
            assert not looks_clean(text), marker
    assert looks_clean('{"detail":"confidence 0.5 < 0.75 → gpt-5.1-high"}')


def test_a_lower_case_secret_name_assigned_takes_the_slow_way_and_is_masked() -> None:
    """``secret_key = "…"`` in a line's text was not masked (a user audit); the words
    alone, in every call line (``secrets_masked``, ``tokens_in``), stay quick."""
    from app.audit.redact import redact

    assert looks_clean('{"values":{"secrets_masked":0,"tokens_in":200,"tokens_out":20}}')
    for text in (
        'secret_key = "Zx9Lq2pW8vR4tY6uI0oP"',
        "aws_secret_access_key = Qm9vZ2llQm9vZ2llQm9vZ2ll12",
        "api_token: xq7Lm2Np9Rt4Vw1Zy8",
        '"client_secret": "Pp4Oo3Ii2Uu1Yy0Tt9"',
    ):
        line = {"detail": f"the brief quotes {text}"}
        assert not looks_clean(json.dumps(line, separators=(",", ":"))), text
        assert "[REDACTED]" in redact(line)["detail"], text


def test_a_character_that_folds_to_ascii_takes_the_slow_way() -> None:
    # İ ı ſ and the Kelvin sign match ASCII letters under an ignore-case pattern
    for char in ("\u0130", "\u0131", "\u017f", "\u212a"):
        assert not looks_clean(f'{{"detail":"a{char}b → c"}}'), repr(char)
    # other non-ASCII text, bytes 0xC4/0xC5/0x84 in it included, stays quick
    assert looks_clean('{"detail":"Ą ą Ņ → ü"}')


def test_a_secret_value_of_the_environment_sends_a_line_the_slow_way() -> None:
    key = "sk-env-0123456789abcdef"
    with patch.object(quick_redact, "_secret_values", lambda: (key,)):
        assert not looks_clean(f'{{"detail":"x {key} y"}}')
        assert looks_clean('{"detail":"x y"}')
    # a value JSON would escape is never found in the text as it is: every line is slow
    with patch.object(quick_redact, "_secret_values", lambda: ('sk-"quoted"-0123456789',)):
        assert not looks_clean('{"detail":"x y"}')
        assert not looks_clean('{"detail":"x y"}')  # (remembered for these values)


# no marker can be spelled of these (no k, s, t, p, x, z, "), with characters of 2, 3 and
# 4 bytes in UTF-8 whose bytes share leads and tails
_PLAIN = "abcdeé€𝄞ÿĀ0123 .-"


@settings(max_examples=400, deadline=None)
@given(
    st.text(alphabet=_PLAIN, max_size=40),
    st.text(alphabet=_PLAIN, min_size=8, max_size=12),
    st.booleans(),
)
def test_a_secret_value_is_found_in_the_bytes_where_it_is_in_the_text(
    text: str, value: str, put_in: bool
) -> None:
    if put_in:
        text = text[: len(text) // 2] + value + text[len(text) // 2 :]
    with patch.object(quick_redact, "_secret_values", lambda: (value,)):
        assert looks_clean(text) == (value not in text)


def test_a_non_ascii_secret_value_is_found() -> None:
    key = "clé-secrète-€-0123"
    with patch.object(quick_redact, "_secret_values", lambda: ("other-value-0000", key)):
        assert not looks_clean(f'{{"detail":"→ {key} ←"}}')
        assert looks_clean('{"detail":"→ clé-secrète ←"}')


def test_an_empty_secret_value_sends_every_line_the_slow_way() -> None:
    # (every text holds it, as ``"" in text`` says; an automaton cannot look for it)
    with patch.object(quick_redact, "_secret_values", lambda: ("other-value-0000", "")):
        assert not looks_clean('{"detail":"x y"}')


# letters in both cases (none of a marker), so that values and text differ in case only
_CASED = "aAbBcCdD0 -"


@settings(max_examples=500, deadline=None)
@given(
    st.text(alphabet=_CASED, max_size=30),
    st.lists(st.text(alphabet=_CASED, min_size=8, max_size=10), min_size=1, max_size=3),
    st.integers(0, 3),
)
def test_secret_values_alike_but_for_their_case_are_each_found_exactly(
    text: str, values: list[str], put_in: int
) -> None:
    # the one pass looks for each value lowered and compares what it finds with the
    # bytes: a value is found where it is, never where only a differently cased one is
    if put_in < len(values):
        text = text[: len(text) // 2] + values[put_in] + text[len(text) // 2 :]
    with patch.object(quick_redact, "_secret_values", lambda: tuple(values)):
        assert looks_clean(text) == (not any(v in text for v in values))


def test_two_values_lowered_alike_are_both_looked_for() -> None:
    first, second = "Abcd-Efgh-0001", "abcd-efgh-0001"
    with patch.object(quick_redact, "_secret_values", lambda: (first, second)):
        assert not looks_clean(f'{{"detail":"x {second} y"}}')
        assert not looks_clean(f'{{"detail":"x {first} y"}}')
        assert looks_clean('{"detail":"x ABCD-EFGH-0001 y"}')


def test_a_key_like_value_is_found_in_any_case_a_short_one_only_as_it_is() -> None:
    """A provider echoed a key upper-cased (secret_forms); a short password in any case
    would be ordinary words (POSTGRES in a sentence): looked for only as it is."""
    key, short = "sk-proj-Abcd0123Efgh4567", "postgres"
    with patch.object(quick_redact, "_secret_values", lambda: (key, short)):
        assert not looks_clean(f'{{"detail":"x {key.upper()} y"}}')
        assert not looks_clean('{"detail":"x postgres y"}')
        assert looks_clean('{"detail":"Use PostgreSQL with the POSTGRES driver"}')


def test_a_value_lowered_to_an_ignore_case_marker_is_found_as_that_marker() -> None:
    with patch.object(quick_redact, "_secret_values", lambda: ("GITHUB_PAT_",)):
        assert not looks_clean('{"detail":"x GITHUB_PAT_ y"}')
        assert not looks_clean('{"detail":"x github_pat_ y"}')  # (the marker itself)
        assert looks_clean('{"detail":"x y"}')


def test_a_case_sensitive_marker_in_another_case_is_no_match() -> None:
    # its lowered form is looked for in the lowered bytes, then compared with the bytes
    assert looks_clean('{"values":{"secrets_masked":0,"tokens_in":200,"tokens_out":20}}')
    assert not looks_clean('{"values":{"TOKEN":1}}')
    assert not looks_clean('{"detail":"x AKIA y"}')
    assert looks_clean('{"detail":"x akia y"}')


def test_a_url_takes_the_slow_way_only_with_an_at_sign() -> None:
    """A URL's password needs '://' and '@': a runtime's URL in a fallback line stays on
    the quick path, and a line that may hold user:password@ does not."""
    with patch.object(quick_redact, "_secret_values", return_value=()):
        assert looks_clean('{"detail":"vLLM at http://127.0.0.1:8000/v1 is down"}')
        assert not looks_clean('{"url":"postgresql://admin:S3cret@db/x"}')
        assert not looks_clean('{"url":"redis://:S3cret@cache:6379"}')


def test_a_marker_with_a_tab_is_found_as_the_lines_json_spells_it() -> None:
    """``DB_PASS<tab>=…``: the marker ``PASS\\t`` is the two characters ``\\t`` in a line's
    compact JSON, and the line was written unmasked (a review)."""
    from app.audit.redact import redact

    line = {"detail": "DB_PASS\t=s3cr3t99"}
    assert not looks_clean(json.dumps(line, separators=(",", ":"), ensure_ascii=False))
    assert "s3cr3t99" not in redact(line)["detail"]
