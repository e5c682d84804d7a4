"""Settings of a serving process as a whole (the main `serve` process and each store worker)."""

from __future__ import annotations

import gc


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
