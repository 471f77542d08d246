"""bench._common.on_fresh_thread: the raw llama.cpp side's calls run where the backend's do."""

from __future__ import annotations

import threading

import pytest

from bench._common import on_fresh_thread


def test_the_call_runs_on_another_thread_each_time_and_its_result_comes_back() -> None:
    here = threading.get_ident()
    first = on_fresh_thread(threading.get_ident)
    second = on_fresh_thread(threading.get_ident)
    assert here not in (first, second)
    # a thread of its own each time: the first has ended before the second starts
    assert not any(t.ident == first for t in threading.enumerate())


def test_an_exception_is_raised_on_the_callers_thread() -> None:
    def fails() -> None:
        raise ValueError("the model file is unreadable")

    with pytest.raises(ValueError, match="unreadable"):
        on_fresh_thread(fails)
