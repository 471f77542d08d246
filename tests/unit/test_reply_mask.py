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
    assert _one_mark(joined) == _one_mark(masked.text)
    for text in (joined, masked.text):
        assert OPENAI not in text and ANTHROPIC not in text
        assert not _runs_of_keys(text)
    assert masked.secrets_masked >= whole.count(OPENAI) + whole.count(ANTHROPIC)


def _one_mark(text: str) -> str:
    """Marks side by side as one: runs glued end to end are masked one by one as they
    stream (a mark each), and as one in the whole reply."""
    while REDACTED * 2 in text:
        text = text.replace(REDACTED * 2, REDACTED)
    return text


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
    rest = m.rest() or Delta()  # (the thinking's held end went when it stopped)
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


def _streamed(m: ReplyMasker, deltas: list[Delta]) -> list[Delta]:
    out = [m.delta(d) for d in deltas]
    rest = m.rest()
    return [*out, *([rest] if rest is not None else [])]


def test_a_run_across_a_cut_a_short_password_made_is_held_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A short password beginning at a piece's end cut the text inside a run of a key's
    other form, and the run's first part passed unlooked-at (a review's fuzz)."""
    key = "sk-proj-Ab3dE5gH7jK9mN1pQ3sT"
    only_keys(monkeypatch, OPENAI_API_KEY=key, APP_PASSWORD="H!hunter2")
    run = key.upper()[4:16]  # one whole window of the key, upper-cased: ROJ-AB3DE5GH
    whole = f"key: {run}!h rest"  # "H!h" begins the password: the exact hold cuts there
    cut = whole.index("!h") + 2
    pieces = [
        d.text for d in _streamed(masker(), [Delta(text=whole[:cut]), Delta(text=whole[cut:])])
    ]
    assert "".join(pieces) == f"key: {REDACTED}!h rest"


def test_a_key_repeated_end_to_end_is_passed_on_masked_as_it_comes() -> None:
    """Runs glued end to end were joined into one span held whole to the stream's end,
    each piece scanning all of it again (84,000 characters: 109 s, nothing shown)."""
    m = masker()
    form = OPENAI.upper()
    text = form * 200
    longest = 0
    shown = 0
    for i in range(0, len(text), 4):
        shown += len(m.delta(Delta(text=text[i : i + 4])).text)
        assert m._text is not None
        longest = max(longest, len(m._text.held))
    assert longest <= 3 * m._env.forms.reach  # type: ignore[union-attr]
    assert shown > 0  # masked pieces reached the client before the end


@pytest.mark.parametrize("between", ["call", "reasoning", "text"])
def test_a_part_that_goes_on_after_another_never_gives_a_secret_whole(
    monkeypatch: pytest.MonkeyPatch, between: str
) -> None:
    """A part's held end was passed on when another part came, and the part then went on
    (text after a call, reasoning after text): a client that joins the part got the
    password whole from two pieces each masked alone (a review's fuzz)."""
    only_keys(monkeypatch, OPENAI_API_KEY=OPENAI, APP_PASSWORD="Tr0ub4dor&3")
    m = masker()
    part = "reasoning" if between == "text" else "text"
    other = {
        "call": Delta(tool_calls=[ToolCallDelta(index=0, id="c", name="f", arguments="{}")]),
        "reasoning": Delta(reasoning="thinking"),
        "text": Delta(text="an answer"),
    }[between]
    first = Delta(**{part: "the password is Tr0ub"})
    second = Delta(**{part: f"4dor&3 and the key {OPENAI.upper()[:10]}"})
    third = Delta(**{part: f"{OPENAI.upper()[10:]} done"})
    out = _streamed(m, [first, other, second, other, third])
    joined = "".join(getattr(d, part) for d in out)
    assert "Tr0ub4dor&3" not in joined and "4dor&3" not in joined
    assert not _runs_of_keys(joined), joined
    assert joined.startswith("the password is ") and joined.endswith(" done")
