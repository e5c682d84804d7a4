"""Retrieve: which stored instances a request designates, and in what form each one leaves.

Protocol-free back end of C-MOVE and C-GET (PS3.4 C.4.2, C.4.3; IHE RAD-16/17/31/45), and later
of WADO and routing. Three steps:

1. `parse_identifier` reads the retrieve keys of a C-MOVE / C-GET Identifier (PS3.4 C.4.2.2.1):
   the Query/Retrieve Level and the Unique Keys (PS3.4 C.6.1.1 / C.6.2.1). The unique key of the
   retrieve level is required; UID keys may hold a List of UIDs (C.2.2.2.2). Pergamon is lenient
   where it costs nothing: unique keys of higher levels narrow the match when present and are not
   required (UIDs are globally unique), and other keys are ignored. Wild cards and universal
   matching are refused, so no request can retrieve the whole archive by accident.
2. `locate` lists the stored instances that match, in a stable order.
3. `outgoing` gives each one as its stored file (bit for bit: the VNA promise) when the receiver
   accepts the stored transfer syntax, else as a Dataset decompressed to Explicit or Implicit VR
   Little Endian. Every instance passes through `prepare_outgoing` first: the single place where
   later changes kept in the index (patient updates, IOCM) are applied on the way out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom import Dataset, dcmread
from pydicom.pixels import get_encoder
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)
from sqlalchemy import Select, select

from pergamon.archive import codecs, errors, patients
from pergamon.archive.index.schema import INDEXED_KEYS, Level, instance, patient, series, study
from pergamon.archive.query import Constraint

if TYPE_CHECKING:
    from pergamon.archive.service import Archive

UNCOMPRESSED_FALLBACK = (str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian))
"""Syntaxes an instance is converted to when the receiver does not take the stored one, best first."""
LOSSLESS_ENCODINGS = tuple(ts for ts in (RLELossless, JPEGLSLossless, JPEG2000Lossless) if get_encoder(ts).is_available)
"""Compressed syntaxes `transcode` can write: lossless ones with an installed pydicom encoder."""
TRANSCODE_TARGETS = (*UNCOMPRESSED_FALLBACK, *(str(ts) for ts in LOSSLESS_ENCODINGS))

# Levels of each information model (PS3.4 C.3.1, C.3.2) and the unique key of each level.
STUDY_ROOT_LEVELS = (Level.STUDY, Level.SERIES, Level.IMAGE)
PATIENT_ROOT_LEVELS = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE)
UNIQUE_KEYS = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.IMAGE: "SOPInstanceUID",
}
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_MAX_UID_LIST = 1000


class CannotConvert(errors.PergamonError):
    """An instance cannot be put into any transfer syntax the receiver accepts."""

    code = "cannot-convert"


@dataclass(frozen=True)
class RetrieveRequest:
    """What to retrieve: a level and, per unique key, the values that match (any of them)."""

    level: Level
    keys: dict[str, tuple[str, ...]]
    patient_root: bool = False
    issuer_of_patient_id: str | None = None

    def describe(self) -> str:
        """A short text for logs: ``STUDY StudyInstanceUID=1.2.3 (+1 more)``."""
        parts = []
        for keyword, values in self.keys.items():
            more = f" (+{len(values) - 1} more)" if len(values) > 1 else ""
            parts.append(f"{keyword}={values[0]}{more}")
        return f"{self.level.value} {' '.join(parts)}".strip()


@dataclass(frozen=True)
class StoredInstance:
    """One stored object as the index knows it: enough to send it and to report on it."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    blob_key: str
    size: int
    study_uid: str
    series_uid: str
    patient_id: str
    patient_revision: int | None = None
    """Its patient's reconciliation count when it was located (`locate`); None: not known, look it up."""


@dataclass(frozen=True)
class Outgoing:
    """An instance ready to leave: its stored file (bit-preserving) or a Dataset, and its syntax."""

    content: Path | Dataset
    transfer_syntax: str

    @property
    def is_stored_file(self) -> bool:
        return isinstance(self.content, Path)


