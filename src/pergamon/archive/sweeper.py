"""Removing orphan blobs: files in the blob store that no index row references.

Ingest writes the blob, then commits the index row. A crash between the two leaves a blob
nobody acknowledged. `Archive.open` notices an unclean shutdown (the run marker of the previous
process is still there) and the runtime then sweeps in the background: every blob older than this
process's start that the index does not know is deleted. Blobs of this process's own stores are
newer than its start, so a store in flight is never touched.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from sqlalchemy import select

from pergamon.archive.index.database import Database
from pergamon.archive.index.schema import instance
from pergamon.storage.filesystem import FilesystemBlobStore

log = logging.getLogger(__name__)


def sweep_orphans(store: FilesystemBlobStore, db: Database, *, started_at: float) -> int:
    """Delete unreferenced blobs last modified before `started_at`; returns how many went."""
    began = time.monotonic()
    with db.read() as conn:
        known = set(conn.execute(select(instance.c.blob_key)).scalars())
    removed = checked = 0
    for key in store.iter_keys():
        checked += 1
        if key in known:
            continue
        path = store.root / key
        try:
            if path.stat().st_mtime >= started_at:
                continue
            os.unlink(path)
        except FileNotFoundError:
            continue
        removed += 1
        log.info("removed orphan blob %s (never acknowledged)", key)
    for partial in Path(store.root).glob("*/*/*.partial"):
        partial.unlink(missing_ok=True)
    log.info(
        "orphan sweep: %d blob(s) checked against %d index rows, %d removed in %.1f s",
        checked,
        len(known),
        removed,
        time.monotonic() - began,
    )
    return removed
