"""The filesystem blob store flushes every name a stored blob depends on (`storage/filesystem.py`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pergamon.storage import filesystem
from pergamon.storage.filesystem import FilesystemBlobStore


@pytest.fixture
def flushed_folders(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every folder the store flushes, in order (the real flush still runs)."""
    flushed: list[Path] = []
    real = filesystem._fsync_dir

    def record(path: Path) -> None:
        flushed.append(Path(path))
        real(path)

    monkeypatch.setattr(filesystem, "_fsync_dir", record)
    return flushed


def test_a_new_blob_folder_is_flushed_in_its_parent_once(tmp_path: Path, flushed_folders: list[Path]) -> None:
    store = FilesystemBlobStore(tmp_path / "blobs")

    key, path = store.reserve_local()  # type: ignore[misc]
    top, folder = path.parent.parent, path.parent
    assert flushed_folders == [store.root, top]  # the new names "aa" (in the root) and "bb" (in aa)

    path.write_bytes(b"blob")
    store.settle(key)
    assert flushed_folders[2:] == [folder]  # the blob's own name

    flushed_folders.clear()
    store._new_key = lambda: f"{top.name}/{folder.name}/second.dcm"  # type: ignore[method-assign]
    _, second = store.reserve_local()  # type: ignore[misc]
    assert second.parent == folder
    assert flushed_folders == []  # the folder existed: nothing more to flush before the blob's own


def test_without_fsync_nothing_is_flushed(tmp_path: Path, flushed_folders: list[Path]) -> None:
    store = FilesystemBlobStore(tmp_path / "blobs", fsync=False)
    source = tmp_path / "in.dcm"
    source.write_bytes(b"blob")

    key = store.put_file(source, move=True)

    assert (store.root / key).read_bytes() == b"blob"
    assert flushed_folders == []
