"""app.own_thread: OpenMP work on a thread that ends with the call."""

from __future__ import annotations

import threading

import pytest

from app.own_thread import on_own_thread


def test_the_call_runs_on_a_thread_that_has_ended_when_its_result_comes_back() -> None:
    here = threading.get_ident()
    seen: list[threading.Thread] = []

    def call() -> int:
        seen.append(threading.current_thread())
        return 42

    assert on_own_thread(call) == 42
    assert seen[0].ident != here
    assert not seen[0].is_alive()


def test_an_exception_is_raised_on_the_callers_thread() -> None:
    def fails() -> None:
        raise ValueError("the model file is unreadable")

    with pytest.raises(ValueError, match="unreadable"):
        on_own_thread(fails)
