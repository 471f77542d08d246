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
        out = _text(m.deltas(Delta(text=piece)))
        held = m._text.held if m._text is not None else ""
        # never more held than a run of a key could be (twice its longest spelling)
        assert len(held) <= 2 * m._env.forms.reach + len(OPENAI)  # type: ignore[union-attr]
        streamed.append(out)
    streamed.append(_text(m.rest()))
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
    streamed = [
        _text(m.deltas(Delta(text=whole[i : i + size]))) for i in range(0, len(whole), size)
    ]
    joined = "".join(streamed) + _text(m.rest())
    assert joined.startswith("error: invalid key ") and joined.endswith(" (check it)\n")
    assert REDACTED in joined
    assert form[4:16] not in joined and form[-16:-4] not in joined
    if form == OPENAI.upper():
        assert not _runs_of_keys(joined)


def test_reasoning_and_each_tool_calls_arguments_are_masked_apart() -> None:
    m = masker()
    args = f'{{"token": "{OPENAI}"}}'
    thought = f"{ANTHROPIC} then sk-"  # ends as a key would begin: held to the end
    passed: list[Delta] = []
    for i in range(0, len(args), 7):
        passed += m.deltas(
            Delta(
                reasoning=thought[i : i + 7],
                tool_calls=[
                    ToolCallDelta(index=0, arguments=args[i : i + 7]),
                    ToolCallDelta(index=1, arguments="{}"[i : i + 7]),
                ],
            )
        )
    passed += m.rest()
    out: dict[int, str] = {0: "", 1: ""}
    reasoning = ""
    for d in passed:
        reasoning += d.reasoning
        for c in d.tool_calls:
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
    [passed] = m.deltas(delta)
    assert passed is delta
    # a piece that ends in a word may go on as a key's run does: held to the next one
    assert _text(m.deltas(Delta(text="one short"))) == "one "
    assert _text(m.deltas(Delta(text=".\n"))) == "short.\n"
    result = ChatResult(
        text="ok", usage=Usage(tokens_in=1, tokens_out=1), finish_reason="stop", model="m"
    )
    assert m.result(result) is result
    # a code sample's made-up key is not the environment's: it stays as the model wrote it
    sample = Delta(text='client = OpenAI(api_key="sk-test-0000000000000000000000")\n')
    assert _text(m.deltas(sample)) == sample.text
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    assert ReplyMasker.for_environment() is None


def _streamed(m: ReplyMasker, deltas: list[Delta]) -> list[Delta]:
    return [*(out for d in deltas for out in m.deltas(d)), *m.rest()]


def _text(deltas: list[Delta]) -> str:
    return "".join(d.text for d in deltas)


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
        shown += len(_text(m.deltas(Delta(text=text[i : i + 4]))))
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


def _in_order(deltas: list[Delta]) -> list[tuple[str, str]]:
    """The parts as a client reads them: a delta's reasoning, its text, then its calls."""
    said: list[tuple[str, str]] = []
    for d in deltas:
        said += [("reasoning", d.reasoning)] if d.reasoning else []
        said += [("text", d.text)] if d.text else []
        said += [(f"call {c.index}", c.arguments) for c in d.tool_calls]
    return said


