"""A secret value of the environment is masked in the other forms it comes back in: in
part, in another case, percent- or \\u-escaped, in base64 at any alignment (alone or
inside an encoded ``user:key``), cut by a line break. An audit found each of them
repeated unmasked in skip lines, --json errors, the audit log and test logs."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.audit.masking import REDACTED, mask_text
from app.audit.quick_redact import looks_clean
from app.audit.secret_forms import FOUND_FROM, FRAGMENT, SecretForms, key_like, mask_spans
from tests.reliability.kit import only_keys

KEY = "sk-proj-AUDITSECRET0123456789abcdefXYZ"


@pytest.fixture(autouse=True)
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    only_keys(monkeypatch, OPENAI_API_KEY=KEY)


def runs_left(text: str) -> list[str]:
    """Runs of FRAGMENT characters of KEY still in ``text``, in any case."""
    low = text.lower()
    return [
        r for i in range(len(KEY) - FRAGMENT + 1) if (r := KEY[i : i + FRAGMENT].lower()) in low
    ]


FORMS = {
    "upper": KEY.upper(),
    "mixed": KEY.swapcase(),
    "percent": "".join(f"%{b:02X}" for b in KEY.encode()),
    "percent_in_part": KEY[:10] + "".join(f"%{b:02x}" for b in KEY[10:].encode()),
    "escaped": "".join(f"\\u{ord(c):04X}" for c in KEY),
    "split": KEY[:10] + "\n" + KEY[10:],
    "cut_short": KEY[5:30],
}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_each_form_is_masked_and_the_quick_look_sends_its_line_the_slow_way(form: str) -> None:
    shown = FORMS[form]
    text = f"HTTP 401: Incorrect API key provided: {shown}. check it"
    masked, n = mask_text(text)
    assert n >= 1 and REDACTED in masked
    assert shown not in masked and not runs_left(masked), masked
    assert masked.count("\n") == text.count("\n")  # the lines stay lines
    assert not looks_clean(json.dumps({"detail": text}, ensure_ascii=False, separators=(",", ":")))


@pytest.mark.parametrize("user", ["", "u", "us", "user", "apikey"])
@pytest.mark.parametrize("urlsafe", [False, True])
def test_base64_of_the_key_inside_any_encoded_text_is_masked(user: str, urlsafe: bool) -> None:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    blob = encode(f"{user}:{KEY}".encode() if user else KEY.encode()).decode()
    masked, n = mask_text(f"Authorization: Basic {blob}")
    assert n >= 1 and REDACTED in masked
    # what is left of the encoding spells no run of the key (at most a few bytes of it)
    left = masked.split("Basic ", 1)[1].replace(REDACTED, " ").split()
    for piece in left:
        padded = piece + "=" * (-len(piece) % 4)
        try:
            decoded = base64.b64decode(padded, altchars=b"-_" if urlsafe else None)
        except ValueError:
            continue
        assert not runs_left(decoded.decode("latin-1"))


def test_ordinary_text_and_another_key_are_masked_as_before() -> None:
    """Only the runs of this environment's values: a test's digits, a digest, prose that
    shares a few characters with the key; another key is masked by its shape, as before."""
    text = (
        "def test_add():\n    assert add(2, 3) == 5  # 0123456789, proj-AUDIT\n"
        "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n"
        'client = OpenAI(api_key="sk-proj-SOMEONEELSE9876543210zyxw")\n'
    )
    masked, n = mask_text(text)
    assert n == 1
    assert masked == text.replace("sk-proj-SOMEONEELSE9876543210zyxw", REDACTED)


def test_a_value_that_holds_a_shapes_stop_is_masked_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A shape's value stops at ``&`` or ``;``: the value whole goes first, or its end was
    left out (``password=[REDACTED]&Zq9xYw8v``, a review)."""
    monkeypatch.setenv("DB_PASSWORD", "hunter2hunter2&Zq9xYw8v")
    monkeypatch.setenv("APP_SECRET", "abcdefghij;KLMNOPQ7")
    assert mask_text("password=hunter2hunter2&Zq9xYw8v") == ("password=[REDACTED]", 1)
    assert mask_text("APP_SECRET=abcdefghij;KLMNOPQ7 ok") == ("APP_SECRET=[REDACTED] ok", 1)


