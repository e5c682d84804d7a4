"""Ingest: the one path by which an object enters the archive (C-STORE, import, later STOW-RS).

The object is kept bit for bit as received: its header is read once (never the pixel data), its
bytes are fsynced into the blob store (the flush and digest run on another thread while the
header is read), and only then is the index row committed. A success returned from `store_file`
therefore means durable. If anything fails after the blob was written, the blob is removed
again, so nothing half-stored remains.

References: PS3.4 Annex B (Storage Service Class); IHE RAD TF-2 RAD-8 and its siblings.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import os
from concurrent.futures import Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Literal, NamedTuple

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import data_element_generator, read_dataset, read_preamble
from pydicom.uid import UID

from pergamon.archive import errors
from pergamon.archive.events import InstanceRejectedOnIngest, InstanceStored
from pergamon.archive.header import read_header
from pergamon.archive.index.writer import BlobInfo, add_instance, find_instance
from pergamon.archive.model import LevelRecord, ObjectRecord, split_levels
from pergamon.archive.origin import Origin
from pergamon.process import ProcessThreads

if TYPE_CHECKING:
    from pergamon.archive.service import Archive

log = logging.getLogger(__name__)

DuplicatePolicy = Literal["replace", "ignore", "reject"]
_REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
DIGEST_THREADS = ProcessThreads(8, "pergamon-digest")
"""Runs `_digest_and_presync`: 8 side by side per process; more concurrent stores wait for a thread."""
INLINE_DIGEST_BELOW = 128 * 1024
"""Files smaller than this are hashed and flushed on the storing thread: the hand-over to
`DIGEST_THREADS` (two thread switches, GIL hand-offs) costs more than the overlap saves."""


class Digest(NamedTuple):
    """Size and SHA-256 (hex) of a file's bytes, as the blob index records them."""

    size: int
    sha256: str


class StoreOutcome(enum.Enum):
    """What a store did; doors map it to their own success or warning status."""

    STORED = "stored"
    REPLACED = "replaced"
    DUPLICATE_IGNORED = "duplicate-ignored"


@dataclass(frozen=True)
class StoreResult:
    outcome: StoreOutcome
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str


def store_file(
    archive: Archive,
    path: Path,
    origin: Origin,
    *,
    expected_sop_class: str | None = None,
    expected_sop_instance: str | None = None,
    expected_study: str | None = None,
    move: bool = False,
    digest: Digest | None = None,
    blob_key: str | None = None,
) -> StoreResult:
    """Store the Part-10 file at `path`; with `move`, the file is taken over instead of copied.

    `digest`: the file's size and SHA-256 when the door computed them as it wrote the file (the
    DIMSE receive loop does), so the file is not read back to hash it.
    `blob_key`: `path` already is that blob, written in place by the door (`BlobStore.reserve_local`):
    it is flushed where it is, with no move. Such a file is then either the stored object's blob or
    deleted before this returns or raises.

    `expected_*`: what the door was told the object is (the C-STORE command's UIDs, the STOW-RS
    target study); an object that differs is refused.

    A refused object is announced as `InstanceRejectedOnIngest` (audited as a failed transfer or
    import, PS3.15 A.5.3.6 / A.5.3.8) before the error propagates to the door.

    Raises:
        errors.InvalidDataset: the file is not a readable DICOM object (MissingAttribute: it
            lacks a required UID).
        errors.SOPClassMismatch / errors.SOPInstanceMismatch / errors.StudyMismatch: it is not
            what the door was told.
        errors.Conflict: the SOP Instance UID is already stored and the policy is `reject`.
        errors.StorageFull: no space left for it.
    """
    expected = _Expected(expected_sop_class, expected_sop_instance, expected_study)
    arrival = _Arrival(move or blob_key is not None, digest, blob_key)
    try:
        return _store_file(archive, path, origin, expected, arrival)
    except errors.PergamonError as exc:
        sop_instance = exc.sop_instance_uid or expected_sop_instance or ""
        archive.bus.emit(InstanceRejectedOnIngest(sop_instance_uid=sop_instance, reason=str(exc), origin=origin))
        raise


