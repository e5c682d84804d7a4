"""A read-only `BlobStore` over a media folder: the keys are the files' own paths, nothing is copied.

`pergamon view` indexes a CD, DVD or USB stick through the normal ingest path with this store, so
the media is served exactly as it is and is never written to (PDI Image Display shows media
"without importing it"). Any attempt to add or remove a blob is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from pergamon.archive import errors


class MediaBlobStore:
    """A `BlobStore` whose blobs are the files under `root`, keyed by their relative POSIX path."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _resolve(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise FileNotFoundError(f"{key} is not on the media")
        return path

    def put_file(self, source: Path, *, move: bool, presynced: bool = False) -> str:
        """The key of a media file itself (never moved or copied); anything else is refused."""
        path = source.resolve()
        if move or not path.is_relative_to(self.root) or not path.is_file():
            raise errors.NotAuthorized(f"the media {self.root} is read-only: nothing can be stored")
        return path.relative_to(self.root).as_posix()

    def presync(self, source: Path) -> None:
        """Nothing is written to the media, so nothing is flushed."""

    def reserve_local(self) -> tuple[str, Path] | None:
        """Nothing is written to the media: no blob can be reserved on it."""
        return None

    def settle(self, key: str) -> None:
        raise errors.NotAuthorized(f"the media {self.root} is read-only: nothing can be stored")

    def open(self, key: str) -> BinaryIO:
        return open(self._resolve(key), "rb")

    def path(self, key: str) -> Path | None:
        return self._resolve(key)

    def delete(self, key: str) -> None:
        """Nothing is ever deleted from the media."""

    def exists(self, key: str) -> bool:
        return self._resolve(key).is_file()