def parse_identifier(identifier: Dataset, *, patient_root: bool) -> RetrieveRequest:
    """The retrieve keys of a C-MOVE / C-GET Identifier (PS3.4 C.4.2.2.1, C.4.3.2.1).

    Raises:
        errors.InvalidQuery: no or unknown level for the information model, the level's unique key
            missing or empty, a malformed UID, a wild card, or several Patient IDs.
    """
    try:
        level_text = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    except Exception as exc:  # a malformed identifier surfaces on first access
        raise errors.InvalidQuery(f"unreadable identifier: {exc}") from exc
    allowed = PATIENT_ROOT_LEVELS if patient_root else STUDY_ROOT_LEVELS
    try:
        level = Level(level_text)
    except ValueError:
        raise errors.InvalidQuery(f"QueryRetrieveLevel {level_text!r} is not a retrieve level") from None
    if level not in allowed:
        model = "Patient Root" if patient_root else "Study Root"
        raise errors.InvalidQuery(f"QueryRetrieveLevel {level.value} does not exist in the {model} model")

    keys: dict[str, tuple[str, ...]] = {}
    for lvl in allowed[: allowed.index(level) + 1]:
        keyword = UNIQUE_KEYS[lvl]
        values = _key_values(identifier, keyword)
        if not values:
            if lvl is level:
                raise errors.InvalidQuery(f"{keyword} (the unique key of level {level.value}) is missing or empty")
            continue
        keys[keyword] = values
    issuer = None
    if "PatientID" in keys:
        issuer = str(identifier.get("IssuerOfPatientID", "") or "").strip() or None
    return RetrieveRequest(level=level, keys=keys, patient_root=patient_root, issuer_of_patient_id=issuer)


def _key_values(identifier: Dataset, keyword: str) -> tuple[str, ...]:
    """The values of one unique key, checked: UIDs well formed, no wild cards, one Patient ID."""
    try:
        value = identifier.get(keyword)
    except Exception as exc:
        raise errors.InvalidQuery(f"{keyword}: unreadable value ({exc})") from exc
    if value is None or value == "":
        return ()
    raw = (
        [str(v) for v in value]
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue"
        else (str(value).split("\\"))
    )
    values = tuple(dict.fromkeys(v.strip(" \0") for v in raw if v.strip(" \0")))
    if keyword == "PatientID":
        if len(values) > 1:
            raise errors.InvalidQuery("PatientID: a retrieve takes one Patient ID")
        if any(c in v for v in values for c in "*?"):
            raise errors.InvalidQuery("PatientID: wild cards are not allowed in retrieve keys")
        return values
    bad = [v for v in values if len(v) > 64 or not _UID.fullmatch(v)]
    if bad:
        raise errors.InvalidQuery(f"{keyword}: {bad[0]!r} is not a UID (wild cards are not allowed in retrieve keys)")
    if len(values) > _MAX_UID_LIST:
        raise errors.InvalidQuery(f"{keyword}: more than {_MAX_UID_LIST} UIDs in one request")
    return values


def build_locate_query(request: RetrieveRequest) -> Select[Any]:
    """SQL selecting the instances under every matching entity, in study/series/arrival order."""
    query: Select[Any] = (
        select(
            instance.c.sop_class_uid,
            instance.c.sop_uid,
            instance.c.transfer_syntax,
            instance.c.blob_key,
            instance.c.size,
            study.c.study_uid,
            series.c.series_uid,
            patient.c.patient_id,
            patient.c.revision,
        )
        .select_from(instance)
        .join(series, instance.c.series_fk == series.c.pk)
        .join(study, series.c.study_fk == study.c.pk)
        .join(patient, study.c.patient_fk == patient.c.pk)
    )
    tables = {Level.PATIENT: patient, Level.STUDY: study, Level.SERIES: series, Level.IMAGE: instance}
    for keyword, values in request.keys.items():
        key = INDEXED_KEYS[keyword]
        # Single Value / List of UID Matching exactly as C-FIND does it (PS3.4 C.2.2.2.1, C.2.2.2.2).
        clause = Constraint.parse(keyword, key.vr, "\\".join(values)).clause(tables[key.level].c[key.column])
        if clause is not None:
            query = query.where(clause)
    if request.issuer_of_patient_id is not None:
        query = query.where(patient.c.issuer == request.issuer_of_patient_id)
    return query.order_by(study.c.pk, series.c.pk, instance.c.pk)


