"""Results remembered by their input (app.remembered), and the two users of it: the token
counts of a conversation's messages (app.tokens.count_messages) and the masking of long
texts (app.audit.masking.Masker.text). A remembered result is the one working it out
again gives; a text sent again (a new object, as each request parses its own) is not
worked out again; short texts are never kept; the memory stays within its bound; and a
masking is remembered only for the environment it was made with."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app import remembered, tokens
from app.audit import masking
from app.audit.masking import REDACTED, Masker, env_pattern
from app.backends.base import ChatRequest, Message
from app.remembered import Digests, Remembered, digest
from app.router.calling import mask_request
from app.router.routed import input_hash, request_tokens
from app.tokens import MESSAGE_OVERHEAD, REPLY_PRIMING, count_messages, count_text

LONG = "def parse(tokens):\n    return [t for t in tokens if t]  # the tail\n" * 60
SECRET = "APP_SECRET=s3cr3t-value-42\n"


def _copy(text: str) -> str:
    """An equal string that is another object (its hash not yet computed)."""
    return "".join(list(text))


# ── the memory ───────────────────────────────────────────────────────────────────────────


def test_the_least_recently_used_go_first_and_the_bounds_hold() -> None:
    memory: Remembered[str, int] = Remembered(min_chars=10, max_entries=4, max_chars=400)
    keys = [f"text {i}" for i in range(6)]
    for n, key in enumerate(keys):
        memory.put(key, n)  # holding no text: the count of entries bounds them
    assert memory.kept() == keys[2:] and memory.chars == 0
    assert memory.get(_copy(keys[2])) == 2  # now the most recently used
    memory.put(keys[0], 0)
    assert memory.kept() == [keys[4], keys[5], keys[2], keys[0]]
    assert memory.get(keys[3]) is None
    # results holding text: the characters bound them too
    texts: Remembered[str, int] = Remembered(min_chars=10, max_entries=100, max_chars=400)
    for n, key in enumerate(keys[:5]):
        texts.put(key, n, 100)
    assert texts.kept() == keys[1:5] and texts.chars == 400
    texts.put("huge", 9, 101)  # more than a quarter of the bound: never kept
    assert texts.get("huge") is None and texts.chars == 400


def test_a_text_is_remembered_by_a_digest_of_every_character() -> None:
    assert digest("a\ud800b") != digest("a\udc00b")  # lone surrogates too
    assert digest(LONG) == digest(_copy(LONG)) != digest(LONG + " ")


# ── token counts ─────────────────────────────────────────────────────────────────────────


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each text app.tokens counts, in order (a fresh memory for the test)."""
    seen: list[str] = []
    real = tokens.count_text

    def counting(text: str) -> int:
        seen.append(text)
        return real(text)

    monkeypatch.setattr(tokens, "count_text", counting)
    monkeypatch.setattr(
        tokens, "REMEMBERED", Remembered(min_chars=tokens.REMEMBERED.min_chars, max_entries=64)
    )
    return seen


@given(texts=st.lists(st.text(max_size=3000) | st.just(LONG), max_size=6))
def test_a_remembered_count_is_the_count(texts: list[str]) -> None:
    expected = sum(MESSAGE_OVERHEAD + count_text(t) for t in texts) + REPLY_PRIMING
    assert count_messages(texts) == expected
    assert count_messages([_copy(t) for t in texts]) == expected


def test_a_long_message_sent_again_is_counted_once(counted: list[str]) -> None:
    first = count_messages([LONG, "what next?"])
    again = count_messages([_copy(LONG), "what next?", _copy(LONG) + "!"])
    assert again == first + MESSAGE_OVERHEAD + count_text(LONG + "!")
    # the long text once; the short one each time; the new long one once
    assert counted == [LONG, "what next?", "what next?", LONG + "!"]


def test_a_text_is_remembered_from_min_chars_on(counted: list[str]) -> None:
    """(what ``Remembered.worth`` said, where the callers now read ``min_chars``)"""
    least = tokens.REMEMBERED.min_chars
    short, long = "x" * (least - 1), "y" * least
    for _ in range(2):
        count_messages([_copy(short), _copy(long)])
    assert counted == [short, long, short]  # the short one each time, the long one once


# ── masking ──────────────────────────────────────────────────────────────────────────────


