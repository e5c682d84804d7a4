"""Metadata + bulk data -> a proper DICOM instance (IHE WIC, RAD-108; PS3.18 §10.5 "metadata and bulk data").

The second STOW-RS request form (PS3.18 §10.5.1.2.2 and §8.6.1.2.2) carries each instance as
DICOM JSON metadata (PS3.18 Annex F) whose bulk data elements point by `BulkDataURI` to other
body parts: a JPEG or PNG photograph, an MP4 / QuickTime video, a PDF. This module turns one
such metadata object into a Part-10 file that ingest stores like any other; it knows no HTTP
(the door resolves `BulkDataURI` to files and hands them in).

What is built (PS3.3 IODs):
- JPEG (baseline or extended, SOF0/SOF1): VL Photographic Image (A.32.4), the JPEG bit stream
  encapsulated unchanged as the single fragment of its one frame (PS3.5 §8.2.1, A.4); Secondary
  Capture (A.8.1) when its photometric interpretation is not one the VL Image Module allows.
- PNG: decoded (lossless) to native pixels, VL Photographic (or SC), Explicit VR Little Endian.
- MP4 / QuickTime with H.264 (High profile family, level <= 4.2) or HEVC (Main / Main 10):
  Video Photographic Image (A.32.7), the file encapsulated as-is with the MPEG-4 / HEVC transfer
  syntax its stream calls for (PS3.5 §8.2.8 / §8.2.11); rows, columns, frames and frame time
  come from the container.
- PDF: Encapsulated PDF (A.45.1).
- Anatomy is never invented: for Video Photographic the sender should give Anatomic Region
  Sequence (VL Image Module, Type 1C); without it the instance is stored as sent.
- No bulk data at all: the metadata is taken as a complete data set (e.g. a KOS) and written as is.

The content type is detected from the bulk data itself, never trusted from the part's declared
media type (IHE WIC note; dcm4chee issue #2051). Missing Study / Series / SOP Instance UIDs are
generated (the Study UID from the request URL first); missing Type 2 attributes of the IOD's
mandatory modules are added empty, missing Type 1 ones get their obvious values.
"""

from __future__ import annotations

import datetime as _dt
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import (
    HEVCM10P51,
    HEVCMP51,
    MPEG4HP41,
    MPEG4HP422D,
    UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    generate_uid,
)

from pergamon.archive import errors

VL_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4"
VIDEO_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"