def locate(archive: Archive, request: RetrieveRequest) -> list[StoredInstance]:
    """The stored instances the request designates (empty when nothing matches)."""
    with archive.db.read() as conn:
        rows = conn.execute(build_locate_query(request)).all()
    return [
        StoredInstance(
            sop_class_uid=row.sop_class_uid,
            sop_instance_uid=row.sop_uid,
            transfer_syntax=row.transfer_syntax,
            blob_key=row.blob_key,
            size=row.size,
            study_uid=row.study_uid,
            series_uid=row.series_uid,
            patient_id=row.patient_id,
            patient_revision=row.revision,
        )
        for row in rows
    ]


def prepare_outgoing(archive: Archive, stored: StoredInstance) -> Path | Dataset:
    """The instance as it must leave the archive: every outgoing instance passes through here.

    Its stored file, unchanged, unless the index holds later changes to apply (ARCHITECTURE.md
    "coercion on retrieve"): then a Dataset with them applied; senders handle both. Today that is
    patient reconciliation (`archive.patients`, IHE PIR): an object whose patient-level values differ
    from its patient's current ones leaves with the current ones. A patient never reconciled costs
    nothing when `locate` found it so (all objects of one retrieve leave as their patient was when
    the retrieve began), else one index query; the file is not opened.

    Raises:
        errors.NotFound: the stored object is missing from the blob store.
    """
    never_reconciled = stored.patient_revision == 0
    patch = None if never_reconciled else patients.outgoing_patch(archive, stored.sop_instance_uid)
    path = archive.blobs.path(stored.blob_key)
    if path is None:  # a store without local files: read it whole (no such store yet)
        with archive.blobs.open(stored.blob_key) as f:
            ds = dcmread(f)
        if patch is not None and patients.differs(ds, patch):
            patients.apply_patch(ds, patch)
        return ds
    if not path.is_file():
        raise errors.NotFound(f"stored object of {stored.sop_instance_uid} is missing ({stored.blob_key})")
    if patch is None or not patients.differs(dcmread(path, stop_before_pixels=True), patch):
        return path
    # Values longer than 64 KiB (pixel data) are read from the file only when the object is written out.
    ds = dcmread(path, defer_size="64 KB")
    patients.apply_patch(ds, patch)
    return ds


def outgoing(archive: Archive, stored: StoredInstance, accepted: Sequence[str]) -> Outgoing:
    """The instance in the best form for a receiver that accepts the `accepted` syntaxes.

    The stored syntax when accepted (the file itself if nothing is to be coerced), else the
    first of Explicit / Implicit VR Little Endian the receiver accepts, decompressing if needed.

    Raises:
        CannotConvert: no accepted syntax can be reached (e.g. video to an uncompressed-only
            receiver, a compressed object without a working decoder, nothing accepted at all).
        errors.NotFound: the stored object is missing.
    """
    content = prepare_outgoing(archive, stored)
    if stored.transfer_syntax in accepted:
        if isinstance(content, Dataset):
            content.file_meta.TransferSyntaxUID = UID(stored.transfer_syntax)
        return Outgoing(content, stored.transfer_syntax)
    target = next((ts for ts in UNCOMPRESSED_FALLBACK if ts in accepted), None)
    if target is None:
        raise CannotConvert(
            f"{stored.sop_instance_uid}: stored as {UID(stored.transfer_syntax).name}; the receiver accepts "
            f"neither it nor an uncompressed syntax ({', '.join(UID(ts).name for ts in accepted) or 'nothing'})"
        )
    return Outgoing(convert(content, stored, target), target)


