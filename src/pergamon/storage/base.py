"""The blob store seam: where stored objects' bytes live (a folder now, S3 later).

Keys are opaque strings chosen by the store. Objects are immutable once put; a replaced
instance gets a new key and the old blob is deleted after the index no longer points at it.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Protocol


class BlobStore(Protocol):
    """Five operations, as Orthanc's IStorageArea has; every implementation is durable on return."""

    def put_file(self, source: Path, *, move: bool) -> str:
        """Store the file at `source` (moved when `move` and possible, else copied) durably; return its key."""
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
