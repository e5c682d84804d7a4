"""Blob store on a local (or mounted) filesystem, durable before it returns.

Layout: ``<root>/<aa>/<bb>/<uuid>.dcm``, two levels of 256 folders so no folder grows huge.
A put writes (or moves) into the final folder under a temporary name, fsyncs the file, renames
it into place and fsyncs the folder, so a crash leaves either nothing or a whole file; the
index commit that follows is what makes the object part of the archive. A door may instead write
a blob in place (`reserve_local`, then `settle`): a crash then can leave a partial file under a
final name, but no index row points at it and the orphan sweep after an unclean stop removes it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from pathlib import Path
from typing import BinaryIO

from pergamon.archive.errors import StorageFull


class FilesystemBlobStore:
    """A `BlobStore` over a folder tree."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self.fsync = fsync
        root.mkdir(parents=True, exist_ok=True)

    def _new_key(self) -> str:
        name = uuid.uuid4().hex
        return f"{name[:2]}/{name[2:4]}/{name}.dcm"

    def _make_folder(self, folder: Path) -> None:
        """Create a blob's folder and its parent as needed; with fsync, each new folder's name is
        flushed in its parent, since a folder's own flush (`settle`, `put_file`) covers only the
        names inside it. Once per folder in the archive's life (65,536 of them)."""
        if folder.is_dir():
            return
        for level in (folder.parent, folder):
            if level.is_dir():
                continue
            with contextlib.suppress(FileExistsError):  # another store made it: flush it here too
                level.mkdir()
            if self.fsync:
                _fsync_dir(level.parent)

    def put_file(self, source: Path, *, move: bool, presynced: bool = False) -> str:
        key = self._new_key()
        final = self.root / key
        self._make_folder(final.parent)
        # Order matters (POSIX, ext4 without data=journal): the data is fsynced before the rename
        # publishes the name, or a crash could leave the final name on a zero-length or partial
        # file; the folder is fsynced after it, or the rename itself may not survive a crash. The
        # caller acknowledges only after both, so neither fsync can be dropped or moved.
        try:
            if move and _same_device(source, final.parent):
                if self.fsync and not presynced:
                    _fsync_path(source)
                os.replace(source, final)
            else:
                partial = final.with_suffix(".partial")
                with open(source, "rb") as src, open(partial, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                    if self.fsync:
                        dst.flush()
                        os.fsync(dst.fileno())
                os.replace(partial, final)
            if self.fsync:
                _fsync_dir(final.parent)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(f"blob store {self.root} is full") from exc
            raise
        return key

    def reserve_local(self) -> tuple[str, Path] | None:
        key = self._new_key()
        final = self.root / key
        self._make_folder(final.parent)
        return key, final

    def settle(self, key: str) -> None:
        # No rename follows, so both flushes can go in a row: a crash before the index commit
        # leaves an unreferenced blob, which the orphan sweep removes. The folder flush after the
        # file's costs little: the file's flush has usually committed the new name already.
        path = self.root / key
        self.presync(path)
        if self.fsync:
            _fsync_dir(path.parent)

    def presync(self, source: Path) -> None:
        if not self.fsync:
            return
        try:
            _fsync_path(source)
        except OSError as exc:  # a delayed allocation can fail only now, at the flush
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(f"no space left to flush {source.name}") from exc
            raise

    def open(self, key: str) -> BinaryIO:
        return open(self.root / key, "rb")

    def path(self, key: str) -> Path | None:
        return self.root / key

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.root / key)

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def iter_keys(self) -> list[str]:
        """Every stored key (for the orphan sweeper)."""
        return [str(p.relative_to(self.root)) for p in self.root.glob("*/*/*.dcm")]


def _same_device(a: Path, b: Path) -> bool:
    return os.stat(a).st_dev == os.stat(b).st_dev


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
