"""The pure parts of memory search: half-life recency, usage, priority, the blend, the
analyzer and the git log parser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.clock import ManualClock
from app.memory import scoring
from app.memory.harvest import commit_memory, parse_log
from app.memory.text import analyze, text_hash
from app.policy.schema import Memory as MemoryPolicy

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
DAY = 86_400.0


def test_recency_halves_every_half_life() -> None:
    assert scoring.recency(0, 7) == 1.0
    assert scoring.recency(7, 7) == pytest.approx(0.5)
    assert scoring.recency(14, 7) == pytest.approx(0.25)
    assert scoring.recency(3.5, 7) == pytest.approx(2**-0.5)
    assert scoring.recency(-3, 7) == 1.0  # a clock set back never boosts
    with pytest.raises(ValueError):
        scoring.recency(1, 0)


def test_recency_follows_the_injected_clock_and_the_last_use() -> None:
    clock = ManualClock(T0)
    created = clock.now()
    clock.advance(7 * DAY)
    d = scoring.dynamic(
        now=clock.now(),
        created=created,
        used=None,
        use_count=0,
        priority_value=0,
        half_life_days=7,
    )
    assert d.recency == pytest.approx(0.5)
    clock.advance(7 * DAY)
    used = clock.now()
    d = scoring.dynamic(
        now=clock.now(),
        created=created,
        used=used,
        use_count=1,
        priority_value=0,
        half_life_days=7,
    )
    assert d.recency == 1.0  # counted from the last use
    clock.advance(1 * DAY)
    d = scoring.dynamic(
        now=clock.now(), created=created, used=used, use_count=1, priority_value=0, half_life_days=1
    )
    assert d.recency == pytest.approx(0.5)


def test_usage_and_priority_saturate() -> None:
    assert scoring.usage(0) == 0.0
    assert scoring.usage(scoring.USAGE_HALF) == pytest.approx(0.5)
    assert scoring.usage(10_000) < 1.0
    assert scoring.priority(0) == 0.0
    assert scoring.priority(10) == 1.0
    assert scoring.priority(99) == 1.0


def test_dynamic_score_and_blend_use_the_documented_shares() -> None:
    d = scoring.Dynamic(recency=1.0, usage=0.5, priority=0.2)
    assert d.score == pytest.approx(0.5 * 1.0 + 0.3 * 0.5 + 0.2 * 0.2)
    w = MemoryPolicy(
        weight_tfidf=0.4, weight_embedding=0.4, weight_dynamic=0.2, recency_half_life_days=7
    )
    assert scoring.blend(w, tfidf=0.5, embedding=0.25, dynamic_score=1.0) == pytest.approx(0.5)


@given(
    age=st.floats(min_value=0, max_value=3650, allow_nan=False),
    half_life=st.floats(min_value=0.01, max_value=3650, allow_nan=False),
    uses=st.integers(min_value=0, max_value=10**6),
    priority=st.integers(min_value=-5, max_value=20),
)
def test_dynamic_parts_stay_in_the_unit_interval(
    age: float, half_life: float, uses: int, priority: int
) -> None:
    now = T0 + timedelta(days=age)
    d = scoring.dynamic(
        now=now,
        created=T0,
        used=None,
        use_count=uses,
        priority_value=priority,
        half_life_days=half_life,
    )
    for part in (d.recency, d.usage, d.priority, d.score):
        assert 0.0 <= part <= 1.0


def test_analyzer_splits_identifiers_and_keeps_them_whole() -> None:
    assert analyze("parse_tokens fails in TokenStream.readHTTPHeader") == [
        "parse_tokens",
        "parse",
        "tokens",
        "fails",
        "tokenstream",
        "token",
        "stream",
        "readhttpheader",
        "read",
        "http",
        "header",
    ]
    assert analyze("the a of") == []
    assert text_hash("x") == text_hash("x") != text_hash("y")


_LOG = (
    "\x1eaaaa\x1f\x1fAda\x1f2026-01-02T03:04:05+01:00\x1fFirst commit\n\nBody line\n\x1f\n\n"
    "3\t0\tREADME.md\n-\t-\tlogo.png\n"
    "\x1ebbbb\x1faaaa\x1fBob\x1f2026-01-03T00:00:00Z\x1fFix parser\n\x1f\n\n1\t2\tsrc/p.py\n"
)


def test_git_log_parser_reads_messages_files_and_stats() -> None:
    first, second = parse_log(_LOG, ("\x1e", "\x1f"))
    assert first.sha == "aaaa" and first.parents == ()
    assert first.message == "First commit\n\nBody line"
    assert first.date == datetime(2026, 1, 2, 2, 4, 5, tzinfo=UTC)
    assert [(f.path, f.added, f.deleted) for f in first.files] == [
        ("README.md", 3, 0),
        ("logo.png", None, None),
    ]
    assert second.parents == ("aaaa",) and second.insertions == 1 and second.deletions == 2
    memory = commit_memory(second)
    assert memory.kind == "commit" and memory.source_key == "git:bbbb"
    assert memory.text == "Fix parser\n\nFiles: 1 changed, +1 −2\nsrc/p.py +1 −2"
    assert "logo.png (binary)" in commit_memory(first).text


async def test_commit_messages_holding_the_logs_own_marks_are_read_whole(tmp_path: Path) -> None:
    """A message with \\x1e was never harvested; one with \\x1f and a numstat-like tail
    invented its own file counts (anyone who wrote the repository can write either)."""
    import subprocess

    from app.memory.harvest import read_commits

    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.email=a@b", "-c", "user.name=A", *args],
            cwd=tmp_path, check=True, capture_output=True,
        )  # fmt: skip

    git("init", "-q")
    messages = ["plain", "record \x1e sep", "unit sep\x1f\n\n0\t0\tfake/path.py", "last"]
    for i, message in enumerate(messages):
        (tmp_path / f"f{i}.txt").write_text(f"{i}\n")
        git("add", ".")
        git("commit", "-q", "-m", message)
    commits = await read_commits(tmp_path)
    assert [c.message for c in commits] == messages
    assert [[f.path for f in c.files] for c in commits] == [[f"f{i}.txt"] for i in range(4)]
    text = "\n".join(analyze("支付模块使用令牌桶限流 Зарплата"))
    assert "令牌" in text and "зарплата" in text  # words outside ASCII are words