def _joined(said: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Each run of one part's pieces as one."""
    runs: list[tuple[str, str]] = []
    for part, piece in said:
        if runs and runs[-1][0] == part:
            runs[-1] = (part, runs[-1][1] + piece)
        else:
            runs.append((part, piece))
    return runs


CALL = Delta(tool_calls=[ToolCallDelta(index=0, id="c", name="f", arguments='{"a": 1}')])


@pytest.mark.parametrize(
    ("pieces", "text"),
    [
        (["calling ", "a ", "tool"], "calling a tool"),
        # a key cut across the pieces right before the call, as it is and upper-cased
        ([f"the key {OPENAI[:9]}", f"{OPENAI[9:]} in parser"], f"the key {REDACTED} in parser"),
        ([f"the key {OPENAI.upper()[:13]}", OPENAI.upper()[13:]], f"the key {REDACTED}"),
    ],
    ids=["words", "key", "upper-cased-key"],
)
def test_the_texts_held_end_is_passed_on_before_the_call(pieces: list[str], text: str) -> None:
    """The text's last word was held to the stream's end, after the call: a text block
    after the tool_use (Claude Code), a message after the function_call (Codex), a user
    audit. A key cut right before the call is masked whole all the same."""
    said = _in_order(_streamed(masker(), [*(Delta(text=p) for p in pieces), CALL]))
    assert _joined(said) == [("text", text), ("call 0", '{"a": 1}')]


def test_the_thinkings_held_end_is_passed_on_before_the_text() -> None:
    deltas = [Delta(reasoning="the bound stops one "), Delta(reasoning="short")]
    said = _in_order(_streamed(masker(), [*deltas, Delta(text="Use len.\n")]))
    assert _joined(said) == [("reasoning", "the bound stops one short"), ("text", "Use len.\n")]


def test_a_calls_held_arguments_are_passed_on_before_what_comes_next() -> None:
    """A call's arguments ending in a word (a freeform tool's input) held to the
    stream's end: past the next call's block, or the text after, where a Messages
    client never reads them."""

    def call(index: int, arguments: str) -> Delta:
        return Delta(tool_calls=[ToolCallDelta(index=index, arguments=arguments)])

    deltas = [call(0, "ls pars"), call(0, "er"), call(1, f"cat {OPENAI[:12]}")]
    deltas += [call(1, f"{OPENAI[12:]} now"), Delta(text="done")]
    said = _in_order(_streamed(masker(), deltas))
    assert _joined(said) == [
        ("call 0", "ls parser"),
        ("call 1", f"cat {REDACTED} now"),
        ("text", "done"),
    ]


def test_a_keys_beginning_at_the_texts_end_waits_for_the_text_to_go_on() -> None:
    """Passed on before the call, the first letters of a key the text then went on
    with would reach the client, the rest masked: a key's beginning of three characters
    or more (no word ends so) is held on, and the key is masked whole. The call's own
    held end goes before the text."""
    call = Delta(tool_calls=[ToolCallDelta(index=0, id="c", name="f", arguments="ls pars")])
    deltas = [Delta(text=f"the key {OPENAI[:10]}"), call, Delta(text=f"{OPENAI[10:]} ok")]
    assert _joined(_in_order(_streamed(masker(), deltas))) == [
        ("text", "the key "),
        ("call 0", "ls pars"),
        ("text", f"{REDACTED} ok"),
    ]


@given(
    parts=st.permutations(["reasoning", "text", 0, 1]).flatmap(
        lambda order: st.lists(
            st.tuples(filler, st.sampled_from([OPENAI, OPENAI.upper(), ANTHROPIC, ""])),
            min_size=len(order),
            max_size=len(order),
        ).map(lambda said: list(zip(order, said, strict=True)))
    ),
    points=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_parts_one_after_another_come_whole_in_order_and_masked(
    parts: list[tuple[str | int, tuple[str, str]]], points: list[int]
) -> None:
    """The thinking, the text and each call, one after another, each ending in a word
    (held: it may go on as a key's run does), cut anywhere: each comes whole, in its
    place, as the whole reply masks it."""
    m = masker()
    deltas = []
    wholes: dict[str, str] = {}
    for part, (before, key) in parts:
        whole = f"{before}{key} then parser"
        name = part if isinstance(part, str) else f"call {part}"
        wholes[name] = m._whole(whole)
        for piece in cut(whole, points):
            if isinstance(part, int):
                deltas.append(Delta(tool_calls=[ToolCallDelta(index=part, arguments=piece)]))
            else:
                deltas.append(Delta(**{part: piece}))
    said = _joined(_in_order(_streamed(masker(), deltas)))
    assert [name for name, _ in said] == list(wholes)
    for name, text in said:
        assert _one_mark(text) == _one_mark(wholes[name])
        assert OPENAI not in text and ANTHROPIC not in text and not _runs_of_keys(text)
