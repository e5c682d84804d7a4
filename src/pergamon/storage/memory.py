"""In-memory blob store for core tests that need no disk."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import BinaryIO


class MemoryBlobStore:
    """A `BlobStore` keeping bytes in a dict."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def put_file(self, source: Path, *, move: bool, presynced: bool = False) -> str:
        key = uuid.uuid4().hex
        self.blobs[key] = source.read_bytes()
        if move:
            source.unlink()
        return key

    def presync(self, source: Path) -> None:
        """Nothing to flush: the bytes are kept in memory."""

    def reserve_local(self) -> tuple[str, Path] | None:
        """No local files: doors write to a temporary file and `put_file` it."""
        return None

    def settle(self, key: str) -> None:
        raise NotImplementedError("a memory blob store reserves no local blobs")

    def open(self, key: str) -> BinaryIO:
        try:
            return io.BytesIO(self.blobs[key])
        except KeyError:
            raise FileNotFoundError(key) from None

    def path(self, key: str) -> Path | None:
        return None

    def delete(self, key: str) -> None:
        self.blobs.pop(key, None)

    def exists(self, key: str) -> bool:
        return key in self.blobs
