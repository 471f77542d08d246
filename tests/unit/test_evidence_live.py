"""A run's liveness marker (app/evidence/live.py): held from the bundle's creation to its
seal, let go once, never waited on."""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

import pytest

from app.evidence import bundle as bundle_mod
from app.evidence.bundle import EvidenceBundle
from app.evidence.errors import EvidenceError
from app.evidence.live import hold, marker, running


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    return repo


def test_a_fifo_planted_as_a_marker_is_never_waited_on(tmp_path: Path) -> None:
    """A repository shipping a FIFO as a run's marker froze ``evidence show`` and the
    evidence screen: opening it waited for a writer (a review)."""
    bundle = _repo(tmp_path) / ".switchyard" / "runs" / "20260101-000000-aaaaaa"
    bundle.mkdir(parents=True)
    marker(bundle).parent.mkdir()
    os.mkfifo(marker(bundle))
    assert running(bundle) is False
    assert hold(bundle) is None


def test_a_bundle_that_could_not_be_made_lets_go_of_its_lock_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its descriptor was closed at the failure and again when the object went: by then
    the number could be another file's (a review)."""
    repo = _repo(tmp_path)

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bundle_mod, "atomic_write", full)
    with pytest.raises(EvidenceError):
        EvidenceBundle.create(repo, "20260101-000000-aaaaaa")
    other = os.open(tmp_path / "other", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        import gc

        gc.collect()  # (the half-made bundle goes: its finalizer has run already)
        os.write(other, b"still mine")
    finally:
        os.close(other)


def test_a_bundle_given_up_unsealed_is_not_running(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    made = EvidenceBundle.create(repo, "20260101-000000-aaaaaa")
    assert running(made.path)
    made.release()
    assert not running(made.path) and not marker(made.path).exists()
    made.release()  # (once: a second is nothing)
    # the marker lives apart from the bundles: runs/ holds bundles only
    assert [p.name for p in made.path.parent.iterdir()] == [made.path.name]


def test_a_sweep_between_a_runs_open_and_its_lock_does_not_leave_it_unmarked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep may find a new run's marker before the run has locked it (it reads as a
    dead run's) and remove it: the run then held a lock on a file no longer there, and
    read as not running. It makes its marker again."""
    from app.evidence import live

    repo = _repo(tmp_path)
    bundle = repo / ".switchyard" / "runs" / "20260101-000000-aaaaaa"
    bundle.mkdir(parents=True)
    real = fcntl.flock
    swept: list[bool] = []

    def flock(fd: int, op: int) -> None:
        if op & fcntl.LOCK_EX and not swept:
            live.sweep(bundle.parent.parent)  # another process's, at the worst moment
            swept.append(not marker(bundle).exists())
        real(fd, op)

    monkeypatch.setattr(live.fcntl, "flock", flock)
    fd = hold(bundle)
    monkeypatch.setattr(live.fcntl, "flock", real)
    assert swept == [True] and fd is not None
    try:
        assert running(bundle)
    finally:
        live.let_go(bundle, fd)


def test_a_sweep_leaves_what_is_named_as_no_run_is(tmp_path: Path) -> None:
    """Only markers are swept: a file in ``live/`` whose name no run could have (a dotfile
    someone keeps there) is not removed, unlocked as it is (a review)."""
    from app.evidence import live

    repo = _repo(tmp_path)
    made = EvidenceBundle.create(repo, "20260101-000000-bbbbbb")
    made.release()
    folder = marker(made.path).parent
    kept, dead = folder / ".keep", folder / "20260101-000000-cccccc"
    kept.write_text("")
    dead.write_text("")  # a run that died: its marker, unlocked
    live.sweep(made.path.parent.parent)
    assert kept.exists() and not dead.exists()
