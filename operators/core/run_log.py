"""Per-stage timing of a run: one log line per finished stage, and the list of timings so far.

Every operator wraps its work in :func:`stage_timer`; the line it logs, at INFO on the logger
``spine_map.run``, is exactly::

    stage <stage> finished in <seconds:.3f> s

(the benchmark tools parse it). :func:`stage_timings` returns every timing of the process in
order; a ``--batch`` run takes :func:`timings_mark` before a study and reads
``stage_timings()[mark:]`` after it for that study's share.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Iterator

logger = logging.getLogger("spine_map.run")

_lock = threading.Lock()
_timings: list[StageTiming] = []


@dataclass(frozen=True)
class StageTiming:
    """One finished stage: its name and wall-clock duration in seconds."""

    stage: str
    seconds: float


@contextlib.contextmanager
def stage_timer(stage: str) -> Iterator[None]:
    """Time the ``with`` block as stage ``stage``; log and record it when the block ends.

    A stage that raises is neither logged as finished nor recorded: the error ends the run and is
    reported on its own.
    """
    start = time.perf_counter()
    yield
    seconds = time.perf_counter() - start
    with _lock:
        _timings.append(StageTiming(stage, seconds))
    logger.info("stage %s finished in %.3f s", stage, seconds)


def stage_timings() -> list[StageTiming]:
    """Every stage timing recorded in this process so far, oldest first (a copy)."""
    with _lock:
        return list(_timings)


def timings_mark() -> int:
    """Number of timings recorded so far: ``stage_timings()[mark:]`` are those recorded after it."""
    with _lock:
        return len(_timings)
