"""``switchyard audit tail|verify|export`` through the real entry point."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from app.audit import AuditLog, verify_lines
from app.cli.main import main
from app.clock import ManualClock
from app.config import load_settings


def _populate() -> Path:
    db = load_settings().audit_db

    async def run() -> None:
        clock = ManualClock()
        async with AuditLog.open(db, clock=clock, policy_version="1.0.0") as log:
            await log.append(
                "route", session="s1", run="r1", role="architect", from_="qwen14b", to="qwen32b",
                reason_codes=["default"], detail="planned",
            )  # fmt: skip
            clock.advance(60)
            await log.append(
                "runtime_fallback", session="s1", run="r1", role="implementer", from_="vLLM",
                to="llama.cpp", reason_codes=["unhealthy"], detail="[bold]not markup[/]",
            )  # fmt: skip
            await log.append("escalation", session="s2", run="r2", role="judge", to="deepseek")

    asyncio.run(run())
    return db


def test_verify_on_a_new_data_dir(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify"]) == 0
    assert "audit chain ok: 0 lines" in capsys.readouterr().out
    assert load_settings().audit_db.exists()


def test_verify_ok_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    _populate()
    assert main(["audit", "verify"]) == 0
    assert "audit chain ok: 3 lines" in capsys.readouterr().out
    assert main(["audit", "verify", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["lines_checked"] == 3
    assert report["first_bad_seq"] is None and len(report["head_hash"]) == 64


def test_tail_renders_lines(capsys: pytest.CaptureFixture[str]) -> None:
    _populate()
    assert main(["audit", "tail"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3
    assert "2026-01-01 12:00:00" in out[0] and "route" in out[0]
    assert "qwen14b → qwen32b" in out[0] and "[default]" in out[0]
    assert "[bold]not markup[/]" in out[1]  # details are text, never rich markup
    assert "judge" in out[2] and "deepseek" in out[2]


def test_tail_filters_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    _populate()
    assert main(["audit", "tail", "-n", "1", "--session", "s1", "--json"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    line = json.loads(out[0])
    assert line["seq"] == 2 and line["from"] == "vLLM" and line["kind"] == "runtime_fallback"
    assert main(["audit", "tail", "--run", "r2", "--json"]) == 0
    assert [json.loads(x)["seq"] for x in capsys.readouterr().out.splitlines()] == [3]


def test_export_to_stdout_and_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _populate()
    assert main(["audit", "export"]) == 0
    full = capsys.readouterr().out.splitlines()
    assert len(full) == 3 and verify_lines(full).ok

    out = tmp_path / "run.jsonl"
    assert main(["audit", "export", "-o", str(out), "--run", "r1"]) == 0
    assert "exported 2 audit lines" in capsys.readouterr().err
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(x)["seq"] for x in lines] == [1, 2]
    assert verify_lines(lines, chain=False).ok

    assert main(["audit", "export", "--session", "s2"]) == 0
    assert [json.loads(x)["seq"] for x in capsys.readouterr().out.splitlines()] == [3]


def test_export_to_an_unwritable_path_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "export", "-o", str(tmp_path / "no" / "such" / "dir.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("switchyard: cannot write") and "Traceback" not in err


@pytest.mark.parametrize("name", ["audit.sqlite3", "audit.sqlite3-spool", "ledger.sqlite3"])
def test_export_over_switchyards_own_files_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """``-o`` naming the audit database was renamed over it: every audit command after
    said "database disk image is malformed" (a CLI audit). A link to it is the same."""
    _populate()
    data = load_settings().data_dir
    link = tmp_path / "export.jsonl"
    link.symlink_to(data / name)
    for target in (data / name, link):
        before = (data / name).read_bytes() if (data / name).exists() else None
        assert main(["audit", "export", "-o", str(target)]) == 2
        err = capsys.readouterr().err
        assert f"that is Switchyard's own {name}" in err and "Traceback" not in err
        assert ((data / name).read_bytes() if (data / name).exists() else None) == before
    assert main(["audit", "verify"]) == 0
    assert "audit chain ok: 3 lines" in capsys.readouterr().out


def test_bad_arguments_are_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["audit", "tail", "-n", "many"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["audit"])
    assert exc.value.code == 2


@pytest.mark.parametrize("n", ["1", "0"])
def test_tail_follow_prints_new_lines(tmp_path: Path, n: str) -> None:
    """-n 0 --follow: only the lines to come (it was refused as a count out of range)."""
    db = _populate()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli.main", "audit", "tail", "-n", n, "--follow", "--json",
         "--interval", "0.02"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    watchdog = threading.Timer(30, proc.kill)  # a hung follow fails the test, not the suite
    watchdog.start()
    try:
        assert proc.stdout is not None
        if n == "1":
            assert json.loads(proc.stdout.readline())["seq"] == 3
        stop = threading.Event()

        async def more() -> None:
            # -n 0 prints nothing until a line comes: keep adding until the follower,
            # started at its own pace, has shown one
            async with AuditLog.open(db) as log:
                while True:
                    await log.append("approval", session="s2", detail="y pressed")
                    if n == "1" or stop.wait(0.05):
                        return

        writer = threading.Thread(target=asyncio.run, args=(more(),))
        writer.start()
        line = json.loads(proc.stdout.readline())
        stop.set()
        writer.join()
        assert line["kind"] == "approval"  # the three lines on file were not shown
        assert line["seq"] == 4 if n == "1" else line["seq"] >= 4
    finally:
        watchdog.cancel()
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize(
    "command",
    ["audit export", "audit tail -n 400"],
    ids=["export (plain writes)", "tail (Rich's console)"],
)
def test_a_reader_that_stops_early_ends_the_command_quietly(command: str) -> None:
    """``switchyard audit export | head``: the reader goes away and the command ends with
    no message and 141 (128 + SIGPIPE), as a C filter dies with, whichever way it prints.
    Export said "cannot write None: Broken pipe", as if a file had failed; text commands
    (through Rich) ended 1 and their --json twins 0; and 0 would mask a failing verdict
    (``spec lint bad.md | head`` passing a CI check)."""
    db = load_settings().audit_db

    async def many() -> None:
        async with AuditLog.open(db, policy_version="1.0.0") as log:
            for i in range(400):  # ~150 KB: past a pipe's buffer, so writes meet the EPIPE
                await log.append(
                    "call", session="s1", role="tutor", detail=f"call {i} " + "x" * 200
                )

    asyncio.run(many())
    shell = f"{sys.executable} -m app.cli.main {command} | head -c 100"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", shell],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
        check=False,
    )
    assert len(done.stdout) == 100
    assert done.stderr == ""
    assert done.returncode == 141


def test_a_file_that_is_not_a_database_is_one_clear_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = load_settings().audit_db
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not sqlite" * 100)
    assert main(["audit", "verify"]) == 2  # what it was given (the ledger says 2)
    err = capsys.readouterr().err
    assert err.startswith("switchyard: cannot open the audit log") and "Traceback" not in err


def test_tail_shows_control_characters_instead_of_sending_them(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A detail is whatever a model, a test or a client wrote: an ESC in it began an
    # escape sequence on the reader's terminal (OSC 52 writes the clipboard).
    db = load_settings().audit_db

    async def run() -> None:
        async with AuditLog.open(db, clock=ManualClock(), policy_version="1.0.0") as log:
            await log.append(
                "run", session="s1", role="implementer",
                detail="edits did not land:\nedit 1\x1b[2J\x1b]52;c;eA==\x07 [/x]",
            )  # fmt: skip

    asyncio.run(run())
    monkeypatch.setenv("FORCE_COLOR", "1")  # styled, as on a terminal
    assert main(["audit", "tail"]) == 0
    out = capsys.readouterr().out
    # on one line (the detail's break shown as ⏎), its bell shown too
    assert "edits did not land:⏎edit 1␛[2J␛]52;c;eA==␇ [/x]" in out
    assert "\x1b[2J" not in out and "\x1b]52" not in out and "\x07" not in out
    assert "\x1b[" in out  # the console's own colours still pass


@pytest.mark.parametrize("n", ["-5", "99999999999999999999", "many"])
def test_a_tail_count_out_of_range_is_a_usage_error(
    n: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """-n -5 printed nothing and ended 0; a count past SQLite's integers was a traceback."""
    with pytest.raises(SystemExit) as info:
        main(["audit", "tail", "-n", n])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "-n" in err and "Traceback" not in err