@pytest.fixture
def masked_anew(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each text the masker works out, in order (a fresh memory for the test)."""
    seen: list[str] = []
    real = Masker._text

    def working(self: Masker, text: str) -> str:
        seen.append(text)
        return real(self, text)

    monkeypatch.setattr(Masker, "_text", working)
    monkeypatch.setattr(
        masking,
        "_MASKED",
        Remembered(min_chars=masking._MASKED.min_chars, max_entries=64, max_chars=2**20),
    )
    return seen


def test_a_long_text_masked_again_gives_the_same_text_and_count(masked_anew: list[str]) -> None:
    text = LONG + SECRET + LONG
    first = Masker(None)
    out = first.text(text)
    assert "s3cr3t-value-42" not in out and REDACTED in out and first.count == 1
    again = Masker(None)
    assert again.text(_copy(text)) == out and again.count == 1
    assert masked_anew == [text]  # worked out once
    # what is kept: digests, and the masked text, never one that holds the secret
    assert Masker(None).text(_copy(LONG)) == LONG  # nothing in it: nothing but a digest kept
    kept = [(key, masking._MASKED.get(key)) for key in masking._MASKED.kept()]
    assert all(isinstance(key[1], bytes) for key, _ in kept)
    assert sorted(str(value) for _, value in kept) == sorted([str((out, 1)), str((None, 0))])
    assert Masker(None).text("short " + SECRET) == "short APP_SECRET=" + REDACTED + "\n"


def test_a_text_is_masked_anew_below_min_chars(masked_anew: list[str]) -> None:
    least = masking._MASKED.min_chars
    short, long = "x" * (least - 1), "y" * least
    for _ in range(2):
        Masker(None).text(_copy(short))
        Masker(None).text(_copy(long))
    assert masked_anew == [short, long, short]


def test_a_masking_is_remembered_only_for_its_environment(masked_anew: list[str]) -> None:
    """A value that becomes a key variable's after a text was masked is masked the next
    time: the environment's values are part of what is remembered by."""
    value = "plain-looking-value-0042"
    text = LONG + f"the deploy uses {value} today\n"
    assert value in Masker(env_pattern(())).text(text)  # nobody's key yet
    now_secret = Masker(env_pattern((value,)))
    out = now_secret.text(_copy(text))
    assert value not in out and now_secret.count == 1
    assert len(masked_anew) == 2


@given(
    chunks=st.lists(
        st.sampled_from([LONG, SECRET, "sk-" + "Ab1" * 8 + " ", "AKIAIOSFODNN7EXAMPLE\n", "x"]),
        max_size=5,
    )
)
def test_a_remembered_masking_is_the_masking(chunks: list[str]) -> None:
    text = "".join(chunks)
    fresh = Masker(None)
    expected = fresh._text(text)
    for _ in range(2):  # worked out, then remembered
        masker = Masker(None)
        assert masker.text(_copy(text)) == expected and masker.count == fresh.count


def test_what_is_kept_of_a_masking_spells_no_secret_value(masked_anew: list[str]) -> None:
    """The environment is kept as a digest of its pattern: a key variable's value, even
    one since rotated or unset, stays in no key."""
    value = "old-rotated-key-1234567890"
    masker = Masker(env_pattern((value,)))
    assert value not in masker.text(LONG + value) and masker.count == 1
    kept = masking._MASKED.kept()
    assert kept and all(type(a) is bytes and type(b) is bytes for a, b in kept)
    assert all(value.encode() not in a + b for a, b in kept)
    results = [masking._MASKED.get(key) for key in kept]
    assert all(r is not None and value not in (r[0] or "") for r in results)
    # another pattern's masking is another key, the same pattern's the same
    assert Masker(env_pattern(("aaaa-2",))).text(LONG) == LONG
    assert Masker(env_pattern((value,))).text(_copy(LONG + value)) == masker.text(LONG + value)
    assert len(masked_anew) == 2


# ── one request's digests ────────────────────────────────────────────────────────────────


def digests_counted(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every digest app.remembered makes from here on, in order (what it hashed)."""
    made: list[bytes] = []

    class Counting:
        @staticmethod
        def sha256(data: bytes) -> Any:
            made.append(data)
            return hashlib.sha256(data)

    monkeypatch.setattr(remembered, "hashlib", Counting)
    return made


def test_a_request_digests_each_long_text_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its count, its hash and its masking share one Digests: each long text object is
    digested once, whoever asks, and the results are the ones each works out alone."""
    request = ChatRequest(
        messages=[
            Message(role="system", content=LONG),
            Message(role="user", content=LONG + SECRET),
            Message(role="user", content="short"),
        ]
    )
    alone = (request_tokens(request), input_hash(request), mask_request(request))
    made = digests_counted(monkeypatch)
    shared = Digests()
    together = (
        request_tokens(request, shared),
        input_hash(request, shared),
        mask_request(request, shared),
    )
    assert together == alone and together[2][1] == 1  # the secret masked still
    assert made == [m.content.encode() for m in request.messages[:2]]
    # an equal text that is another object is digested as itself (never another's)
    assert shared(_copy(LONG)) == shared(LONG) and len(made) == 3


def test_a_key_let_go_in_the_middle_of_a_look_is_no_error() -> None:
    """A look takes no lock (its two steps are each atomic under the GIL): another
    thread's ``put`` may let the key go between them, and the look still answers."""

    class LetGo(OrderedDict[int, tuple[int, int]]):
        """Lets each key go right after it is read, as another thread's put would."""

        def get(self, key: int, default: Any = None) -> Any:
            hit = super().get(key, default)
            self.pop(key, None)
            return hit

    memory: Remembered[int, int] = Remembered(min_chars=1, max_entries=8)
    memory.put(1, 10)
    memory._kept = LetGo(memory._kept)
    assert memory.get(1) == 10
    assert memory.get(1) is None and memory.kept() == []


def test_a_requests_prompt_is_counted_once_with_its_digests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The gateway counts the prompt, and the router again for a client's context
    estimate: with Claude Code's 20 tools, ~350 µs a request (a review)."""
    from app.backends.base import ChatRequest, Message, ToolSpec
    from app.router import routed

    counted: list[int] = []
    real = routed.count_messages

    def counting(texts: list[str], digest_of: Any) -> int:
        counted.append(len(texts))
        return real(texts, digest_of)

    monkeypatch.setattr(routed, "count_messages", counting)
    request = ChatRequest(
        messages=[Message(role="user", content="parse the header")],
        tools=[ToolSpec(name="read_file", description="reads a file")],
    )
    digests = Digests()
    first = routed.request_tokens(request, digests)
    # a copy with the same lists (the gateway's passthrough headers): the same count
    copy = request.model_copy(update={"passthrough_headers": {"anthropic-beta": "x"}})
    assert routed.request_tokens(copy, digests) == first and len(counted) == 1
    other = request.model_copy(update={"messages": [Message(role="user", content="more")]})
    assert routed.request_tokens(other, digests) != first and len(counted) == 2
    assert routed.request_tokens(request) == first and len(counted) == 3  # no Digests
