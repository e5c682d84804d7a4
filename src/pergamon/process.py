"""Settings and shared resources of a serving process as a whole (the main `serve` process and each store worker)."""

from __future__ import annotations

import gc
import threading
from concurrent.futures import ThreadPoolExecutor


def freeze_startup_objects() -> None:
    """Keep what the process built while starting out of the cyclic garbage collector's full passes.

    Modules, pydicom's dictionaries, the archive and its servers live as long as the process, yet
    every full collection walks them all again: ~50-100 ms on the 2-core test machine, every few
    hundred requests, in the middle of whichever one triggered it (the periodic 100 ms outliers
    of QIDO-RS). `gc.freeze` moves them to a permanent generation; what requests allocate is
    collected as before. Called once a serving process (`serve`, a store worker) has started.
    """
    gc.collect()  # garbage from the start itself is freed, not frozen
    gc.freeze()


YOUNG_COLLECTION_THRESHOLD = 10_000
"""Allocations between collections of the youngest generation (CPython's default: 700)."""


def collect_young_less_often() -> None:
    """Raise the youngest generation's threshold from CPython's 700 allocations to 10,000.

    A large answer holds its results while it builds them (a study search with 2,929 matches: some
    150,000 dicts and lists), and at the default every 700 allocations start a collection that
    walks the survivors again: ~45% of such a search's time on the 2-core test machine (measured
    with the collector off; at 10,000 the search took 20-30% less, its rendering 10-20% less).
    Cyclic garbage waits a little longer; reference counting still frees everything else at once.
    Called with `freeze_startup_objects`.
    """
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)


class ProcessThreads:
    """A thread pool made on first use and kept for the process's life, shared by all its callers.

    For work handed off many times a second (each stored object's digest, each STOW-RS part):
    idle threads are reused instead of a pool being built and torn down per request.
    """

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.size, thread_name_prefix=self.name)
            return self._pool
