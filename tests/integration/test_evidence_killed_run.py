"""A run killed before its seal (SIGKILL: no finalizer, no cleanup) left its liveness
marker in ``.switchyard/live/`` for good. The next run's start, or a listing of the runs,
removes it; a live run's marker, and anything a repository planted there, stay."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.evidence.bundle import EvidenceBundle
from app.evidence.live import marker, running
from app.evidence.runs import list_runs

ROOT = Path(__file__).resolve().parents[2]

#: a run that makes its bundle (and so holds its marker), says so, and waits to be killed
_RUN = """
import sys, time
from pathlib import Path
from app.evidence.bundle import EvidenceBundle

bundle = EvidenceBundle.create(Path(sys.argv[1]), sys.argv[2])
print("holding", flush=True)
time.sleep(600)
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    return repo


@pytest.fixture
def runs(repo: Path) -> Iterator[list[subprocess.Popen[str]]]:
    """Run processes started by a test: each killed and reaped at its end."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


def _start(runs: list[subprocess.Popen[str]], repo: Path, run_id: str) -> Path:
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUN, str(repo), run_id],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    runs.append(proc)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
    bundle = repo / ".switchyard" / "runs" / run_id
    assert running(bundle)
    return bundle


def _kill(runs: list[subprocess.Popen[str]], bundle: Path) -> None:
    proc = next(p for p in runs if p.args[-1] == bundle.name)  # type: ignore[index]
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    # the kernel let go of its lock; the marker stays (what is swept)
    assert marker(bundle).is_file() and not running(bundle)


def test_a_new_run_sweeps_the_marker_of_a_run_killed_and_keeps_a_live_ones(
    repo: Path, runs: list[subprocess.Popen[str]]
) -> None:
    killed = _start(runs, repo, "20260101-000000-aaaaaa")
    alive = _start(runs, repo, "20260101-000000-bbbbbb")
    _kill(runs, killed)
    fifo = marker(killed).parent / "planted"
    os.mkfifo(fifo)  # never opened, never waited on, never removed

    new = EvidenceBundle.create(repo, "20260101-000000-cccccc")
    try:
        assert not marker(killed).exists()
        assert marker(alive).is_file() and running(alive)  # its lock is held: it stays
        assert running(new.path)
        assert fifo.is_fifo()
        # the killed run's bundle is the evidence of what happened: untouched
        assert killed.is_dir() and not running(killed)
    finally:
        new.release()


def test_listing_the_runs_sweeps_the_marker_of_a_run_killed(
    repo: Path, runs: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    killed = _start(runs, repo, "20260101-000000-aaaaaa")
    alive = _start(runs, repo, "20260101-000000-bbbbbb")
    _kill(runs, killed)
    live = marker(killed).parent
    outside = tmp_path / "outside"
    outside.write_text("not Switchyard's", encoding="utf-8")
    (live / "link").symlink_to(outside)  # a link planted there: neither followed nor removed
    os.mkfifo(live / "fifo")

    listed = list_runs(repo)
    assert sorted(r.run_id for r in listed) == [killed.name, alive.name]
    assert sorted(p.name for p in live.iterdir()) == [alive.name, "fifo", "link"]
    assert running(alive) and not running(killed)
    assert (live / "link").is_symlink() and outside.read_text(encoding="utf-8") == (
        "not Switchyard's"
    )


def test_a_live_folder_that_is_a_link_is_not_swept(repo: Path, tmp_path: Path) -> None:
    """A repository shipping ``.switchyard/live`` as a link to a folder of its own: a
    sweep there would remove files wherever it points."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "20260101-000000-aaaaaa").write_text("", encoding="utf-8")  # no lock held
    (repo / ".switchyard" / "runs").mkdir(parents=True)
    (repo / ".switchyard" / "live").symlink_to(elsewhere)

    assert list_runs(repo) == []
    assert (elsewhere / "20260101-000000-aaaaaa").exists()