def _store_file(
    archive: Archive,
    path: Path,
    origin: Origin,
    expected: _Expected,
    arrival: _Arrival,
) -> StoreResult:
    # A large file's digest and flush run on another thread while this one reads and checks the
    # header: hashing and the disk wait release the GIL, so it is durable about a millisecond
    # sooner. A small file's are done here after the header (`INLINE_DIGEST_BELOW`). Either way
    # the move into the blob store waits for the header: pydicom reads a deferred (large) value
    # again by the file's name.
    try:
        if path.stat().st_size < INLINE_DIGEST_BELOW:
            with open(path, "rb") as fp:
                checked = _read_and_check(fp, expected)
            digested = _digest_now(archive, path, arrival)
        else:
            digested = DIGEST_THREADS.pool().submit(_digest_and_presync, archive, path, arrival)
            try:
                with open(path, "rb") as fp:
                    checked = _read_and_check(fp, expected)
            finally:
                wait([digested])
    except BaseException:
        _drop_in_place(archive, arrival)
        raise
    try:
        return _keep(archive, path, origin, checked, digested, arrival)
    except errors.PergamonError as exc:
        exc.about(checked.sop_class, checked.sop_instance)
        raise


def _drop_in_place(archive: Archive, arrival: _Arrival) -> None:
    """Delete a blob the door wrote in place for an object that is not kept (refused, ignored, failed)."""
    if arrival.blob_key is not None:
        archive.blobs.delete(arrival.blob_key)


def _keep(
    archive: Archive, path: Path, origin: Origin, checked: _Checked, digested: Future[Digest], arrival: _Arrival
) -> StoreResult:
    """Put the checked object in the blob store and the index (as the duplicate policy says), durably."""
    record, transfer_syntax = checked.record, checked.transfer_syntax
    sop_class, sop_instance = checked.sop_class, checked.sop_instance
    study_uid, series_uid = checked.study_uid, checked.series_uid

    policy: DuplicatePolicy = archive.settings.dicom.duplicate_policy  # type: ignore[assignment]
    try:
        if policy != "replace":
            with archive.db.read() as conn:
                exists = find_instance(conn, sop_instance) is not None
            if exists and policy == "ignore":
                log.info("duplicate %s ignored (policy ignore)", sop_instance)
                _drop_in_place(archive, arrival)
                return StoreResult(StoreOutcome.DUPLICATE_IGNORED, sop_class, sop_instance, study_uid, series_uid)
            if exists:
                raise errors.Conflict(f"SOP Instance already stored (duplicate policy reject): {sop_instance}")
        size, digest = digested.result()
        if arrival.blob_key is not None:
            key = arrival.blob_key
        else:
            key = archive.blobs.put_file(path, move=arrival.move, presynced=arrival.move)
    except BaseException:
        _drop_in_place(archive, arrival)
        raise
    blob = BlobInfo(key=key, size=size, sha256=digest, transfer_syntax=transfer_syntax)
    try:
        with archive.db.write() as conn:
            replaced_key = add_instance(conn, record, blob, origin.as_dict())
    except BaseException:
        archive.blobs.delete(key)
        raise
    if replaced_key is not None and replaced_key != key:
        archive.blobs.delete(replaced_key)
    outcome = StoreOutcome.REPLACED if replaced_key else StoreOutcome.STORED
    archive.bus.emit(
        InstanceStored(
            sop_class_uid=sop_class,
            sop_instance_uid=sop_instance,
            study_uid=study_uid,
            series_uid=series_uid,
            patient_id=record.patient.columns["patient_id"],
            origin=origin,
            replaced=replaced_key is not None,
            issuer=record.patient.columns["issuer"],
            accession_number=record.study.columns.get("accession_number") or "",
        )
    )
    return StoreResult(outcome, sop_class, sop_instance, study_uid, series_uid)


class _Checked(NamedTuple):
    """What the store needs of a header that passed the checks."""

    record: ObjectRecord
    transfer_syntax: str
    sop_class: str
    sop_instance: str
    study_uid: str
    series_uid: str


class _Arrival(NamedTuple):
    """How the file reached the core: to be moved (else copied), already hashed, already in place."""

    move: bool
    digest: Digest | None
    blob_key: str | None


class _Expected(NamedTuple):
    """What the door was told the object is; None where it was told nothing."""

    sop_class: str | None
    sop_instance: str | None
    study: str | None


