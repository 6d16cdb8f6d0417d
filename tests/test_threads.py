"""thread_map: the resampling pool returns results in order, on at most the capped threads."""

from __future__ import annotations

import threading
import time

import pytest

from operators.core.threads import THREADS_ENV, thread_map


def test_results_keep_the_order_of_the_items_whatever_finishes_first() -> None:
    def slow_for_small(n: int) -> int:
        time.sleep(0.002 * (10 - n))  # the first items finish last
        return n * n

    assert thread_map(slow_for_small, range(10)) == [n * n for n in range(10)]


def test_the_cap_of_one_thread_runs_everything_in_the_calling_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(THREADS_ENV, "1")
    assert set(thread_map(lambda _: threading.get_ident(), range(5))) == {threading.get_ident()}


def test_work_runs_on_several_threads_when_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(THREADS_ENV, "2")
    both_running = threading.Barrier(2, timeout=5)  # only passes when two items run at once
    assert thread_map(lambda n: both_running.wait() >= 0 and n, [1, 2]) == [1, 2]


def test_an_exception_in_one_item_reaches_the_caller() -> None:
    def fails_on_three(n: int) -> int:
        if n == 3:
            raise ValueError("item 3")
        return n

    with pytest.raises(ValueError, match="item 3"):
        thread_map(fails_on_three, range(6))
