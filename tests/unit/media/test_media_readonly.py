"""The read-only media blob store: keys are the media's own paths; nothing is written, moved or removed."""

from __future__ import annotations

from pathlib import Path

import pytest

from pergamon.archive import errors
from pergamon.media.readonly import MediaBlobStore


def test_keys_are_media_paths_and_nothing_changes(tmp_path: Path) -> None:
    media = tmp_path / "cd"
    (media / "DICOM").mkdir(parents=True)
    image = media / "DICOM" / "IM000001"
    image.write_bytes(b"x" * 10)
    store = MediaBlobStore(media)
    key = store.put_file(image, move=False)
    assert key == "DICOM/IM000001"
    assert store.path(key) == image.resolve() and store.exists(key)
    with store.open(key) as f:
        assert f.read() == b"x" * 10
    store.delete(key)
    assert image.read_bytes() == b"x" * 10


def test_files_off_the_media_and_moves_are_refused(tmp_path: Path) -> None:
    media = tmp_path / "cd"
    media.mkdir()
    (media / "IM1").write_bytes(b"x")
    elsewhere = tmp_path / "upload.dcm"
    elsewhere.write_bytes(b"y")
    store = MediaBlobStore(media)
    with pytest.raises(errors.NotAuthorized, match="read-only"):
        store.put_file(elsewhere, move=False)
    with pytest.raises(errors.NotAuthorized):
        store.put_file(media / "IM1", move=True)
    with pytest.raises(FileNotFoundError):
        store.open("../upload.dcm")