def _read_and_check(fp: BinaryIO, expected: _Expected) -> _Checked:
    """Read the header (never the pixel data) and check it; raises the error that refuses the object."""
    header, transfer_syntax = _read_header(fp)
    try:
        # Before `split_levels`: the check reads the header elements' recorded lengths, which
        # converting an element drops.
        _check_complete(fp, UID(transfer_syntax), header)
    except errors.PergamonError as exc:
        exc.about(*_uids_of(header))
        raise
    try:
        record = split_levels(header)
    except Exception as exc:
        raise _unreadable(exc) from exc

    # The UIDs as `split_levels` rendered them from the raw bytes: asking pydicom for them again
    # converts each one (a tenth of the header's cost for a small object).
    sop_class = _json_text(record.instance, 0x00080016)
    sop_instance = _json_text(record.instance, 0x00080018)
    study_uid = _json_text(record.study, 0x0020000D)
    series_uid = _json_text(record.series, 0x0020000E)
    try:
        missing = [
            keyword
            for keyword, value in zip(_REQUIRED, (sop_class, sop_instance, study_uid, series_uid), strict=True)
            if not value
        ]
        if missing:
            raise errors.MissingAttribute(f"missing required attribute(s): {', '.join(missing)}")
        if expected.sop_class and sop_class != expected.sop_class:
            raise errors.SOPClassMismatch(
                f"SOP Class UID differs from the command's: data set {sop_class}, command {expected.sop_class}"
            )
        if expected.sop_instance and sop_instance != expected.sop_instance:
            raise errors.SOPInstanceMismatch(
                f"SOP Instance UID differs from the command's: data set {sop_instance}, command {expected.sop_instance}"
            )
        if expected.study and study_uid != expected.study:
            raise errors.StudyMismatch(f"Study Instance UID {study_uid} differs from the target study {expected.study}")
    except errors.PergamonError as exc:
        exc.about(sop_class, sop_instance)
        raise
    return _Checked(record, transfer_syntax, sop_class, sop_instance, study_uid, series_uid)


def _read_header(fp: BinaryIO) -> tuple[Dataset, str]:
    """The object's header up to its pixel data (bulk values over 1 KiB left in the file) and its transfer syntax."""
    try:
        return read_header(fp)
    except Exception as exc:
        raise _unreadable(exc) from exc


def _unreadable(exc: Exception) -> errors.InvalidDataset:
    """The refusal of an object pydicom could not read (it raises many kinds on corrupt input)."""
    if isinstance(exc, InvalidDicomError):  # pydicom's text ends with advice about its own API ("force=True")
        return errors.InvalidDataset("not a readable DICOM object: not a Part-10 file (no 'DICM' prefix)")
    if isinstance(exc, (ValueError, KeyError, AttributeError, EOFError, OSError, LookupError)):
        return errors.InvalidDataset(f"not a readable DICOM object: {exc}")
    return errors.InvalidDataset(f"not a readable DICOM object: {type(exc).__name__}: {exc}")


def _json_text(level: LevelRecord, tag: int) -> str:
    """The (backslash-joined) string value of one element of a level's DICOM JSON; "" when absent or empty."""
    values = level.attrs.get(f"{tag:08X}", {}).get("Value")
    return "\\".join(str(value) for value in values) if values else ""


def _uids_of(header: Dataset) -> tuple[str, str]:
    """SOP Class and Instance UID of a header that failed a check, for the refusal's audit; "" if unreadable."""
    try:
        return str(header.get("SOPClassUID", "")), str(header.get("SOPInstanceUID", ""))
    except Exception:  # the header is already known to be bad; its UIDs only name it
        return "", ""


def _digest_now(archive: Archive, path: Path, arrival: _Arrival) -> Future[Digest]:
    """`_digest_and_presync` on this thread, as a finished Future (as if a pool thread had run it)."""
    done: Future[Digest] = Future()
    try:
        done.set_result(_digest_and_presync(archive, path, arrival))
    except Exception as exc:  # kept for `.result()`: raised where a pool thread's would be
        done.set_exception(exc)
    return done


