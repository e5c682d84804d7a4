"""What the store-path tests check after every scenario: the index, the blob store and the temp folder.

The checks read the index with plain SQL and the blobs from disk, never through the archive core,
so a bug in the core cannot hide itself. Used by test_durability, test_bad_input,
test_large_instance and test_import.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from conftest import ServerProcess
from pydicom.dataset import FileMetaDataset
from pydicom.filereader import read_dataset, read_preamble
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian
from sqlalchemy import create_engine, func, select

from pergamon.archive.index.schema import instance, patient, series, study
from pergamon.config import Settings


@dataclass(frozen=True)
class IndexedInstance:
    sop_uid: str
    sop_class_uid: str
    series_uid: str
    study_uid: str
    blob_key: str
    size: int
    sha256: str
    transfer_syntax: str


def index_instances(settings: Settings) -> dict[str, IndexedInstance]:
    """Every instance row of the index, by SOP Instance UID (read with SQL, not via the core)."""
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    instance.c.sop_uid,
                    instance.c.sop_class_uid,
                    series.c.series_uid,
                    study.c.study_uid,
                    instance.c.blob_key,
                    instance.c.size,
                    instance.c.sha256,
                    instance.c.transfer_syntax,
                )
                .join(series, series.c.pk == instance.c.series_fk)
                .join(study, study.c.pk == series.c.study_fk)
            ).all()
    finally:
        engine.dispose()
    return {row.sop_uid: IndexedInstance(*row) for row in rows}


def index_counts(settings: Settings) -> dict[str, int]:
    """Rows per level, plus the sums of the stored counters, which must agree with the rows."""
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            result = {
                name: conn.execute(select(func.count()).select_from(table)).scalar_one()
                for name, table in (
                    ("patients", patient),
                    ("studies", study),
                    ("series", series),
                    ("instances", instance),
                )
            }
            result["sum(series.num_instances)"] = conn.execute(select(func.sum(series.c.num_instances))).scalar() or 0
            result["sum(study.num_instances)"] = conn.execute(select(func.sum(study.c.num_instances))).scalar() or 0
            result["sum(study.num_series)"] = conn.execute(select(func.sum(study.c.num_series))).scalar() or 0
            result["sum(patient.num_studies)"] = conn.execute(select(func.sum(patient.c.num_studies))).scalar() or 0
    finally:
        engine.dispose()
    return result


def assert_counts_consistent(settings: Settings) -> dict[str, int]:
    """The denormalised counters equal the row counts; returns the counts."""
    c = index_counts(settings)
    assert c["sum(series.num_instances)"] == c["instances"], c
    assert c["sum(study.num_instances)"] == c["instances"], c
    assert c["sum(study.num_series)"] == c["series"], c
    assert c["sum(patient.num_studies)"] == c["studies"], c
    return c


def blob_files(settings: Settings) -> set[str]:
    """Keys (paths relative to the blob root) of every file in the blob store, partial ones included."""
    root = settings.blob_path
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def temp_leftovers(settings: Settings) -> list[str]:
    folder = settings.server.data_dir / "tmp"
    return sorted(os.listdir(folder)) if folder.exists() else []


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll `predicate` every 20 ms until it is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def unfinished_transfers(settings: Settings) -> list[str]:
    """Files of transfers not (yet) stored: in the temporary folder, or blobs no index row points at
    (the DIMSE receive loop writes a data set straight into its blob)."""
    indexed = {row.blob_key for row in index_instances(settings).values()}
    return temp_leftovers(settings) + sorted(blob_files(settings) - indexed)


def assert_no_temp_leftovers(settings: Settings, timeout: float = 5.0) -> None:
    """Nothing of an unfinished transfer stays once associations are over: the temporary folder
    empties and every blob file is indexed (transfers are stored or removed)."""
    try:
        wait_for(lambda: not unfinished_transfers(settings), timeout, "no unfinished transfer left")
    except AssertionError:
        raise AssertionError(f"left of unfinished transfers: {unfinished_transfers(settings)}") from None


def assert_blobs_match_index(settings: Settings, *, max_orphans: int = 0) -> dict[str, IndexedInstance]:
    """Every row's blob exists with the recorded size and SHA-256; at most `max_orphans` unindexed blobs."""
    rows = index_instances(settings)
    for uid, row in rows.items():
        path = settings.blob_path / row.blob_key
        assert path.is_file(), f"{uid}: blob {row.blob_key} is missing"
        assert path.stat().st_size == row.size, f"{uid}: blob size {path.stat().st_size} != indexed {row.size}"
        assert sha256_file(path) == row.sha256, f"{uid}: blob SHA-256 differs from the index"
    orphans = blob_files(settings) - {row.blob_key for row in rows.values()}
    assert len(orphans) <= max_orphans, f"blobs without an index row: {sorted(orphans)}"
    return rows


def sha256_file(path: Path, start: int = 0) -> str:
    """SHA-256 of the file from byte `start`, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(start)
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def dataset_offset(path: Path) -> int:
    """Offset of the data set in a Part-10 file (the first byte after the File Meta Information)."""
    with open(path, "rb") as fp:
        read_preamble(fp, False)
        read_dataset(fp, False, True, stop_when=lambda tag, _vr, _length: tag.group != 2)
        return fp.tell()


def dataset_bytes(path: Path) -> bytes:
    """The data set of a Part-10 file exactly as encoded (what travels in a C-STORE)."""
    data = path.read_bytes()
    return data[dataset_offset(path) :]


def dataset_digest(path: Path) -> tuple[int, str]:
    """(length, SHA-256) of the data set part of a Part-10 file, streamed."""
    start = dataset_offset(path)
    return path.stat().st_size - start, sha256_file(path, start)


def write_part10(
    path: Path,
    body: bytes,
    *,
    sop_class: str,
    sop_instance: str,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> Path:
    """A Part-10 file whose File Meta says `sop_class`/`sop_instance` and whose data set is `body` verbatim.

    With pynetdicom's STORE_SEND_CHUNKED_DATASET the C-STORE request then announces the File Meta
    UIDs and carries `body` unchanged, which lets a test send any bytes it likes.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    with open(path, "wb") as f:
        f.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(f, meta)  # type: ignore[arg-type]
        f.write(body)
    return path


def pdata_tf(context_id: int, control_header: int, fragment: bytes) -> bytes:
    """One P-DATA-TF PDU (PS3.8 9.3.5) holding one PDV (PS3.8 E.2)."""
    item = bytes([context_id, control_header]) + fragment
    return b"\x04\x00" + struct.pack(">I", 4 + len(item)) + struct.pack(">I", len(item)) + item


class ChildServer(ServerProcess):
    """`conftest.ServerProcess` with a teardown kill and its log."""

    def kill(self) -> None:
        """SIGKILL the server if it still runs (test teardown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def close_socket(assoc: object) -> None:
    """Close the association's TCP socket for good.

    pynetdicom's AssociationSocket skips close() when shutdown() fails, which it does once the
    peer has reset the connection; the leaked socket then raises a ResourceWarning whenever the
    garbage collector finds it, failing an unrelated test. Call after an association died.
    """
    raw = getattr(assoc, "_pergamon_raw_socket", None)
    if raw is not None:
        raw.close()


def keep_socket(assoc: object) -> object:
    """Remember the raw socket of an established association for `close_socket`."""
    assoc._pergamon_raw_socket = assoc.dul.socket.socket  # type: ignore[attr-defined]
    return assoc