PIXEL_DATA = 0x7FE00010
ENCAPSULATED_DOCUMENT = 0x00420011
MAX_INLINE_BULK = 16 << 20
"""Other bulk data elements (ICC profile, ...) are read into memory up to this size."""
MAX_DOCUMENT = 1 << 30
MAX_FRAGMENT = 0xFFFFFFFE
VL_PHOTOMETRIC = {"MONOCHROME2", "RGB", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT"}
"""PS3.3 C.8.12.1.1.2: what the VL Image Module allows (YBR_FULL is not among them)."""


class UnsupportedContent(errors.InvalidDataset):
    """The bulk data's encoding maps to no transfer syntax or IOD this archive can build."""

    code = "unsupported-content"


@dataclass(frozen=True)
class BulkData:
    """A bulk data body part, already on disk; `media_type` is what the sender declared."""

    path: Path
    media_type: str = ""


BulkResolver = Callable[[str], BulkData | None]


@dataclass(frozen=True)
class Built:
    """What `build_instance` wrote."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    transfer_syntax: str


# --- content detection --------------------------------------------------------------------------


def sniff(path: Path) -> str:
    """The content kind from the first bytes: jpeg, png, mp4, quicktime, pdf, or '' (unknown)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head[4:8] == b"ftyp":
        return "quicktime" if head[8:12] == b"qt  " else "mp4"
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free"):
        return "quicktime"
    return ""


@dataclass(frozen=True)
class JpegInfo:
    process: int  # the SOF marker's low nibble: 0 baseline, 1 extended, 2 progressive, 3 lossless...
    precision: int
    rows: int
    columns: int
    components: int
    subsampled: bool
    adobe_rgb: bool


def jpeg_info(path: Path) -> JpegInfo:
    """Walk the JPEG markers (ITU-T T.81 Annex B) up to the frame header; no pixel is decoded."""
    adobe_rgb = False
    with open(path, "rb") as f:
        if f.read(2) != b"\xff\xd8":
            raise errors.InvalidDataset("JPEG bulk data does not start with SOI")
        while True:
            marker = f.read(2)
            if len(marker) < 2 or marker[0] != 0xFF:
                raise errors.InvalidDataset("JPEG bulk data ends or breaks before its frame header")
            code = marker[1]
            if code == 0xFF:  # fill byte
                f.seek(-1, 1)
                continue
            (length,) = struct.unpack(">H", f.read(2))
            segment = f.read(length - 2)
            if code == 0xEE and segment.startswith(b"Adobe") and len(segment) >= 12:
                adobe_rgb = segment[11] == 0
            if 0xC0 <= code <= 0xCF and code not in (0xC4, 0xC8, 0xCC):
                precision, rows, columns, n = struct.unpack(">BHHB", segment[:6])
                factors = {segment[6 + 3 * i + 1] for i in range(n)}
                ids = bytes(segment[6 + 3 * i] for i in range(n))
                return JpegInfo(
                    process=code & 0x0F,
                    precision=precision,
                    rows=rows,
                    columns=columns,
                    components=n,
                    subsampled=len(factors) > 1,
                    adobe_rgb=adobe_rgb or ids == b"RGB",
                )


@dataclass(frozen=True)
class VideoInfo:
    codec: str  # avc or hevc
    profile: int
    level: int
    rows: int
    columns: int
    frames: int
    duration_s: float


def _boxes(data: bytes, start: int = 0, end: int | None = None) -> dict[bytes, list[bytes]]:
    """ISO/IEC 14496-12 boxes directly inside data[start:end], by type."""
    end = len(data) if end is None else end
    found: dict[bytes, list[bytes]] = {}
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1:
            (size,) = struct.unpack(">Q", data[pos + 8 : pos + 16])
            header = 16
        elif size == 0:
            size = end - pos
        if size < header:
            break
        found.setdefault(kind, []).append(data[pos + header : pos + size])
        pos += size
    return found


def _read_moov(f: BinaryIO) -> bytes:
    """The `moov` box's payload, found by seeking over the top-level boxes (mdat is never read)."""
    f.seek(0, 2)
    size_total = f.tell()
    pos = 0
    while pos + 8 <= size_total:
        f.seek(pos)
        size, kind = struct.unpack(">I4s", f.read(8))
        header = 8
        if size == 1:
            (size,) = struct.unpack(">Q", f.read(8))
            header = 16
        elif size == 0:
            size = size_total - pos
        if size < header:
            break
        if kind == b"moov":
            if size > 64 << 20:
                raise UnsupportedContent("MP4 'moov' box larger than 64 MiB")
            return f.read(size - header)
        pos += size
    raise errors.InvalidDataset("MP4 / QuickTime bulk data has no 'moov' box")


def video_info(path: Path) -> VideoInfo:
    """Codec, profile, level, size and frame count of the first video track of an MP4 / QuickTime file."""
    with open(path, "rb") as f:
        moov = _read_moov(f)
    for trak in _boxes(moov).get(b"trak", []):
        mdia = _boxes(trak).get(b"mdia", [b""])[0]
        mdia_boxes = _boxes(mdia)
        hdlr = mdia_boxes.get(b"hdlr", [b""])[0]
        if hdlr[8:12] != b"vide":
            continue
        mdhd = mdia_boxes[b"mdhd"][0]
        if mdhd[0] == 1:
            timescale, duration = struct.unpack(">IQ", mdhd[20:32])
        else:
            timescale, duration = struct.unpack(">II", mdhd[12:20])
        stbl = _boxes(_boxes(mdia_boxes[b"minf"][0])[b"stbl"][0])
        frames = struct.unpack(">I", stbl[b"stsz"][0][8:12])[0]
        stsd = stbl[b"stsd"][0]
        entries = _boxes(stsd, 8)
        for kind, payloads in entries.items():
            entry = payloads[0]
            columns, rows = struct.unpack(">HH", entry[24:28])
            children = _boxes(entry, 78)
            if kind in (b"avc1", b"avc3") and b"avcC" in children:
                avcc = children[b"avcC"][0]
                codec, profile, level = "avc", avcc[1], avcc[3]
            elif kind in (b"hvc1", b"hev1") and b"hvcC" in children:
                hvcc = children[b"hvcC"][0]
                codec, profile, level = "hevc", hvcc[1] & 0x1F, hvcc[12]
            else:
                raise UnsupportedContent(f"video codec {kind.decode('latin-1')!r} has no DICOM transfer syntax here")
            seconds = duration / timescale if timescale else 0.0
            return VideoInfo(codec, profile, level, rows, columns, frames, seconds)
    raise errors.InvalidDataset("MP4 / QuickTime bulk data has no video track")


def video_transfer_syntax(info: VideoInfo) -> str:
    """PS3.5 §8.2.8 / §8.2.11: the transfer syntax for the stream, or UnsupportedContent.

    H.264 Constrained Baseline, Main and High streams are all decodable by a High profile decoder,
    so they are labelled High Profile (Level 4.1, or 4.2 2D video); HEVC Main / Main 10 up to
    level 5.1. Anything else (higher levels, 10-bit H.264...) is refused, not mislabelled.
    """
    if info.codec == "avc" and info.profile in (66, 77, 100):
        if info.level <= 41:
            return MPEG4HP41
        if info.level == 42:
            return MPEG4HP422D
    if info.codec == "hevc" and info.level <= 153:
        if info.profile == 1:
            return HEVCMP51
        if info.profile == 2:
            return HEVCM10P51
    raise UnsupportedContent(
        f"{info.codec} profile {info.profile} level {info.level} matches no supported DICOM transfer syntax"
    )


# --- building -----------------------------------------------------------------------------------


def build_instance(metadata: Any, resolve: BulkResolver, out: Path, *, study_uid: str | None = None) -> Built:
    """Write the Part-10 instance that `metadata` (one PS3.18 Annex F JSON object) describes.

    `resolve(uri)` returns the body part a `BulkDataURI` names (or None); `study_uid` is the
    target study of the request, used when the metadata has none.

    Raises:
        errors.InvalidDataset: the metadata or a bulk data part cannot be understood.
        UnsupportedContent: the bulk data's encoding cannot be stored in a DICOM transfer syntax.
    """
    if not isinstance(metadata, dict):
        raise errors.InvalidDataset("each metadata item must be a DICOM JSON object")
    metadata = dict(metadata)
    bulk: dict[int, BulkData] = {}
    for key in list(metadata):
        value = metadata[key]
        if isinstance(value, dict) and "BulkDataURI" in value:
            try:
                tag = int(key, 16)
            except ValueError:
                raise errors.InvalidDataset(f"invalid attribute tag in metadata: {key!r}") from None
            if tag in (PIXEL_DATA, ENCAPSULATED_DOCUMENT):
                part = resolve(str(value["BulkDataURI"]))
                if part is None:
                    raise errors.InvalidDataset(f"BulkDataURI {value['BulkDataURI']!r} names no part of the request")
                bulk[tag] = part
                del metadata[key]

    def inline(_tag: str, _vr: str, uri: str) -> bytes:
        part = resolve(uri)
        if part is None:
            raise errors.InvalidDataset(f"BulkDataURI {uri!r} names no part of the request")
        if part.path.stat().st_size > MAX_INLINE_BULK:
            raise UnsupportedContent(f"bulk data {uri!r} is too large for an attribute other than Pixel Data")
        return part.path.read_bytes()

    try:
        ds = Dataset.from_json(metadata, bulk_data_uri_handler=inline)
    except errors.PergamonError:
        raise
    except Exception as exc:  # pydicom raises many kinds on malformed JSON models
        raise errors.InvalidDataset(f"metadata is not a valid DICOM JSON object: {type(exc).__name__}: {exc}") from exc
    for tag in [e.tag for e in ds if e.tag > PIXEL_DATA]:  # nothing may follow the appended Pixel Data
        del ds[tag]

    _identify(ds, study_uid)
    append: BulkData | None = None
    if PIXEL_DATA in bulk:
        part = bulk[PIXEL_DATA]
        kind = sniff(part.path)
        if kind == "jpeg":
            transfer_syntax = _from_jpeg(ds, part.path)
            append = part
        elif kind == "png":
            transfer_syntax = _from_png(ds, part.path)
        elif kind in ("mp4", "quicktime"):
            transfer_syntax = _from_video(ds, part.path)
            append = part
        else:
            raise UnsupportedContent(f"pixel data of media type {part.media_type or 'unknown'} is not supported")
    elif ENCAPSULATED_DOCUMENT in bulk:
        part = bulk[ENCAPSULATED_DOCUMENT]
        if sniff(part.path) != "pdf":
            raise UnsupportedContent(f"encapsulated document of media type {part.media_type or 'unknown'} is not PDF")
        transfer_syntax = _from_pdf(ds, part.path)
    else:
        if "SOPClassUID" not in ds:
            raise errors.InvalidDataset("metadata without bulk data must give its SOP Class UID")
        transfer_syntax = ExplicitVRLittleEndian
    _sop_common(ds)

    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    try:
        dcmwrite(out, ds, enforce_file_format=True)
    except Exception as exc:  # a value pydicom cannot encode (wrong VR, bad multiplicity...)
        raise errors.InvalidDataset(f"metadata cannot be encoded: {type(exc).__name__}: {exc}") from exc
    if append is not None:
        _append_encapsulated(out, append.path)
    return Built(out, str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.StudyInstanceUID), str(transfer_syntax))