def test_an_id_found_nowhere_is_one_line_and_exit_2_for_tail_and_export(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """tail and export with an unknown (or cut) id printed nothing at all and ended 0, as
    an empty log does; then ``tail --run nosuch`` ended 0 and ``export --run nosuch`` 1
    (a user audit). An id the log has no line of is an argument naming nothing: one
    line, exit 2 from both, as ``evidence show`` says of a run that is not there."""
    _populate()
    for argv, named in (
        (["audit", "tail", "--session", "s"], "--session s"),
        (["audit", "tail", "--run", "nosuch", "--json"], "--run nosuch"),
        (["audit", "export", "--run", "nosuch"], "--run nosuch"),
        (["audit", "export", "--session", "s1", "--run", "nosuch"], "--run nosuch"),
    ):
        assert main(argv) == 2, argv
        out, err = capsys.readouterr()
        assert out == "", argv  # (--json: no line, valid JSON lines)
        what = named.split()[0].removeprefix("--")
        assert err.splitlines() == [
            f"switchyard: {named}: no such {what} in the audit log (ids are matched whole)"
        ], argv
    assert main(["audit", "tail", "--session", "s1"]) == 0
    assert "no audit line matched" not in capsys.readouterr().err


def test_ids_that_are_there_but_never_together_match_nothing_said_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Both ids are in the log, never on one line: a view of nothing ends 0, an export of
    nothing 1, each saying so (no id is unknown)."""
    _populate()
    for argv, code in (
        (["audit", "tail", "--session", "s1", "--run", "r2"], 0),
        (["audit", "export", "--session", "s1", "--run", "r2"], 1),
    ):
        assert main(argv) == code, argv
        out, err = capsys.readouterr()
        assert out == ""
        assert "no audit line matched --session s1 --run r2 (ids are matched whole)" in err


def test_an_export_whose_filter_matches_nothing_leaves_the_file_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo in an id emptied the last export it was written over, and exited 0."""
    _populate()
    kept = tmp_path / "keep.jsonl"
    assert main(["audit", "export", "-o", str(kept), "--run", "r1"]) == 0
    before = kept.read_bytes()
    capsys.readouterr()
    assert main(["audit", "export", "-o", str(kept), "--run", "typo"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "switchyard: --run typo: no such run in the audit log (ids are matched whole); "
        f"{kept} left as it was"
    ]
    assert kept.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]  # no temporary file left
    fresh = tmp_path / "fresh.jsonl"
    assert main(["audit", "export", "-o", str(fresh), "--session", "nosuch"]) == 2
    assert f"{fresh} not written" in capsys.readouterr().err
    assert not fresh.exists()
    # ids that are there, never together: nothing to export, the file as it was (exit 1)
    assert main(["audit", "export", "-o", str(kept), "--session", "s1", "--run", "r2"]) == 1
    err = capsys.readouterr().err
    assert "no audit line matched --session s1 --run r2" in err and "left as it was" in err
    assert kept.read_bytes() == before


def test_export_refuses_a_line_that_is_no_audit_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It wrote ``{not json`` into the export and said "exported 3 audit lines", exit 0,
    where tail refuses the same line; the file named with -o is not left half-written."""
    db = _populate()
    with sqlite3.connect(db) as con:
        con.execute("DROP TRIGGER IF EXISTS audit_lines_no_update")
        con.execute("UPDATE audit_lines SET line = '{not json' WHERE seq = 2")
    target = tmp_path / "out.jsonl"
    assert main(["audit", "export", "-o", str(target)]) == 1
    assert "audit line 2 is unreadable" in capsys.readouterr().err
    assert not target.exists()
    assert main(["audit", "tail"]) == 1  # the same verdict as tail's


def test_a_key_typed_into_a_flag_or_an_id_is_not_said_back(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """argparse quoted the refused value whole, and a filter that matched nothing named
    its id: a key pasted there reached the terminal (a CLI audit)."""
    key = "sk-audit-OPENAI0123456789abcdefXYZ"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    with pytest.raises(SystemExit) as exc:
        main(["audit", "tail", "-n", key])
    assert exc.value.code == 2
    main(["audit", "export", "--session", key])
    err = capsys.readouterr().err
    assert key not in err and err.count("[REDACTED]") == 2, err