def convert(content: Path | Dataset, stored: StoredInstance, target: str) -> Dataset:
    """The instance decoded into the uncompressed syntax `target` (PS3.5 A.1, A.2), UIDs unchanged.

    The SOP Instance UID is kept: decoding changes no pixel value. A lossy-compressed source
    stays marked so by its Lossy Image Compression attributes (PS3.3 C.7.6.1.1.5), copied as is.

    Raises:
        CannotConvert: the pixel data cannot be decoded (video, missing codec, corrupt data).
    """
    source = UID(stored.transfer_syntax)
    try:
        ds = dcmread(content) if isinstance(content, Path) else content
        if source.is_compressed:
            if "PixelData" not in ds:
                raise CannotConvert(f"{stored.sop_instance_uid}: compressed syntax {source.name} without Pixel Data")
            codecs.load()
            ds.decompress(generate_instance_uid=False)
        elif not source.is_little_endian:
            _swap_to_little_endian(ds)
    except CannotConvert:
        raise
    except Exception as exc:  # decoders raise many kinds (NotImplementedError, ValueError, RuntimeError...)
        raise CannotConvert(
            f"{stored.sop_instance_uid}: cannot decode {source.name} for a receiver that needs "
            f"{UID(target).name}: {type(exc).__name__}: {exc}"
        ) from exc
    # A fresh Dataset has no original encoding, so it is written in `target` with every element
    # converted from the encoding it was read in (each raw element carries its own).
    converted = Dataset()
    converted.update(ds)
    converted.file_meta = ds.file_meta
    converted.file_meta.TransferSyntaxUID = UID(target)
    return converted


def _swap_to_little_endian(ds: Dataset) -> None:
    """Re-express native pixel data read from Explicit VR Big Endian in little-endian byte order.

    pydicom converts the other elements' values when writing; OW pixel data is kept as bytes and
    must be swapped here. Other big-endian binary values (LUT data, overlays) are refused rather
    than sent wrong.
    """
    for elem in ds:
        if elem.VR in ("OW", "OF", "OD", "OL", "OV") and elem.tag != 0x7FE00010:
            raise CannotConvert(f"big endian {elem.keyword or elem.tag} cannot be converted safely")
    if "PixelData" in ds and ds["PixelData"].VR == "OW":
        arr = ds.pixel_array
        ds.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes()


def transcode(archive: Archive, stored: StoredInstance, target: str) -> Outgoing:
    """The instance in exactly the syntax `target`: as stored, decoded (`outgoing`), or re-encoded.

    Compressed targets are the lossless `TRANSCODE_TARGETS` only: the pixel values do not change,
    so the SOP Instance UID is kept (PS3.4 C.4.2 / PS3.5 8.2). Objects without Pixel Data just
    take the new syntax.

    Raises:
        CannotConvert: `target` cannot be written, or the pixel data cannot be decoded or encoded.
        errors.NotFound: the stored object is missing.
    """
    if target == stored.transfer_syntax or target in UNCOMPRESSED_FALLBACK:
        return outgoing(archive, stored, [target])
    if target not in TRANSCODE_TARGETS:
        raise CannotConvert(f"{stored.sop_instance_uid}: Pergamon cannot encode {UID(target).name}")
    decoded = outgoing(archive, stored, [str(ExplicitVRLittleEndian)])
    ds = dcmread(decoded.content) if isinstance(decoded.content, Path) else decoded.content
    try:
        if "PixelData" in ds:
            codecs.load()
            ds.compress(target, generate_instance_uid=False)
        else:
            ds.file_meta.TransferSyntaxUID = UID(target)
    except Exception as exc:  # encoders refuse some pixel formats (float, 1-bit, 32-bit ...)
        raise CannotConvert(
            f"{stored.sop_instance_uid}: cannot encode as {UID(target).name}: {type(exc).__name__}: {exc}"
        ) from exc
    return Outgoing(ds, target)
