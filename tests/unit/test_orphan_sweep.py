"""After an unclean stop, `serve` removes blobs that no index row references (archive/sweeper.py)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from pydicom.data import get_testdata_file

from pergamon.archive.origin import Origin
from pergamon.archive.service import Archive
from pergamon.config import Settings
from pergamon.runtime import Pergamon


def _blob(settings: Settings, name: str, *, age: float) -> Path:
    path = settings.blob_path / "ab" / "cd" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"never acknowledged")
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def _wait_gone(path: Path, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not path.exists():
            return True
        time.sleep(0.05)
    return False


def test_unclean_stop_sweeps_orphans_and_keeps_stored_objects(settings: Settings, tmp_path: Path) -> None:
    source = tmp_path / "ct.dcm"
    shutil.copy(str(get_testdata_file("CT_small.dcm")), source)
    archive = Archive.open(settings)
    archive.store_file(source, Origin.from_import(str(source)))
    archive.close()
    kept = {p for p in settings.blob_path.rglob("*.dcm")}
    orphan = _blob(settings, "0123456789abcdef.dcm", age=60)
    (settings.server.data_dir / "pergamon.running").write_text("12345\n")  # a run that was killed

    app = Pergamon(settings)
    app.start()
    try:
        assert _wait_gone(orphan), "the orphan blob was not swept"
        assert {p for p in settings.blob_path.rglob("*.dcm")} == kept
        assert app.archive.counts()["instances"] == 1
    finally:
        app.stop()
    assert not (settings.server.data_dir / "pergamon.running").exists()


def test_clean_stop_does_not_sweep(settings: Settings) -> None:
    app = Pergamon(settings)
    app.start()
    app.stop()
    orphan = _blob(settings, "fedcba9876543210.dcm", age=60)
    app = Pergamon(settings)
    app.start()
    try:
        time.sleep(0.3)
        assert orphan.exists(), "a clean restart must not scan the blob store"
    finally:
        app.stop()