def _digest_and_presync(archive: Archive, path: Path, arrival: _Arrival) -> Digest:
    """Size and SHA-256 of the file (as the door gave them, if it did); a file to be moved into
    the blob store is flushed first, one written in place is made durable where it is.

    The flush comes first because it waits without the GIL from its start, while the caller's
    thread still holds it for the header; the hashing after it may have to wait for the GIL.
    """
    if arrival.blob_key is not None:
        archive.blobs.settle(arrival.blob_key)
    elif arrival.move:
        archive.blobs.presync(path)
    return arrival.digest if arrival.digest is not None else _size_and_digest(path)


def _check_complete(fp: BinaryIO, transfer_syntax: UID, header: Dataset) -> None:
    """Raise InvalidDataset when the file ends inside a top-level data element.

    pydicom reads a file that was cut short (an interrupted copy, a full disk, a sender whose
    Pixel Data length lies) without complaint, and the header read stops before the pixel data,
    so without this check a truncated object would be stored as if whole. The header's elements
    are checked from the lengths the header read recorded; the rest of the file (pixel data and
    anything after it) is walked with seeks, never read, so memory stays flat for any size.
    Deflated data sets are not walked (the zlib stream would have to be inflated).
    """
    implicit_vr, little_endian = header.original_encoding
    if (transfer_syntax.is_transfer_syntax and transfer_syntax.is_deflated) or implicit_vr is None:
        return
    size = os.fstat(fp.fileno()).st_size
    try:
        start = _end_of_header(header, size)
        if start is None:  # where the header ends is not recorded: walk the data set from its start
            fp.seek(0)
            read_preamble(fp, False)
            read_dataset(fp, False, True, stop_when=lambda tag, _vr, _length: tag.group != 2)
            start = fp.tell()
        fp.seek(start)
        end_of_last = start
        for elem in data_element_generator(fp, implicit_vr, bool(little_endian), defer_size=256):
            if (isinstance(elem, RawDataElement) and _cut_short(elem, size)) or fp.tell() > size:
                raise _truncated(elem, size)
            end_of_last = fp.tell()
        if end_of_last < size:  # pydicom stops quietly at fewer than 8 bytes
            raise errors.InvalidDataset(f"truncated file: {size - end_of_last} byte(s) after the last element")
    except errors.InvalidDataset:
        raise
    except Exception as exc:  # a cut inside an element header or a delimited value
        raise errors.InvalidDataset(f"truncated or corrupt file: {type(exc).__name__}: {exc}") from exc


def _end_of_header(header: Dataset, size: int) -> int | None:
    """Where the header's last element ends in the file, after checking each element is whole.

    An element pydicom already converted (Specific Character Set, read at once) or one of
    undefined length has no recorded extent; the elements after it show it is whole. When such
    an element is the last one, None: the caller then walks the whole data set instead.
    """
    end, last_is_known = 0, False
    for elem in header.values():  # the raw elements as read: nothing is converted or read here
        if isinstance(elem, RawDataElement) and elem.length != 0xFFFFFFFF:
            if _cut_short(elem, size):
                raise _truncated(elem, size)
            if elem.value_tell + elem.length > end:
                end, last_is_known = elem.value_tell + elem.length, True
            continue
        where = getattr(elem, "file_tell", None)
        if where is None:
            return None
        if where >= end:
            end, last_is_known = where, False
    return end if last_is_known else None


def _cut_short(elem: RawDataElement, size: int) -> bool:
    """Whether a defined-length element's value runs past the file's end (read: fewer bytes than declared)."""
    if elem.length == 0xFFFFFFFF:
        return False
    if elem.value is None:  # deferred: only its place in the file is known
        return elem.value_tell + elem.length > size
    return len(elem.value) < elem.length


def _truncated(elem: RawDataElement | DataElement, size: int) -> errors.InvalidDataset:
    detail = ""
    if isinstance(elem, RawDataElement):
        detail = f" ({elem.length} bytes declared, {max(size - elem.value_tell, 0)} present)"
    return errors.InvalidDataset(f"truncated file: it ends inside {elem.tag}{detail}")


def _size_and_digest(path: Path) -> Digest:
    """Size and SHA-256 of the file, read in 1 MiB chunks (memory stays flat for any size)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return Digest(size, digest.hexdigest())
