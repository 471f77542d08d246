"""A cloud reply's keys are masked as it streams: the pieces never spell a key, however
the provider cut them, and they add up to the masked whole."""

from __future__ import annotations

import base64
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.audit.masking import REDACTED
from app.audit.secret_forms import FOUND_FROM
from app.backends.base import ChatResult, Delta, ToolCall, ToolCallDelta, Usage
from app.router.reply_mask import ReplyMasker
from tests.reliability.kit import only_keys

OPENAI = "sk-proj-replymask-0123456789abcdefXYZ"
ANTHROPIC = "sk-ant-replymask-9876543210"


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    only_keys(monkeypatch, OPENAI_API_KEY=OPENAI, ANTHROPIC_API_KEY=ANTHROPIC)


def masker() -> ReplyMasker:
    m = ReplyMasker.for_environment()
    assert m is not None
    return m


def cut(text: str, points: list[int]) -> list[str]:
    at = sorted({p % (len(text) + 1) for p in points} | {0, len(text)})
    return [text[a:b] for a, b in itertools.pairwise(at)]


# text around the keys: their own first characters and near misses included
filler = st.text(alphabet="sk-proj-ant abc0123\n", max_size=40)


@given(
    parts=st.lists(st.tuples(filler, st.sampled_from([OPENAI, ANTHROPIC, OPENAI[:-1], ""]))),
    points=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
)
def test_the_streamed_pieces_never_spell_a_key_and_add_up_to_the_masked_whole(
    parts: list[tuple[str, str]], points: list[int]
) -> None:
    whole = "".join(a + b for a, b in parts)
    m = masker()
    streamed = []
    for piece in cut(whole, points):
        out = m.delta(Delta(text=piece)).text
        held = m._text.held if m._text is not None else ""
        # never more held than a run of a key could be (twice its longest spelling)
        assert len(held) <= 2 * m._env.forms.reach + len(OPENAI)  # type: ignore[union-attr]
        streamed.append(out)
    rest = m.rest()
    streamed.append(rest.text if rest is not None else "")
    joined = "".join(streamed)
    masked = masker().result(
        ChatResult(
            text=whole, usage=Usage(tokens_in=1, tokens_out=1), finish_reason="stop", model="m"
        )
    )
    # the pieces add up to the masked whole: each key masked, and every run of one (a
    # key cut short) besides, however the provider cut them
    assert joined == masked.text
    for text in (joined, masked.text):
        assert OPENAI not in text and ANTHROPIC not in text
        assert not _runs_of_keys(text)
    assert masked.secrets_masked >= whole.count(OPENAI) + whole.count(ANTHROPIC)


def _runs_of_keys(text: str) -> list[str]:
    left = text.lower()
    return [
        key[i : i + FOUND_FROM]
        for key in (OPENAI, ANTHROPIC)
        for i in range(len(key) - FOUND_FROM + 1)
        if key[i : i + FOUND_FROM].lower() in left
    ]


@pytest.mark.parametrize(
    "form",
    [
        OPENAI.upper(),
        "".join(f"%{b:02x}" for b in OPENAI.encode()),
        "".join(f"\\u{ord(c):04x}" for c in OPENAI),
        base64.b64encode(f"user:{OPENAI}".encode()).decode(),
    ],
    ids=["upper", "percent", "unicode-escape", "basic-auth"],
)
@pytest.mark.parametrize("size", [1, 4, 7])
def test_a_key_streamed_back_in_another_form_never_reaches_the_client(form: str, size: int) -> None:
    """A provider's error echoing the key upper-cased, escaped or in base64, streamed in
    small pieces: no piece passed on, nor what they add up to, holds a run of it."""
    whole = f"error: invalid key {form} (check it)\n"
    m = masker()
    streamed = [m.delta(Delta(text=whole[i : i + size])).text for i in range(0, len(whole), size)]
    rest = m.rest()
    joined = "".join(streamed) + (rest.text if rest is not None else "")
    assert joined.startswith("error: invalid key ") and joined.endswith(" (check it)\n")
    assert REDACTED in joined
    assert form[4:16] not in joined and form[-16:-4] not in joined
    if form == OPENAI.upper():
        assert not _runs_of_keys(joined)


def test_reasoning_and_each_tool_calls_arguments_are_masked_apart() -> None:
    m = masker()
    args = f'{{"token": "{OPENAI}"}}'
    thought = f"{ANTHROPIC} then sk-"  # ends as a key would begin: held to the end
    out: dict[int, str] = {0: "", 1: ""}
    reasoning = ""
    for i in range(0, len(args), 7):
        d = m.delta(
            Delta(
                reasoning=thought[i : i + 7],
                tool_calls=[
                    ToolCallDelta(index=0, arguments=args[i : i + 7]),
                    ToolCallDelta(index=1, arguments="{}"[i : i + 7]),
                ],
            )
        )
        reasoning += d.reasoning
        for c in d.tool_calls:
            out[c.index] += c.arguments
    rest = m.rest()
    assert rest is not None
    reasoning += rest.reasoning
    for c in rest.tool_calls:
        out[c.index] += c.arguments
    assert out == {0: f'{{"token": "{REDACTED}"}}', 1: "{}"}
    assert reasoning == f"{REDACTED} then sk-"
    result = masker().result(
        ChatResult(
            text="done",
            reasoning=thought,
            tool_calls=[ToolCall(id="c1", name="f", arguments=args)],
            usage=Usage(tokens_in=1, tokens_out=1),
            finish_reason="tool_calls",
            model="m",
        )
    )
    assert result.tool_calls[0].arguments == out[0] and result.reasoning == reasoning
    assert result.secrets_masked == 2


def test_a_clean_reply_is_passed_on_as_it_came_and_no_keys_means_no_masker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    m = masker()
    delta = Delta(text="the loop stops one short.\n")
    assert m.delta(delta) is delta
    # a piece that ends in a word may go on as a key's run does: held to the next one
    assert m.delta(Delta(text="one short")).text == "one "
    assert m.delta(Delta(text=".\n")).text == "short.\n"
    result = ChatResult(
        text="ok", usage=Usage(tokens_in=1, tokens_out=1), finish_reason="stop", model="m"
    )
    assert m.result(result) is result
    # a code sample's made-up key is not the environment's: it stays as the model wrote it
    sample = Delta(text='client = OpenAI(api_key="sk-test-0000000000000000000000")\n')
    assert m.delta(sample).text == sample.text
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    assert ReplyMasker.for_environment() is None