def _identify(ds: Dataset, study_uid: str | None) -> None:
    """Generate the UIDs the sender left out (PS3.18 §10.5.1: the origin server may assign them)."""
    if not ds.get("StudyInstanceUID"):
        ds.StudyInstanceUID = study_uid or generate_uid()
    if not ds.get("SeriesInstanceUID"):
        ds.SeriesInstanceUID = generate_uid()
    if not ds.get("SOPInstanceUID"):
        ds.SOPInstanceUID = generate_uid()
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):  # Patient Module, Type 2
        ds.setdefault(keyword, None)
    for keyword in ("StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber"):
        ds.setdefault(keyword, None)  # General Study Module, Type 2
    ds.setdefault("SeriesNumber", None)
    ds.setdefault("Manufacturer", None)  # General Equipment Module, Type 2
    ds.setdefault("InstanceNumber", None)


def _now() -> tuple[str, str]:
    now = _dt.datetime.now()
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S")


def _image_common(ds: Dataset, sop_class: str, photometric: str) -> None:
    """General Image, Acquisition Context and VL Image (PS3.3 C.7.6.1, C.7.6.14, C.8.12.1) or SC."""
    if "SOPClassUID" not in ds:
        ds.SOPClassUID = (
            sop_class if photometric in VL_PHOTOMETRIC or sop_class != VL_PHOTOGRAPHIC else SECONDARY_CAPTURE
        )
    date, time = _now()
    ds.setdefault("ContentDate", date)
    ds.setdefault("ContentTime", time)
    ds.setdefault("PatientOrientation", None)
    ds.setdefault("Laterality", None)  # General Series, Type 2C: unknown here, so empty
    if ds.SOPClassUID in (VL_PHOTOGRAPHIC, VIDEO_PHOTOGRAPHIC):
        ds.setdefault("Modality", "XC")
        ds.setdefault("ImageType", ["ORIGINAL", "PRIMARY"])
        ds.setdefault("AcquisitionContextSequence", Sequence())
    else:
        ds.setdefault("Modality", "OT")
        ds.setdefault("ConversionType", "WSD")  # SC Equipment Module, Type 1
    ds.PhotometricInterpretation = photometric


