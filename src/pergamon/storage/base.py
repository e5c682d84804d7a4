"""The blob store seam: where stored objects' bytes live (a folder now, S3 later).

Keys are opaque strings chosen by the store. Objects are immutable once put; a replaced
instance gets a new key and the old blob is deleted after the index no longer points at it.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Protocol


class BlobStore(Protocol):
    """Orthanc's IStorageArea operations, and a flush ahead of a move; durable on return."""

    def put_file(self, source: Path, *, move: bool, presynced: bool = False) -> str:
        """Store the file at `source` (moved when `move` and possible, else copied) durably; return its key.

        `presynced`: `presync(source)` already returned, so a move need not flush the bytes again.
        """
        ...

    def presync(self, source: Path) -> None:
        """Flush `source`'s bytes to disk ahead of its `put_file(move=True)`; may run on another thread.

        Lets the caller overlap the disk wait with its own work; stores with nothing to flush do nothing.
        """
        ...

    def reserve_local(self) -> tuple[str, Path] | None:
        """A new key and the local path where the caller may write that blob itself, or None when
        this store has no local files; the caller then hands it over with `settle`, or deletes it.

        Lets a door write a received object straight to its final place: no move, no second
        folder flush (`dimse.direct_store`).
        """
        ...

    def settle(self, key: str) -> None:
        """Make a blob written in place at `reserve_local`'s path durable: its bytes and its name."""
        ...

    def open(self, key: str) -> BinaryIO:
        """Open the blob for reading. Raises FileNotFoundError if it is gone."""
        ...

    def path(self, key: str) -> Path | None:
        """A local path to the blob when the store has one (lets senders stream from disk)."""
        ...

    def delete(self, key: str) -> None:
        """Remove the blob; a missing blob is not an error."""
        ...

    def exists(self, key: str) -> bool:
        """Whether the blob is present."""
        ...
