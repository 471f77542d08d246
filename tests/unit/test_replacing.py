"""app/replacing.py: a file the user names is replaced whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.replacing import replacing


def test_a_clean_write_replaces_the_file_and_keeps_its_permissions(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    target.chmod(0o600)
    with replacing(target) as tmp:
        assert tmp != target and tmp.parent == target.parent
        tmp.write_text("new\n")
        assert target.read_text() == "old\n"  # untouched until the end
    assert target.read_text() == "new\n"
    assert target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_a_new_file_gets_the_umask_mode(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        with replacing(tmp_path / "new.jsonl") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "new.jsonl").stat().st_mode & 0o777 == 0o640


def test_an_error_leaves_the_file_as_it_was_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), replacing(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("a tampered line")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_a_file_left_under_the_temp_name_is_never_written_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.replacing

    monkeypatch.setattr(app.replacing.secrets, "token_hex", lambda n: "guessed0")
    target = tmp_path / "out.jsonl"
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / f".out.jsonl.{os.getpid()}.guessed0.tmp").symlink_to(victim)
    with pytest.raises(FileExistsError), replacing(target):
        pass
    assert victim.read_text() == "keep"


def test_a_target_that_is_not_a_regular_file_is_written_in_place(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with replacing(fifo) as where:
        assert where == fifo
    with replacing(Path("/dev/null")) as where:
        assert where == Path("/dev/null")


def test_two_writes_of_one_file_in_one_process_do_not_meet(tmp_path: Path) -> None:
    """The temporary file was named by the process alone: a second write of the same
    file in the same process (two ACP sessions building one Stage0 snapshot) met the
    first's, and one of them failed (O_EXCL here; a lost rename in the snapshot)."""
    target = tmp_path / "index.npz"
    with replacing(target) as first, replacing(target) as second:
        assert first != second
        first.write_text("one")
        second.write_text("two")
    assert target.read_text() == "one"  # (the outer one ends last)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.npz"]
