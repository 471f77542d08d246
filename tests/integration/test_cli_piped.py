"""The CLI's text into a pipe or a file: a line stays one line (Rich folded every line at
80 columns when its stream was not a terminal, so ``| grep`` found half a trigger's text),
and a terminal still gets lines folded to its width."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

from app.cli.safe_console import piped_console

_EXPLAIN = ("route", "explain", "--role", "architect", "--signal", "confidence=0.5")


#: what would size or colour the output otherwise (a developer's shell may set them)
_SIZING = ("COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")


def _env(**more: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k not in _SIZING}, **more}


def _piped(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        stdin=subprocess.DEVNULL,  # (Rich reads a terminal's width from stdin too)
        capture_output=True,
        text=True,
        env=_env(**env),
        timeout=60,
        check=False,
    )


def test_route_explain_into_a_pipe_keeps_each_line_whole() -> None:
    done = _piped(*_EXPLAIN)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    trigger = next(line for line in lines if "ARCHITECT_LOW_CONFIDENCE" in line)
    # the code, its text and the trigger's id, on the one line grep finds
    assert "confidence 0.5 < 0.75" in trigger and "(architect_low_confidence)" in trigger
    assert len(trigger) > 80
    budget = next(line for line in lines if line.lstrip().startswith("budget"))
    assert budget.rstrip().endswith("(the caps less the ledger, a new session)")


def test_a_table_into_a_pipe_keeps_each_cell_whole() -> None:
    """At 80 columns `policy show | cat` read ``qwen3-14 b`` and ``gpt-5.1-h igh``: a model
    id copied from it was wrong. Into a pipe a table is as wide as its cells; COLUMNS still
    sets the width when given."""
    done = _piped("policy", "show")
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("│ Architect")]
    assert len(rows) == 1, done.stdout[:2000]  # one line per row: the role's whole row
    assert "qwen3-14b / ministral-3-14b" in rows[0]
    assert "gpt-5.1-high → deepseek-reasoner" in rows[0]
    narrow = _piped("policy", "show", COLUMNS="80").stdout.splitlines()
    drawn = [line for line in narrow if line[:1] in "┏┃┡│└"]
    assert drawn and max(len(line) for line in drawn) <= 80


def test_route_explain_names_the_prompt_its_cost_assumes() -> None:
    assumed = next(line for line in _piped(*_EXPLAIN).stdout.splitlines() if "cost " in line)
    # gpt-5.1-high reasons at high effort: its thinking is priced as output, and said
    assert "(2000 assumed in / 4096 out + 16384 reasoning)" in assumed
    given = _piped(*_EXPLAIN, "--signal", "context_estimate=5000").stdout
    assert "(5000 in / 4096 out + 16384 reasoning)" in given


def test_a_terminal_still_folds_at_its_width() -> None:
    """Under a pseudo-terminal 60 columns wide, the same command folds its long lines."""
    main_fd, child_fd = pty.openpty()
    fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 60, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", *_EXPLAIN],
        stdin=child_fd,
        stdout=child_fd,
        stderr=subprocess.PIPE,
        env=_env(TERM="xterm", NO_COLOR="1"),
    )
    os.close(child_fd)
    chunks = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main_fd], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(main_fd, 65536)
            except OSError:  # EIO: the child closed its side
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(main_fd)
        if proc.poll() is None and time.monotonic() >= deadline:
            proc.kill()
    assert proc.wait(timeout=60) == 0
    text = b"".join(chunks).decode()
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text.replace("\r", ""))
    lines = [line for line in plain.splitlines() if line.strip()]
    assert max(len(line) for line in lines) <= 60
    assert not any("(architect_low_confidence)" in line and "ARCHITECT" in line for line in lines)


def test_a_pipe_keeps_its_lines_whole_even_under_force_color(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """FORCE_COLOR (colours into ``less -R``) makes Rich call any stream a terminal: the
    stream's own isatty() decides the folding."""
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert piped_console().soft_wrap is True
    done = _piped(*_EXPLAIN, FORCE_COLOR="1")
    trigger = next(line for line in done.stdout.splitlines() if "ARCHITECT_LOW" in line)
    assert "(architect_low_confidence)" in trigger


@pytest.mark.parametrize(
    "argv", [["policy", "show"], ["budget", "--json"], ["policy", "check", "--json"], ["--version"]]
)
@pytest.mark.parametrize("where", ["closed", "full"])
def test_an_output_that_cannot_be_written_is_one_line_and_exit_2(
    argv: list[str], where: str
) -> None:
    """`budget --json >&-` ended in an AttributeError traceback and `policy show` in the
    same place printed nowhere and exited 0; `> /dev/full` ended in an OSError traceback
    (an audit). Said as `audit export` says it."""
    if where == "full" and not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    with open("/dev/full" if where == "full" else os.devnull, "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "app", *argv],
            stdin=subprocess.DEVNULL,
            stdout=full if where == "full" else None,
            stderr=subprocess.PIPE,
            text=True,
            # buffered as a file or a pipe is by default: a small output fails only at
            # Python's own flush at exit (with PYTHONUNBUFFERED set, at each write)
            env={k: v for k, v in _env().items() if k != "PYTHONUNBUFFERED"},
            timeout=60,
            check=False,
            # a closed descriptor 1, as `>&-` leaves it
            preexec_fn=(lambda: os.close(1)) if where == "closed" else None,
        )
    why = "No space left on device" if where == "full" else "it is closed"
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"switchyard: cannot write the standard output: {why}\n"
