"""Ingest flushes a moved file on another thread while it reads the header (`ingest._digest_and_presync`).

Files under `ingest.INLINE_DIGEST_BELOW` are flushed on the storing thread after the header
check instead; each test runs both ways (a 64x64 slice, and a 512x512 one of ~0.5 MiB).

What must hold: the bytes are flushed before the file is renamed into the blob store, the move
waits for the header (pydicom reads deferred values again by the file's name), and a refused
object is neither moved nor left with a flush still running when `store_file` returns.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import samples
from sqlalchemy import select

from pergamon.archive import errors, ingest
from pergamon.archive.index.schema import instance
from pergamon.archive.origin import Origin
from pergamon.archive.service import Archive
from pergamon.config import Settings
from pergamon.storage.filesystem import FilesystemBlobStore


class RecordingStore(FilesystemBlobStore):
    """The real store, noting each call, whether the source was still in place, and when a flush ended."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, fsync=True)
        self.calls: list[tuple[str, bool, bool]] = []
        self.flushed = threading.Event()
        self.lock = threading.Lock()

    def presync(self, source: Path) -> None:
        with self.lock:
            self.calls.append(("presync", source.exists(), False))
        self.flushed.wait(0.2)  # a slow disk: the header check runs meanwhile
        super().presync(source)
        with self.lock:
            self.calls.append(("presync done", source.exists(), False))

    def put_file(self, source: Path, *, move: bool, presynced: bool = False) -> str:
        with self.lock:
            self.calls.append(("put_file", source.exists(), presynced))
        return super().put_file(source, move=move, presynced=presynced)

    def settle(self, key: str) -> None:
        with self.lock:
            self.calls.append(("settle", (self.root / key).exists(), False))
        super().settle(key)

    def delete(self, key: str) -> None:
        with self.lock:
            self.calls.append(("delete", (self.root / key).exists(), False))
        super().delete(key)


SIZES = pytest.mark.parametrize("size", [64, 512], ids=["inline", "threaded"])


@pytest.fixture
def recording(settings: Settings) -> Iterator[tuple[Archive, RecordingStore]]:
    base = Archive.open(settings)
    store = RecordingStore(settings.blob_path)
    archive = Archive(settings, base.db, store)
    yield archive, store
    archive.close()


@SIZES
def test_a_moved_file_is_flushed_before_it_is_renamed_and_its_digest_indexed(
    recording: tuple[Archive, RecordingStore], tmp_path: Path, size: int
) -> None:
    archive, store = recording
    sample = samples.ct_series(tmp_path / "in", 1, size=size)[0]
    assert (sample.path.stat().st_size < ingest.INLINE_DIGEST_BELOW) == (size == 64)
    digest = hashlib.sha256(sample.path.read_bytes()).hexdigest()

    archive.store_file(sample.path, Origin.from_import("test"), move=True)

    assert [name for name, _, _ in store.calls] == ["presync", "presync done", "put_file"]
    assert all(present for _, present, _ in store.calls)  # flushed where it was, then moved
    assert store.calls[-1][2] is True  # the move does not flush again
    assert not sample.path.exists()
    with archive.db.read() as conn:
        row = conn.execute(select(instance.c.sha256, instance.c.blob_key)).one()
    assert row.sha256 == digest
    assert hashlib.sha256((archive.settings.blob_path / row.blob_key).read_bytes()).hexdigest() == digest


def test_a_copied_file_is_not_flushed_twice(recording: tuple[Archive, RecordingStore], tmp_path: Path) -> None:
    archive, store = recording
    sample = samples.ct_series(tmp_path / "in", 1, size=64)[0]

    archive.store_file(sample.path, Origin.from_import("test"), move=False)

    assert store.calls == [("put_file", True, False)]  # the copy is flushed by the store itself
    assert sample.path.exists()


@pytest.mark.parametrize(
    ("size", "flushes"),
    [(64, []), (512, ["presync", "presync done"])],  # inline: refused before the flush; threaded: it finished
    ids=["inline", "threaded"],
)
def test_a_refused_object_is_not_moved_and_its_flush_is_over(
    recording: tuple[Archive, RecordingStore], tmp_path: Path, size: int, flushes: list[str]
) -> None:
    archive, store = recording
    sample = samples.ct_series(tmp_path / "in", 1, size=size)[0]

    with pytest.raises(errors.SOPInstanceMismatch):
        archive.store_file(sample.path, Origin.from_import("test"), expected_sop_instance="1.2.3.4", move=True)

    assert [name for name, _, _ in store.calls] == flushes  # none still running after the raise
    assert sample.path.exists()
    assert [p for p in archive.settings.blob_path.rglob("*") if p.is_file()] == []
    assert archive.counts()["instances"] == 0