def test_a_value_inside_another_key_leaves_nothing_of_that_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The value masked first left the key around it too short for its shape:
    ``sk-proj-Q1w2E3[REDACTED]r5T6y7U8i9`` (a review). Every span is found on the text
    as it came, and masked once."""
    monkeypatch.setenv("APP_SECRET", "abcdefgh12345678")
    other = "sk-proj-Q1w2E3abcdefgh12345678r5T6y7U8i9"
    assert mask_text(f"see {other} there") == ("see [REDACTED] there", 1)
    token = "Q1w2E3abcdefgh12345678r5T6y7U8i9"
    assert mask_text(f"Authorization: Bearer {token}") == ("Authorization: Bearer [REDACTED]", 1)


def test_a_short_value_is_masked_only_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """``POSTGRES_PASSWORD=postgres`` in any case masked ordinary words (a review)."""
    monkeypatch.setenv("POSTGRES_PASSWORD", "postgres")
    text = "Use PostgreSQL 16 with the POSTGRES driver"
    assert mask_text(text) == (text, 0)
    assert mask_text("dsn: user:postgres@db") == ("dsn: user:[REDACTED]@db", 1)


@given(
    key=st.text(alphabet="abcdefgh0123456789-_ABC", min_size=16, max_size=40).filter(key_like),
    before=st.text(alphabet="abc0123 -", max_size=10),
    cut=st.integers(min_value=0, max_value=40),
    upper=st.booleans(),
)
def test_the_quick_look_never_calls_clean_what_the_masker_changes(
    key: str, before: str, cut: int, upper: bool
) -> None:
    """For key-like values too (the property of the quick look with short values is in
    tests/unit/test_quick_redact.py): a run of one found in any case is no clean line."""
    from unittest.mock import patch

    from app.audit import quick_redact
    from app.audit.masking import Masker, env_pattern

    shown = key[cut:]
    text = before + (shown.upper() if upper else shown)
    masker = Masker(env_pattern((key,)), forms=SecretForms((key,)))
    changed = masker.text(text) != text
    with patch.object(quick_redact, "_secret_values", lambda: (key,)):
        clean = quick_redact.looks_clean(json.dumps({"d": text}, separators=(",", ":")))
    assert not (clean and changed), (key, text)


def test_a_value_with_too_few_different_characters_is_looked_for_only_whole() -> None:
    forms = SecretForms(("aaaaaaaaaaaaaaaa",))
    assert forms.spans("x aaaaaaaaaaaaaaaaaaaa y") == []
    assert forms.needles == ()  # (no letters and digits: not key-like, looked for whole)
    # nor a long word-like one (``postgres_password``, ``/run/secrets/x``: a review)
    assert not key_like("postgres_password") and not key_like("/run/secrets/app_token")
    assert key_like("sk-proj-AUDITSECRET0123") and key_like("0123456789abcdef0123")


@given(
    before=st.text(max_size=20),
    after=st.text(max_size=20),
    at=st.integers(min_value=0, max_value=len(KEY)),
)
def test_spans_cover_every_run_whatever_surrounds_it(before: str, after: str, at: int) -> None:
    forms = SecretForms((KEY,))
    text = before + KEY[:at] + "\n" + KEY[at:] + after
    masked = mask_spans(text, forms.spans(text), REDACTED)
    assert masked.count("\n") == text.count("\n")
    for part in (KEY[:at], KEY[at:]):
        # no run of either side of the cut long enough to be found is left, whatever is
        # beside it (a whole side gone was all this said: a 14-character rest passed)
        for i in range(len(part) - FOUND_FROM + 1):
            assert part[i : i + FOUND_FROM] not in masked, (part, masked)