def _from_jpeg(ds: Dataset, path: Path) -> str:
    """Describe the JPEG frame (PS3.5 §8.2.1); the stream itself is appended unchanged."""
    info = jpeg_info(path)
    if info.process not in (0, 1) or info.components not in (1, 3):
        raise UnsupportedContent(
            f"JPEG process SOF{info.process} with {info.components} component(s) has no DICOM transfer syntax here"
        )
    if info.components == 1:
        photometric = "MONOCHROME2"
    elif info.adobe_rgb:
        photometric = "RGB"
    else:
        photometric = "YBR_FULL_422" if info.subsampled else "YBR_FULL"
    _image_common(ds, VL_PHOTOGRAPHIC, photometric)
    ds.Rows, ds.Columns = info.rows, info.columns
    ds.SamplesPerPixel = info.components
    if info.components == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8 if info.precision <= 8 else 16
    ds.BitsStored = info.precision
    ds.HighBit = info.precision - 1
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    return JPEGBaseline8Bit if info.process == 0 and info.precision == 8 else JPEGExtended12Bit


def _from_png(ds: Dataset, path: Path) -> str:
    """Decode the PNG (lossless) into native pixels: DICOM has no PNG transfer syntax."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I"):
                array = np.asarray(image).astype("<u2")
                samples, bits = 1, 16
            elif image.mode in ("1", "L", "LA"):
                array = np.asarray(image.convert("L"))
                samples, bits = 1, 8
            else:
                array = np.asarray(image.convert("RGB"))
                samples, bits = 3, 8
    except (OSError, ValueError) as exc:
        raise errors.InvalidDataset(f"PNG bulk data cannot be decoded: {exc}") from exc
    _image_common(ds, VL_PHOTOGRAPHIC, "MONOCHROME2" if samples == 1 else "RGB")
    ds.Rows, ds.Columns = int(array.shape[0]), int(array.shape[1])
    ds.SamplesPerPixel = samples
    if samples == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "00"
    raw = array.tobytes()
    ds.PixelData = raw + b"\x00" if len(raw) % 2 else raw
    ds["PixelData"].VR = "OW" if bits == 16 else "OB"
    return ExplicitVRLittleEndian


def _from_video(ds: Dataset, path: Path) -> str:
    """Video Photographic (PS3.3 A.32.7) with the Cine and Multi-frame Modules filled from the container."""
    info = video_info(path)
    transfer_syntax = video_transfer_syntax(info)
    if path.stat().st_size > MAX_FRAGMENT:
        raise UnsupportedContent("video larger than 4 GiB needs a fragmentable transfer syntax")
    ds.setdefault("SOPClassUID", VIDEO_PHOTOGRAPHIC)
    _image_common(ds, VIDEO_PHOTOGRAPHIC, "YBR_PARTIAL_420")
    ds.Rows, ds.Columns = info.rows, info.columns
    ds.SamplesPerPixel = 3
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = max(info.frames, 1)
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    frame_time = info.duration_s * 1000 / max(info.frames, 1) if info.duration_s else 40.0
    ds.FrameTime = f"{frame_time:.4f}"
    ds.CineRate = max(round(1000 / frame_time), 1)
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_14496_10" if info.codec == "avc" else "ISO_23008_2"
    return transfer_syntax


def _from_pdf(ds: Dataset, path: Path) -> str:
    """Encapsulated PDF (PS3.3 A.45.1: Encapsulated Document Series, SC Equipment, Encapsulated Document)."""
    size = path.stat().st_size
    if size > MAX_DOCUMENT:
        raise UnsupportedContent("PDF larger than 1 GiB")
    ds.setdefault("SOPClassUID", ENCAPSULATED_PDF)
    ds.setdefault("Modality", "DOC")
    if ds.get("SeriesNumber") in (None, ""):
        ds.SeriesNumber = 1  # Type 1 in the Encapsulated Document Series Module
    if ds.get("InstanceNumber") in (None, ""):
        ds.InstanceNumber = 1
    ds.setdefault("ConversionType", "WSD")
    date, time = _now()
    ds.setdefault("ContentDate", date)
    ds.setdefault("ContentTime", time)
    ds.setdefault("AcquisitionDateTime", None)
    ds.setdefault("BurnedInAnnotation", "YES")
    ds.setdefault("DocumentTitle", None)
    ds.setdefault("ConceptNameCodeSequence", Sequence())
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    document = path.read_bytes()
    ds.EncapsulatedDocumentLength = size
    ds.EncapsulatedDocument = document + b"\x00" if size % 2 else document
    return ExplicitVRLittleEndian


def _sop_common(ds: Dataset) -> None:
    date, time = _now()
    ds.setdefault("SpecificCharacterSet", "ISO_IR 192")  # DICOM JSON is UTF-8 (PS3.18 F.2)
    ds.setdefault("InstanceCreationDate", date)
    ds.setdefault("InstanceCreationTime", time)


def _append_encapsulated(out: Path, source: Path) -> None:
    """Append Pixel Data (7FE0,0010) OB of undefined length: an empty Basic Offset Table item and
    the whole stream as one fragment, padded to even length (PS3.5 A.4); streamed, never loaded."""
    size = source.stat().st_size
    padded = size + (size % 2)
    with open(out, "ab") as f, open(source, "rb") as src:
        f.write(struct.pack("<HH2s2sI", 0x7FE0, 0x0010, b"OB", b"\0\0", 0xFFFFFFFF))
        f.write(struct.pack("<HHI", 0xFFFE, 0xE000, 0))
        f.write(struct.pack("<HHI", 0xFFFE, 0xE000, padded))
        shutil.copyfileobj(src, f, 1 << 20)
        if size % 2:
            f.write(b"\x00")
        f.write(struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