@SIZES
def test_a_digest_from_the_door_is_indexed_without_reading_the_file_back(
    recording: tuple[Archive, RecordingStore], tmp_path: Path, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DIMSE receive loop hashes as it writes; the core then only flushes the file."""
    archive, store = recording
    sample = samples.ct_series(tmp_path / "in", 1, size=size)[0]
    data = sample.path.read_bytes()
    given = ingest.Digest(len(data), hashlib.sha256(data).hexdigest())

    def read_back(path: Path) -> ingest.Digest:
        raise AssertionError(f"{path} was read back to hash it")

    monkeypatch.setattr(ingest, "_size_and_digest", read_back)
    archive.store_file(sample.path, Origin.from_import("test"), move=True, digest=given)

    assert [name for name, _, _ in store.calls] == ["presync", "presync done", "put_file"]
    with archive.db.read() as conn:
        row = conn.execute(select(instance.c.size, instance.c.sha256)).one()
    assert (row.size, row.sha256) == given


def _in_place(store: RecordingStore, source: Path) -> tuple[str, Path]:
    """`source`'s bytes written as a new blob, the way the DIMSE receive loop writes a data set."""
    reserved = store.reserve_local()
    assert reserved is not None
    key, path = reserved
    path.write_bytes(source.read_bytes())
    return key, path


@SIZES
def test_a_blob_written_in_place_is_flushed_where_it_is_and_indexed_under_its_key(
    recording: tuple[Archive, RecordingStore], tmp_path: Path, size: int
) -> None:
    archive, store = recording
    sample = samples.ct_series(tmp_path / "in", 1, size=size)[0]
    key, path = _in_place(store, sample.path)

    archive.store_file(path, Origin.from_import("test"), blob_key=key)

    # flushed where it is (settle flushes the file, then its folder): no move, no copy
    assert [name for name, _, _ in store.calls] == ["settle", "presync", "presync done"]
    with archive.db.read() as conn:
        row = conn.execute(select(instance.c.blob_key, instance.c.sha256)).one()
    assert row.blob_key == key
    assert row.sha256 == hashlib.sha256(sample.path.read_bytes()).hexdigest()
    assert path.read_bytes() == sample.path.read_bytes()


@SIZES
def test_a_blob_written_in_place_for_a_refused_object_is_deleted(
    recording: tuple[Archive, RecordingStore], tmp_path: Path, size: int
) -> None:
    archive, store = recording
    sample = samples.ct_series(tmp_path / "in", 1, size=size)[0]
    key, path = _in_place(store, sample.path)

    with pytest.raises(errors.SOPInstanceMismatch):
        archive.store_file(path, Origin.from_import("test"), expected_sop_instance="1.2.3.4", blob_key=key)

    assert not path.exists()
    assert ("delete", True, False) in store.calls
    assert archive.counts()["instances"] == 0


@pytest.mark.parametrize("policy", ["ignore", "reject"])
def test_a_blob_written_in_place_for_a_duplicate_not_kept_is_deleted(
    recording: tuple[Archive, RecordingStore], tmp_path: Path, policy: str
) -> None:
    archive, store = recording
    archive.settings = dataclasses.replace(
        archive.settings, dicom=dataclasses.replace(archive.settings.dicom, duplicate_policy=policy)
    )
    sample = samples.ct_series(tmp_path / "in", 1, size=64)[0]
    first_key, first = _in_place(store, sample.path)
    archive.store_file(first, Origin.from_import("test"), blob_key=first_key)
    key, path = _in_place(store, sample.path)

    if policy == "reject":
        with pytest.raises(errors.Conflict):
            archive.store_file(path, Origin.from_import("test"), blob_key=key)
    else:
        archive.store_file(path, Origin.from_import("test"), blob_key=key)

    assert not path.exists()
    assert first.exists()
    with archive.db.read() as conn:
        assert conn.execute(select(instance.c.blob_key)).scalars().all() == [first_key]
