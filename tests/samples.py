"""Pergamon test corpus: real, valid DICOM Part-10 files for archive tests.

Every public function writes files into a directory chosen by the caller (a
pytest ``tmp_path``) and returns :class:`Sample` records describing them.
Nothing is cached between calls and every call mints new UIDs (except
:func:`pydicom_samples`, which keeps the UIDs of pydicom's own files, see
there), so two calls never collide.

Public API
----------
``make_instance(sop_class, ...) -> Dataset``
    A synthetic instance of one storage SOP class with the key attributes of
    its IOD (Patient, General Study, General Series, General Equipment, SOP
    Common, Image Pixel / Multi-frame / Enhanced functional groups / SR
    content / waveform / encapsulated document, ...) already encoded in the
    requested transfer syntax (pixel data compressed with real encoders).
``write(ds, path) -> Sample``
    Writes ``ds`` as a Part-10 file (preamble, ``DICM``, File Meta) and
    describes it.
``storage_corpus(dest)``
    One file per SOP class / transfer syntax a PACS must store (see
    :data:`CORPUS_PLAN` for the list).
``pydicom_samples(dest)``
    Copies of the sample files shipped by pydicom and pydicom-data.
``charset_samples(dest)``
    Patient names encoded in ISO 2022 IR 87 / IR 13 / IR 149, ISO_IR 100,
    126, 127, 138, 144, 192 and GB18030, each with the expected Python str
    and raw bytes.
``big_multiframe(dest, size_bytes)``
    A multi-frame 16-bit instance of ~``size_bytes`` written without holding
    the pixels in memory.
``ct_series(dest, n)``
    ``n`` 512x512 16-bit CT slices of one series.
``make_kos(refs)``, ``make_rejection_note(refs)``
    Key Object Selection documents (IOCM rejection notes) referencing
    instances.

``storescu_commands(samples, host, port, workdir=...)``
    dcmtk storescu command lines that send files without transcoding.

Encoders: JPEG (baseline 8-bit, extended 12-bit, lossless P14 and SV1) and
JPEG-LS (lossless, near-lossless NEAR=2) by dcmtk ``dcmcjpeg`` / ``dcmcjpls``;
RLE and JPEG 2000 (lossless, lossy 10:1) by pydicom (pylibjpeg-openjpeg /
pylibjpeg-rle); deflate by pydicom.  Video objects carry a synthetic but
well-formed MPEG-2 / H.264 / HEVC elementary stream (start codes, sequence /
parameter sets, slices with random payload) that nobody can decode: an
archive stores and returns it verbatim.  External tools are looked up with
:func:`shutil.which`; a missing tool raises :class:`MissingToolError`.
The synthetic objects were checked with dicom3tools' ``dciodvfy``: no
errors apart from ones dciodvfy cannot know (deflate, HEVC syntax).
"""

from __future__ import annotations

import copy
import datetime as _dt
import re
import shutil
import struct
import subprocess
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydicom
from pydicom import uid as _uid
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, generate_uid

__all__ = [
    "BIG_ENDIAN_SYNTAXES",
    "CHARSET_CASES",
    "CORPUS_PLAN",
    "DEFAULT_PATIENT_ID",
    "DEFAULT_PATIENT_NAME",
    "KOS_DATA_RETENTION_POLICY_EXPIRED",
    "KOS_INCORRECT_MODALITY_WORKLIST_ENTRY",
    "KOS_OF_INTEREST",
    "KOS_REJECTED_FOR_PATIENT_SAFETY_REASONS",
    "KOS_REJECTED_FOR_QUALITY_REASONS",
    "LOSSY_SYNTAXES",
    "PYDICOM_FILES",
    "SOP_CLASSES",
    "VIDEO_SYNTAXES",
    "MissingToolError",
    "Sample",
    "big_multiframe",
    "big_multiframe_expected_chunk",
    "charset_samples",
    "ct_series",
    "make_instance",
    "make_kos",
    "make_rejection_note",
    "pixel_data_offset",
    "pydicom_samples",
    "sop_class_name",
    "storage_corpus",
    "storescu_commands",
    "write",
]

DEFAULT_PATIENT_ID = "PGM-0001"
DEFAULT_PATIENT_NAME = "Pergamon^Test"
STUDY_DATE = "20240315"
STUDY_TIME = "101500"
MANUFACTURER = "Pergamon"
MODEL = "Pergamon Test Corpus"

ExplicitVRLittleEndian = _uid.ExplicitVRLittleEndian
ImplicitVRLittleEndian = _uid.ImplicitVRLittleEndian
DeflatedExplicitVRLittleEndian = _uid.DeflatedExplicitVRLittleEndian

#: Transfer syntaxes whose Pixel Data is an MPEG/H.26x bit stream.
VIDEO_SYNTAXES = frozenset(
    {
        _uid.MPEG2MPML,
        _uid.MPEG2MPHL,
        _uid.MPEG4HP41,
        _uid.MPEG4HP41BD,
        _uid.MPEG4HP422D,
        _uid.MPEG4HP423D,
        _uid.MPEG4HP42STEREO,
        _uid.HEVCMP51,
        _uid.HEVCM10P51,
    }
)
BIG_ENDIAN_SYNTAXES = frozenset({_uid.ExplicitVRBigEndian})
#: Compressed transfer syntaxes that are lossy (everything else is lossless).
LOSSY_SYNTAXES = frozenset(
    {
        _uid.JPEGBaseline8Bit,
        _uid.JPEGExtended12Bit,
        _uid.JPEGLSNearLossless,
        _uid.JPEG2000,
        _uid.HTJ2K,
        _uid.JPEG2000MC,
        *VIDEO_SYNTAXES,
    }
)

# Transfer syntaxes encoded by pydicom itself (pylibjpeg-openjpeg / RLE)
_PYDICOM_ENCODED = {
    _uid.RLELossless,
    _uid.JPEG2000Lossless,
    _uid.JPEG2000,
}
# Transfer syntax -> dcmtk command line
_DCMTK_ENCODED: dict[str, list[str]] = {
    _uid.JPEGBaseline8Bit: ["dcmcjpeg", "+eb", "+un"],
    _uid.JPEGExtended12Bit: ["dcmcjpeg", "+ee", "+un"],
    _uid.JPEGLosslessSV1: ["dcmcjpeg", "+e1", "+un"],
    _uid.JPEGLossless: ["dcmcjpeg", "+el", "+un"],
    _uid.JPEGLSLossless: ["dcmcjpls", "+el", "+un"],
    _uid.JPEGLSNearLossless: ["dcmcjpls", "+en", "+md", "2", "+un"],
}

#: Key Object Selection document titles (CID 7010 / IHE IOCM).
KOS_OF_INTEREST = ("113000", "DCM", "Of Interest")
KOS_REJECTED_FOR_QUALITY_REASONS = ("113001", "DCM", "Rejected for Quality Reasons")
KOS_REJECTED_FOR_PATIENT_SAFETY_REASONS = (
    "113037",
    "DCM",
    "Rejected for Patient Safety Reasons",
)
KOS_INCORRECT_MODALITY_WORKLIST_ENTRY = (
    "113038",
    "DCM",
    "Incorrect Modality Worklist Entry",
)
KOS_DATA_RETENTION_POLICY_EXPIRED = ("113039", "DCM", "Data Retention Policy Expired")


class MissingToolError(RuntimeError):
    """An external program (dcmtk) needed to build a sample is not on PATH."""


# --------------------------------------------------------------------------
# Sample record
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One written DICOM file and what a test needs to know about it."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax: str
    patient_id: str
    description: str
    #: pydicom *in this environment* can decode the pixel data (native or
    #: compressed), so a retrieve test may ask for a transcoded copy and
    #: compare pixels.  False for objects without pixels (SR, PR, KO, ...),
    #: for video and for syntaxes without an installed decoder.
    pixels_decodable: bool = False
    modality: str = ""
    #: Patient's Name as a Python str, as the archive must return it.
    patient_name: str = ""
    #: (0008,0005) as written, multiple values joined with "\\".
    specific_character_set: str = ""
    #: For :func:`charset_samples`: the exact bytes of (0010,0010) in the
    #: file (from the DICOM standard's examples); b"" otherwise.
    encoded_patient_name: bytes = b""
    #: "synthetic", "pydicom:<file>" or "pydicom:<file> [changes]".
    origin: str = "synthetic"
    #: SOP Instance UIDs referenced by a KOS / PR / SR / SEG (if any).
    referenced_sop_instance_uids: tuple[str, ...] = ()
    number_of_frames: int = 1

    @property
    def is_compressed(self) -> bool:
        """Transfer syntax is encapsulated (compressed pixel data)."""
        return UID(self.transfer_syntax).is_compressed

    @property
    def is_lossy(self) -> bool:
        """Lossy transfer syntax (JPEG baseline/extended, JPEG-LS near, J2K, video)."""
        return self.transfer_syntax in LOSSY_SYNTAXES

    @property
    def is_video(self) -> bool:
        return self.transfer_syntax in VIDEO_SYNTAXES

    @property
    def size(self) -> int:
        return self.path.stat().st_size


# --------------------------------------------------------------------------
# SOP class registry
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Kind:
    name: str
    modality: str
    kind: str
    bits_allocated: int = 16
    bits_stored: int = 12
    samples: int = 1
    photometric: str = "MONOCHROME2"
    multiframe: bool = False  # IOD includes the Multi-frame module
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY")


_U = _uid
SOP_CLASSES: dict[str, _Kind] = {
    _U.ComputedRadiographyImageStorage: _Kind("CR", "CR", "cr"),
    _U.DigitalXRayImageStorageForPresentation: _Kind(
        "DX For Presentation", "DX", "dx", bits_stored=14
    ),
    _U.DigitalXRayImageStorageForProcessing: _Kind(
        "DX For Processing", "DX", "dx", bits_stored=14
    ),
    _U.DigitalMammographyXRayImageStorageForPresentation: _Kind(
        "MG For Presentation", "MG", "mg"
    ),
    _U.DigitalMammographyXRayImageStorageForProcessing: _Kind(
        "MG For Processing", "MG", "mg", bits_stored=14
    ),
    _U.BreastTomosynthesisImageStorage: _Kind(
        "Breast Tomosynthesis", "MG", "enhanced", multiframe=True,
        image_type=("ORIGINAL", "PRIMARY", "TOMOSYNTHESIS", "NONE"),
    ),
    _U.BreastProjectionXRayImageStorageForPresentation: _Kind(
        "Breast Projection For Presentation", "MG", "enhanced", multiframe=True,
        image_type=("ORIGINAL", "PRIMARY", "TOMO_PROJ", "NONE"),
    ),
    _U.BreastProjectionXRayImageStorageForProcessing: _Kind(
        "Breast Projection For Processing", "MG", "enhanced", multiframe=True,
        bits_stored=14, image_type=("ORIGINAL", "PRIMARY", "TOMO_PROJ", "NONE"),
    ),
    _U.CTImageStorage: _Kind(
        "CT", "CT", "ct", image_type=("ORIGINAL", "PRIMARY", "AXIAL")
    ),
    _U.EnhancedCTImageStorage: _Kind(
        "Enhanced CT", "CT", "enhanced", multiframe=True,
        image_type=("ORIGINAL", "PRIMARY", "AXIAL", "NONE"),
    ),
    _U.MRImageStorage: _Kind("MR", "MR", "mr"),
    _U.EnhancedMRImageStorage: _Kind(
        "Enhanced MR", "MR", "enhanced", multiframe=True,
        image_type=("ORIGINAL", "PRIMARY", "M", "NONE"),
    ),
    _U.NuclearMedicineImageStorage: _Kind(
        "NM", "NM", "nm", bits_stored=16, multiframe=True,
        image_type=("ORIGINAL", "PRIMARY", "STATIC", "EMISSION"),
    ),
    _U.PositronEmissionTomographyImageStorage: _Kind(
        "PET", "PT", "pet", bits_stored=16
    ),
    _U.UltrasoundImageStorage: _Kind(
        "US single-frame", "US", "us", bits_allocated=8, bits_stored=8,
        samples=3, photometric="RGB",
    ),
    _U.UltrasoundMultiFrameImageStorage: _Kind(
        "US multi-frame", "US", "us", bits_allocated=8, bits_stored=8,
        multiframe=True,
    ),
    _U.XRayAngiographicImageStorage: _Kind(
        "XA", "XA", "xa", bits_allocated=8, bits_stored=8, multiframe=True,
        image_type=("ORIGINAL", "PRIMARY", "SINGLE PLANE"),
    ),
    _U.XRayRadiofluoroscopicImageStorage: _Kind(
        "XRF", "RF", "xa", bits_stored=10, multiframe=True,
        image_type=("ORIGINAL", "PRIMARY", "SINGLE PLANE"),
    ),
    _U.TwelveLeadECGWaveformStorage: _Kind("12-lead ECG", "ECG", "waveform"),
    _U.GeneralECGWaveformStorage: _Kind("General ECG", "ECG", "waveform"),
    _U.GrayscaleSoftcopyPresentationStateStorage: _Kind("GSPS", "PR", "pr"),
    _U.ColorSoftcopyPresentationStateStorage: _Kind(
        "Color Softcopy Presentation State", "PR", "pr"
    ),
    _U.PseudoColorSoftcopyPresentationStateStorage: _Kind(
        "Pseudo-Color Softcopy Presentation State", "PR", "pr"
    ),
    _U.KeyObjectSelectionDocumentStorage: _Kind("Key Object Selection", "KO", "ko"),
    _U.BasicTextSRStorage: _Kind("Basic Text SR", "SR", "sr"),
    _U.EnhancedSRStorage: _Kind("Enhanced SR", "SR", "sr"),
    _U.ComprehensiveSRStorage: _Kind("Comprehensive SR", "SR", "sr"),
    _U.Comprehensive3DSRStorage: _Kind("Comprehensive 3D SR", "SR", "sr"),
    _U.MammographyCADSRStorage: _Kind("Mammography CAD SR", "SR", "sr"),
    _U.EncapsulatedPDFStorage: _Kind("Encapsulated PDF", "DOC", "doc"),
    _U.EncapsulatedCDAStorage: _Kind("Encapsulated CDA", "DOC", "doc"),
    _U.SegmentationStorage: _Kind("Segmentation", "SEG", "seg"),
    _U.ParametricMapStorage: _Kind("Parametric Map", "MR", "pm"),
    _U.SecondaryCaptureImageStorage: _Kind(
        "Secondary Capture", "OT", "sc", bits_allocated=8, bits_stored=8,
        image_type=("DERIVED", "SECONDARY"),
    ),
    _U.MultiFrameGrayscaleWordSecondaryCaptureImageStorage: _Kind(
        "Multi-frame Grayscale Word SC", "OT", "sc", multiframe=True,
        image_type=("DERIVED", "SECONDARY"),
    ),
    _U.VLPhotographicImageStorage: _Kind(
        "VL Photographic", "XC", "vl", bits_allocated=8, bits_stored=8, samples=3,
        photometric="RGB",
    ),
    _U.VideoPhotographicImageStorage: _Kind(
        "Video Photographic", "XC", "video", bits_allocated=8, bits_stored=8,
        samples=3, photometric="YBR_PARTIAL_420", multiframe=True,
    ),
    _U.VideoEndoscopicImageStorage: _Kind(
        "Video Endoscopic", "ES", "video", bits_allocated=8, bits_stored=8,
        samples=3, photometric="YBR_PARTIAL_420", multiframe=True,
    ),
    _U.RTStructureSetStorage: _Kind("RT Structure Set", "RTSTRUCT", "rtstruct"),
    _U.RTPlanStorage: _Kind("RT Plan", "RTPLAN", "rtplan"),
    _U.RTDoseStorage: _Kind(
        "RT Dose", "RTDOSE", "rtdose", bits_allocated=32, bits_stored=32,
        multiframe=True,
    ),
    _U.RawDataStorage: _Kind("Raw Data", "CT", "raw"),
}


def sop_class_name(sop_class: str) -> str:
    """Short human name of a SOP class ("MG For Presentation", ...)."""
    k = SOP_CLASSES.get(sop_class)
    return k.name if k else UID(sop_class).name


def _ts_name(ts: str) -> str:
    return {
        ImplicitVRLittleEndian: "Implicit VR LE",
        ExplicitVRLittleEndian: "Explicit VR LE",
        DeflatedExplicitVRLittleEndian: "Deflated Explicit VR LE",
        _uid.ExplicitVRBigEndian: "Explicit VR BE",
        _uid.JPEGBaseline8Bit: "JPEG Baseline 8-bit",
        _uid.JPEGExtended12Bit: "JPEG Extended 12-bit",
        _uid.JPEGLossless: "JPEG Lossless P14",
        _uid.JPEGLosslessSV1: "JPEG Lossless SV1",
        _uid.JPEGLSLossless: "JPEG-LS lossless",
        _uid.JPEGLSNearLossless: "JPEG-LS near-lossless",
        _uid.JPEG2000Lossless: "JPEG 2000 lossless",
        _uid.JPEG2000: "JPEG 2000",
        _uid.RLELossless: "RLE Lossless",
        _uid.MPEG2MPML: "MPEG-2 MP@ML",
        _uid.MPEG4HP41: "MPEG-4 AVC/H.264 HP@4.1",
        _uid.HEVCMP51: "HEVC/H.265 Main@5.1",
    }.get(ts, UID(ts).name)


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    d = Dataset()
    d.CodeValue = value
    d.CodingSchemeDesignator = scheme
    d.CodeMeaning = meaning
    return d


def _seq(*items: Dataset) -> DicomSequence:
    return DicomSequence(list(items))


def _now() -> tuple[str, str]:
    n = _dt.datetime.now()
    return n.strftime("%Y%m%d"), n.strftime("%H%M%S.%f")


def _has_pixels(ds: Dataset) -> bool:
    return any(
        k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
    )


def _value_type_for(ref: Dataset) -> str:
    if "WaveformSequence" in ref:
        return "WAVEFORM"
    if _has_pixels(ref) and ref.SOPClassUID not in (
        _uid.EncapsulatedPDFStorage,
        _uid.EncapsulatedCDAStorage,
    ):
        return "IMAGE"
    return "COMPOSITE"


def _sop_ref(ref: Dataset) -> Dataset:
    d = Dataset()
    d.ReferencedSOPClassUID = ref.SOPClassUID
    d.ReferencedSOPInstanceUID = ref.SOPInstanceUID
    return d


def _evidence(refs: Iterable[Dataset]) -> DicomSequence:
    """Hierarchical SOP Instance Reference Macro (study > series > SOP)."""
    studies: dict[str, dict[str, list[Dataset]]] = {}
    for r in refs:
        studies.setdefault(r.StudyInstanceUID, {}).setdefault(
            r.SeriesInstanceUID, []
        ).append(r)
    out = []
    for study_uid, series in studies.items():
        st = Dataset()
        st.StudyInstanceUID = study_uid
        st.ReferencedSeriesSequence = DicomSequence()
        for series_uid, insts in series.items():
            se = Dataset()
            se.SeriesInstanceUID = series_uid
            se.ReferencedSOPSequence = DicomSequence([_sop_ref(i) for i in insts])
            st.ReferencedSeriesSequence.append(se)
        out.append(st)
    return DicomSequence(out)


def _ref_series(refs: Iterable[Dataset], key: str = "ReferencedImageSequence"):
    """ReferencedSeriesSequence > SeriesInstanceUID + key > SOP refs."""
    series: dict[str, list[Dataset]] = {}
    for r in refs:
        series.setdefault(r.SeriesInstanceUID, []).append(r)
    out = []
    for series_uid, insts in series.items():
        se = Dataset()
        se.SeriesInstanceUID = series_uid
        setattr(se, key, DicomSequence([_sop_ref(i) for i in insts]))
        out.append(se)
    return DicomSequence(out)


def _needs_charset(*values: Any) -> bool:
    return any(isinstance(v, str) and not v.isascii() for v in values)


def _which(tool: str) -> str:
    exe = shutil.which(tool)
    if exe is None:
        raise MissingToolError(
            f"'{tool}' was not found on PATH. The Pergamon test corpus needs "
            "dcmtk (dcmcjpeg, dcmcjpls, dcmcrle, dcmdump, storescu); install "
            "it, e.g. 'apt-get install dcmtk'."
        )
    return exe


# --------------------------------------------------------------------------
# pixels
# --------------------------------------------------------------------------


def _synthetic_pixels(
    rows: int,
    cols: int,
    frames: int,
    samples: int,
    bits_allocated: int,
    bits_stored: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Cheap, deterministic, not-too-compressible image content.

    Returns an array shaped (frames, rows, cols[, samples]).
    """
    maxval = float((1 << bits_stored) - 1)
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    base = (x + y) / max(rows + cols - 2, 1) * maxval * 0.5
    r = np.hypot(y - rows / 2, x - cols / 2)
    disk = (r < min(rows, cols) / 4).astype(np.float32) * maxval * 0.4
    noise_max = max(int(maxval) // 64, 1)
    planes = []
    for f in range(frames):
        img = base + np.roll(disk, 2 * f, axis=1)
        img = img + rng.integers(0, noise_max + 1, (rows, cols))
        if samples == 3:
            img = np.stack(
                [img, np.roll(img, cols // 3, axis=1), maxval - img], axis=-1
            )
        planes.append(img)
    dtype = {8: np.uint8, 16: np.uint16, 32: np.uint32}[bits_allocated]
    return np.clip(np.stack(planes), 0, maxval).astype(dtype)


def _set_pixel_data(ds: Dataset, arr: np.ndarray, bits_allocated: int) -> None:
    data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    if len(data) % 2:
        data += b"\0"
    ds.add_new(0x7FE00010, "OB" if bits_allocated == 8 else "OW", data)


def _image_pixel_module(
    ds: Dataset,
    k: _Kind,
    rows: int,
    cols: int,
    frames: int,
    rng: np.random.Generator,
    pixels: np.ndarray | None,
) -> None:
    ds.SamplesPerPixel = k.samples
    ds.PhotometricInterpretation = k.photometric
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = k.bits_allocated
    ds.BitsStored = k.bits_stored
    ds.HighBit = k.bits_stored - 1
    ds.PixelRepresentation = 0
    if k.samples > 1:
        ds.PlanarConfiguration = 0
    if k.multiframe or frames > 1:
        ds.NumberOfFrames = frames
    if pixels is None:
        pixels = _synthetic_pixels(
            rows, cols, frames, k.samples, k.bits_allocated, k.bits_stored, rng
        )
    _set_pixel_data(ds, pixels, k.bits_allocated)


def _image_plane(
    ds: Dataset, z: float = 0.0, spacing: float = 0.7, thickness: float = 1.0
) -> None:
    ds.FrameOfReferenceUID = generate_uid()
    ds.PositionReferenceIndicator = ""
    ds.PixelSpacing = [spacing, spacing]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-100.0, -100.0, z]
    ds.SliceThickness = thickness
    ds.SliceLocation = z


# --------------------------------------------------------------------------
# IOD specific builders
# --------------------------------------------------------------------------


_BODY_PARTS = {
    "CR": "CHEST", "DX": "CHEST", "CT": "CHEST", "MR": "HEAD", "NM": "WHOLEBODY",
    "PT": "WHOLEBODY", "US": "ABDOMEN", "XA": "HEART", "RF": "ABDOMEN",
    "XC": "ABDOMEN", "ES": "COLON", "ECG": "HEART", "OT": "CHEST", "DOC": "",
    "SR": "", "KO": "", "PR": "", "SEG": "CHEST",
}
_BREAST = ("76752008", "SCT", "Breast")
_CC_VIEW = ("399162004", "SCT", "cranio-caudal")
_CHEST = ("51185008", "SCT", "Thorax")


def _build_xray_common(ds: Dataset, k: _Kind, sop_class: str) -> None:
    ds.KVP = 28 if k.modality == "MG" else 80
    ds.ExposureTime = 100
    ds.XRayTubeCurrent = 100
    ds.Exposure = 10
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY"
    ds.BurnedInAnnotation = "NO"
    ds.ImagerPixelSpacing = [0.1, 0.1]
    ds.DetectorType = "DIRECT"
    ds.PatientOrientation = ["A", "R"] if k.modality == "MG" else ["L", "F"]
    processing = "Processing" in k.name
    ds.PresentationIntentType = (
        "FOR PROCESSING" if processing else "FOR PRESENTATION"
    )
    if not processing:
        ds.WindowCenter = 1 << (k.bits_stored - 1)
        ds.WindowWidth = 1 << k.bits_stored
    ds.PositionerType = ""
    ds.AcquisitionContextSequence = DicomSequence()


def _build_mammo(ds: Dataset, laterality: str = "L") -> None:
    ds.ImageLaterality = laterality
    ds.BodyPartExamined = "BREAST"
    ds.ViewPosition = "CC"
    ds.ViewCodeSequence = _seq(_code(*_CC_VIEW))
    ds.ViewCodeSequence[0].ViewModifierCodeSequence = DicomSequence()
    ds.AnatomicRegionSequence = _seq(_code(*_BREAST))
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.OrganExposed = "BREAST"
    ds.BreastImplantPresent = "NO"
    ds.PartialView = "NO"
    ds.DistanceSourceToDetector = 650
    ds.DistanceSourceToPatient = 630
    ds.BodyPartThickness = 45
    ds.CompressionForce = 100
    ds.PositionerPrimaryAngle = 0
    ds.AnodeTargetMaterial = "TUNGSTEN"
    ds.FilterMaterial = "RHODIUM"


def _nm_pet_orientation(ds: Dataset) -> None:
    po = _code("102538003", "SCT", "recumbent")
    po.PatientOrientationModifierCodeSequence = _seq(
        _code("40199007", "SCT", "supine")
    )
    ds.PatientOrientationCodeSequence = _seq(po)
    ds.PatientGantryRelationshipCodeSequence = _seq(
        _code("102540008", "SCT", "headfirst")
    )


def _build_classic_image(ds, k, sop_class, rows, cols, frames, rng, pixels):
    ds.ImageType = list(k.image_type)
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.AcquisitionNumber = 1
    ds.AcquisitionDate = STUDY_DATE
    ds.AcquisitionTime = STUDY_TIME
    ds.PatientOrientation = ""
    kind = k.kind
    if kind == "cr":
        ds.BodyPartExamined = "CHEST"
        ds.ViewPosition = "PA"
        ds.ImagerPixelSpacing = [0.15, 0.15]
        ds.PatientOrientation = ["L", "F"]
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.RescaleType = "US"
    elif kind == "dx":
        _build_xray_common(ds, k, sop_class)
        ds.BodyPartExamined = "CHEST"
        ds.ViewPosition = "PA"
        ds.ImageLaterality = "U"
        ds.AnatomicRegionSequence = _seq(_code(*_CHEST))
        ds.ViewCodeSequence = _seq(_code("399348003", "SCT", "postero-anterior"))
    elif kind == "mg":
        _build_xray_common(ds, k, sop_class)
        _build_mammo(ds)
    elif kind == "ct":
        _image_plane(ds)
        ds.KVP = 120
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        ds.ConvolutionKernel = "STANDARD"
        ds.PatientPosition = "HFS"
        ds.BodyPartExamined = "CHEST"
    elif kind == "mr":
        _image_plane(ds, spacing=0.9, thickness=3.0)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = 500
        ds.EchoTime = 15
        ds.EchoTrainLength = 1
        ds.MagneticFieldStrength = 1.5
        ds.ImagingFrequency = 63.87
        ds.ImagedNucleus = "1H"
        ds.PatientPosition = "HFS"
    elif kind == "nm":
        ds.NumberOfEnergyWindows = 1
        ds.EnergyWindowVector = [1] * frames
        ds.NumberOfDetectors = 1
        ds.DetectorVector = [1] * frames
        ds.FrameIncrementPointer = [0x00540010, 0x00540020]
        ds.PixelSpacing = [2.0, 2.0]
        ds.EnergyWindowInformationSequence = _seq(Dataset())
        ew = Dataset()
        ew.EnergyWindowLowerLimit = 126
        ew.EnergyWindowUpperLimit = 154
        ds.EnergyWindowInformationSequence[0].EnergyWindowRangeSequence = _seq(ew)
        ds.DetectorInformationSequence = _seq(Dataset())
        ds.DetectorInformationSequence[0].ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.DetectorInformationSequence[0].ImagePositionPatient = [0, 0, 0]
        ds.DetectorInformationSequence[0].CollimatorType = "PARA"
        ds.PatientOrientation = ["L", "F"]
        ds.CountsAccumulated = 100000
        ds.ActualFrameDuration = 60000
        _nm_pet_orientation(ds)
        rp = Dataset()
        rp.Radiopharmaceutical = "Tc-99m MDP"
        rp.RadionuclideCodeSequence = _seq(_code("21613005", "SCT", "Technetium-99m"))
        ds.RadiopharmaceuticalInformationSequence = _seq(rp)
    elif kind == "pet":
        _image_plane(ds, spacing=4.0, thickness=4.0)
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.SeriesDate = STUDY_DATE
        ds.SeriesTime = STUDY_TIME
        ds.Units = "BQML"
        ds.CountsSource = "EMISSION"
        ds.SeriesType = ["STATIC", "IMAGE"]
        ds.CorrectedImage = ["DECY", "ATTN"]
        ds.DecayCorrection = "START"
        ds.RandomsCorrectionMethod = "NONE"
        ds.NumberOfSlices = 1
        ds.ImageIndex = 1
        ds.FrameReferenceTime = 0
        ds.ActualFrameDuration = 120000
        ds.DecayFactor = 1
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 0.5
        rp = Dataset()
        rp.Radiopharmaceutical = "Fluorodeoxyglucose"
        rp.RadionuclideTotalDose = 370000000
        rp.RadionuclideHalfLife = 6586.2
        rp.RadiopharmaceuticalStartTime = "090000"
        rp.RadionuclideCodeSequence = _seq(_code("77004003", "SCT", "^18^Fluorine"))
        ds.RadiopharmaceuticalInformationSequence = _seq(rp)
        ds.CollimatorType = "NONE"
        _nm_pet_orientation(ds)
    elif kind == "us":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL", "0001"]
        ds.PatientOrientation = ""
        if frames > 1 or k.multiframe:
            ds.FrameTime = 33.3
            ds.FrameIncrementPointer = 0x00181063
            ds.CineRate = 30
    elif kind == "xa":
        ds.KVP = 80
        ds.XRayTubeCurrent = 500
        ds.ExposureTime = 10
        ds.RadiationSetting = "GR"
        ds.PositionerMotion = "STATIC"
        ds.PositionerPrimaryAngle = 0
        ds.PositionerSecondaryAngle = 0
        ds.PixelIntensityRelationship = "LIN"
        ds.FrameTime = 66.7
        ds.FrameIncrementPointer = 0x00181063
        ds.CineRate = 15
        ds.DistanceSourceToDetector = 1100
        ds.ImagerPixelSpacing = [0.2, 0.2]
    elif kind == "sc":
        ds.ConversionType = "WSD"
        ds.PatientOrientation = ""
        if k.multiframe:
            ds.FrameIncrementPointer = 0x00181063
            ds.FrameTime = 33.3
            ds.RescaleIntercept = 0
            ds.RescaleSlope = 1
            ds.RescaleType = "US"
            ds.PresentationLUTShape = "IDENTITY"
    elif kind == "vl":
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.AcquisitionContextSequence = DicomSequence()
        ds.AnatomicRegionSequence = _seq(_code("39937001", "SCT", "Skin"))
    _image_pixel_module(ds, k, rows, cols, frames, rng, pixels)


def _item_of(**attrs: Any) -> Dataset:
    d = Dataset()
    for key, value in attrs.items():
        setattr(d, key, value)
    return d


def _enhanced_ct_macros(shared: Dataset) -> None:
    shared.CTAcquisitionTypeSequence = _seq(
        _item_of(AcquisitionType="SPIRAL", ConstantVolumeFlag="NO",
                 FluoroscopyFlag="NO")
    )
    shared.CTAcquisitionDetailsSequence = _seq(
        _item_of(DataCollectionDiameter=500, RevolutionTime=0.5,
                 SingleCollimationWidth=0.625, TotalCollimationWidth=40,
                 TableHeight=150, GantryDetectorTilt=0)
    )
    shared.CTTableDynamicsSequence = _seq(
        _item_of(TableSpeed=80, TableFeedPerRotation=40, SpiralPitchFactor=1)
    )
    shared.CTPositionSequence = _seq(
        _item_of(TablePosition=0, ReconstructionTargetCenterPatient=[0, 0, 0],
                 DataCollectionCenterPatient=[0, 0, 0])
    )
    shared.CTGeometrySequence = _seq(
        _item_of(DistanceSourceToDetector=1000, DistanceSourceToDataCollectionCenter=540)
    )
    shared.CTReconstructionSequence = _seq(
        _item_of(ReconstructionAlgorithm="FILTER_BACK_PROJ",
                 ConvolutionKernel="STANDARD", ConvolutionKernelGroup="SOFT_TISSUE",
                 ReconstructionDiameter=360,
                 ReconstructionPixelSpacing=[0.7, 0.7],
                 ReconstructionAngle=360, ImageFilter="NONE")
    )
    shared.CTExposureSequence = _seq(
        _item_of(ExposureTimeInms=500, XRayTubeCurrentInmA=200, ExposureInmAs=100,
                 ExposureModulationType="NONE", CTDIvol=5.0,
                 CTDIPhantomTypeCodeSequence=_seq(
                     _code("113691", "DCM", "IEC Body Dosimetry Phantom")))
    )
    shared.CTXRayDetailsSequence = _seq(
        _item_of(KVP=120, FocalSpots=[0.7], FilterType="BODY",
                 FilterMaterial="ALUMINUM", CalciumScoringMassFactorPatient=1)
    )


def _enhanced_mr_macros(shared: Dataset) -> None:
    shared.MRTimingAndRelatedParametersSequence = _seq(
        _item_of(RepetitionTime=500, FlipAngle=90, EchoTrainLength=1,
                 RFEchoTrainLength=1, GradientEchoTrainLength=0,
                 SpecificAbsorptionRateSequence=_seq(
                     _item_of(SpecificAbsorptionRateDefinition="IEC_WHOLE_BODY",
                              SpecificAbsorptionRateValue=0.5)),
                 GradientOutputType="DB_DT", GradientOutput=20,
                 OperatingModeSequence=_seq(
                     _item_of(OperatingModeType="STATIC FIELD",
                              OperatingMode="IEC_NORMAL")))
    )
    shared.MREchoSequence = _seq(_item_of(EffectiveEchoTime=15))
    shared.MRModifierSequence = _seq(
        _item_of(InversionRecovery="NO", FlowCompensation="NONE",
                 Spoiling="NONE", T2Preparation="NO",
                 SpectrallySelectedExcitation="NONE", SpatialPresaturation="NONE",
                 PartialFourier="NO", ParallelAcquisition="NO")
    )
    shared.MRImagingModifierSequence = _seq(
        _item_of(MagnetizationTransfer="NONE", BloodSignalNulling="NO",
                 Tagging="NONE", TransmitterFrequency=63.87,
                 PixelBandwidth=130)
    )
    shared.MRReceiveCoilSequence = _seq(
        _item_of(ReceiveCoilName="HEAD", ReceiveCoilManufacturerName=MANUFACTURER,
                 ReceiveCoilType="VOLUME", QuadratureReceiveCoil="YES")
    )
    shared.MRTransmitCoilSequence = _seq(
        _item_of(TransmitCoilName="BODY",
                 TransmitCoilManufacturerName=MANUFACTURER,
                 TransmitCoilType="BODY")
    )
    shared.MRAveragesSequence = _seq(_item_of(NumberOfAverages=1))
    shared.MRFOVGeometrySequence = _seq(
        _item_of(InPlanePhaseEncodingDirection="ROW",
                 MRAcquisitionFrequencyEncodingSteps=256,
                 MRAcquisitionPhaseEncodingStepsInPlane=256,
                 PercentSampling=100, PercentPhaseFieldOfView=100)
    )


def _enhanced_mg_top(ds: Dataset, k: _Kind) -> None:
    """Top-level attributes of the Breast Tomosynthesis / Projection IODs."""
    _build_mammo(ds)
    for kw in ("ViewPosition", "DistanceSourceToDetector",
               "DistanceSourceToPatient", "CompressionForce",
               "PositionerPrimaryAngle", "AnodeTargetMaterial", "FilterMaterial",
               "BodyPartThickness", "OrganExposed", "AnatomicRegionSequence",
               "PartialView"):
        if kw in ds:
            delattr(ds, kw)
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.DetectorType = "DIRECT"
    ds.DetectorActiveShape = "RECTANGLE"
    if k.name == "Breast Tomosynthesis":
        ds.PixelPresentation = "MONOCHROME"
        ds.VolumetricProperties = "VOLUME"
        ds.VolumeBasedCalculationTechnique = "NONE"
        return
    # Breast Projection X-Ray: Enhanced Mammography Image module
    ds.PresentationIntentType = (
        "FOR PROCESSING" if "Processing" in k.name else "FOR PRESENTATION"
    )
    ds.KVP = 28
    ds.PositionerMotion = "STATIC"
    ds.AcquisitionDuration = 1.0
    ds.XRayTubeCurrentInmA = 100
    ds.ExposureTimeInms = 1000
    ds.ExposureInmAs = 100
    ds.FocalSpots = [0.3]
    ds.PaddleDescription = "24x30 compression"
    ds.ExposureControlMode = "AUTOMATIC"
    ds.ExposureControlModeDescription = "AEC"
    ds.OrganDose = 1.2
    ds.EntranceDoseInmGy = 4.5
    ds.TypeOfDetectorMotion = "NONE"
    ds.PatientOrientationCodeSequence = _seq(_code("10904000", "SCT", "erect"))
    ds.AcquisitionDateTime = STUDY_DATE + STUDY_TIME
    ds.AnodeTargetMaterial = "TUNGSTEN"
    ds.FilterMaterial = "RHODIUM"
    ds.BodyPartThickness = 45
    ds.CompressionForce = 100
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = 1


def _breast_projection_macros(shared: Dataset, k: _Kind) -> None:
    shared.DerivationImageSequence = DicomSequence()
    shared.FieldOfViewSequence = _seq(
        _item_of(FieldOfViewShape="RECTANGLE", FieldOfViewDimensions=[240, 300],
                 FieldOfViewOrigin=[0, 0], FieldOfViewRotation=0,
                 FieldOfViewHorizontalFlip="NO")
    )
    shared.FramePixelDataPropertiesSequence = _seq(
        _item_of(FrameType=list(k.image_type), PixelDataAreaOriginRelativeToFOV=[0, 0],
                 PixelDataAreaRotationAngleRelativeToFOV=0,
                 ImagerPixelSpacing=[0.1, 0.1], GeometricalProperties="UNIFORM",
                 ImageProcessingApplied="NONE", PixelIntensityRelationship="LIN",
                 PixelIntensityRelationshipSign=1)
    )
    shared.CollimatorShapeSequence = _seq(
        _item_of(CollimatorShape="RECTANGULAR", CollimatorLeftVerticalEdge=0,
                 CollimatorRightVerticalEdge=2400, CollimatorUpperHorizontalEdge=0,
                 CollimatorLowerHorizontalEdge=3000)
    )
    shared.XRayGeometrySequence = _seq(
        _item_of(DistanceSourceToIsocenter=600, DistanceSourceToDetector=650,
                 DistanceSourceToPatient=630, FocalSpots=[0.3],
                 EstimatedRadiographicMagnificationFactor=1.03)
    )
    shared.XRayAcquisitionDoseSequence = _seq(
        _item_of(KVP=28, XRayTubeCurrentInmA=100, ExposureTimeInms=1000,
                 ExposureInmAs=100, DistanceSourceToDetector=650,
                 DistanceSourceToEntrance=610, EntranceDoseInmGy=4.5,
                 OrganDose=1.2, HalfValueLayer=0.5, BodyPartThickness=45,
                 CompressionForce=100, AnodeTargetMaterial="TUNGSTEN",
                 FilterMaterial="RHODIUM", FilterThicknessMinimum=0.05,
                 FilterThicknessMaximum=0.05)
    )
    shared.IsocenterReferenceSystemSequence = _seq(
        _item_of(XRaySourceIsocenterPrimaryAngle=0, XRaySourceIsocenterSecondaryAngle=0,
                 BreastSupportIsocenterPrimaryAngle=0,
                 BreastSupportIsocenterSecondaryAngle=0,
                 BreastSupportXPositionToIsocenter=0,
                 BreastSupportYPositionToIsocenter=0,
                 BreastSupportZPositionToIsocenter=-20,
                 DetectorIsocenterPrimaryAngle=0, DetectorIsocenterSecondaryAngle=0,
                 DetectorXPositionToIsocenter=0, DetectorYPositionToIsocenter=0,
                 DetectorZPositionToIsocenter=-30, DetectorActiveAreaTLHCPosition=[0, 0, 0],
                 DetectorActiveAreaOrientation=[1, 0, 0, 0, 1, 0],
                 DetectorActivationOffsetFromExposure=0)
    )


def _build_enhanced(ds, k, sop_class, rows, cols, frames, rng, pixels):
    """Enhanced CT/MR, Breast Tomosynthesis, Breast Projection X-Ray."""
    ds.ImageType = list(k.image_type)
    ds.AcquisitionNumber = 1
    ds.ContentQualification = "PRODUCT"
    ds.BurnedInAnnotation = "NO"
    ds.RecognizableVisualFeatures = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.AcquisitionContextSequence = DicomSequence()
    ds.ManufacturerModelName = MODEL
    ds.DeviceSerialNumber = "0001"
    ds.SoftwareVersions = "1.0"
    ds.FrameOfReferenceUID = generate_uid()
    ds.PositionReferenceIndicator = ""
    is_mg = k.modality == "MG"
    if is_mg:
        _enhanced_mg_top(ds, k)
    else:
        ds.AcquisitionDateTime = STUDY_DATE + STUDY_TIME
        ds.PatientPosition = "HFS"
        ds.AcquisitionDuration = 1.0
        ds.PixelPresentation = "MONOCHROME"
        ds.VolumetricProperties = "VOLUME"
        ds.VolumeBasedCalculationTechnique = "NONE"
    if k.modality == "CT":
        ds.KVP = 120
    if k.modality == "MR":
        ds.ComplexImageComponent = "MAGNITUDE"
        ds.AcquisitionContrast = "T1"
        ds.MagneticFieldStrength = 1.5
        ds.ResonantNucleus = "1H"
        ds.ImagingFrequency = 63.87
        ds.KSpaceFiltering = "NONE"
        ds.ApplicableSafetyStandardAgency = "IEC"
        ds.MRAcquisitionType = "2D"
        ds.SequenceName = "SE"
        ds.PulseSequenceName = "SE"
        ds.EchoPulseSequence = "SPIN"
        ds.MultipleSpinEcho = "NO"
        ds.MultiPlanarExcitation = "NO"
        ds.PhaseContrast = "NO"
        ds.TimeOfFlightContrast = "NO"
        ds.SteadyStatePulseSequence = "NONE"
        ds.EchoPlanarPulseSequence = "NO"
        ds.SaturationRecovery = "NO"
        ds.SpectrallySelectedSuppression = "NONE"
        ds.OversamplingPhase = "NONE"
        ds.GeometryOfKSpaceTraversal = "RECTILINEAR"
        ds.RectilinearPhaseEncodeReordering = "LINEAR"
        ds.SegmentedKSpaceTraversal = "SINGLE"
        ds.NumberOfKSpaceTrajectories = 1

    dim_uid = generate_uid()
    ds.DimensionOrganizationSequence = _seq(_item_of(DimensionOrganizationUID=dim_uid))
    ds.DimensionOrganizationType = "3D"
    ds.DimensionIndexSequence = DicomSequence(
        _item_of(
            DimensionOrganizationUID=dim_uid,
            DimensionIndexPointer=pointer,
            FunctionalGroupPointer=0x00209111,  # FrameContentSequence
        )
        for pointer in (0x00209056, 0x00209057)  # StackID, InStackPositionNumber
    )

    shared = Dataset()
    shared.PixelMeasuresSequence = _seq(
        _item_of(PixelSpacing=[0.1, 0.1] if is_mg else [0.7, 0.7], SliceThickness=1.0)
    )
    shared.PlaneOrientationSequence = _seq(
        _item_of(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
    )
    shared.FrameVOILUTSequence = _seq(
        _item_of(WindowCenter=1 << (k.bits_stored - 1), WindowWidth=1 << k.bits_stored)
    )
    shared.PixelValueTransformationSequence = _seq(
        _item_of(RescaleIntercept=-1024 if k.modality == "CT" else 0,
                 RescaleSlope=1, RescaleType="HU" if k.modality == "CT" else "US")
    )
    anatomy = _code(*_BREAST) if is_mg else _code(*_CHEST)
    shared.FrameAnatomySequence = _seq(
        _item_of(AnatomicRegionSequence=_seq(anatomy),
                 FrameLaterality="L" if is_mg else "U")
    )
    shared.IrradiationEventIdentificationSequence = _seq(
        _item_of(IrradiationEventUID=generate_uid())
    )
    frame_type = _item_of(FrameType=list(k.image_type))
    if k.modality == "CT":
        frame_type.PixelPresentation = "MONOCHROME"
        frame_type.VolumetricProperties = "VOLUME"
        frame_type.VolumeBasedCalculationTechnique = "NONE"
        shared.CTImageFrameTypeSequence = _seq(frame_type)
        _enhanced_ct_macros(shared)
    elif k.modality == "MR":
        frame_type.PixelPresentation = "MONOCHROME"
        frame_type.VolumetricProperties = "VOLUME"
        frame_type.VolumeBasedCalculationTechnique = "NONE"
        frame_type.ComplexImageComponent = "MAGNITUDE"
        frame_type.AcquisitionContrast = "T1"
        shared.MRImageFrameTypeSequence = _seq(frame_type)
        _enhanced_mr_macros(shared)
    elif k.name == "Breast Tomosynthesis":
        frame_type.PixelPresentation = "MONOCHROME"
        frame_type.VolumetricProperties = "VOLUME"
        frame_type.VolumeBasedCalculationTechnique = "NONE"
    else:
        _breast_projection_macros(shared, k)
    ds.SharedFunctionalGroupsSequence = _seq(shared)

    per_frame = []
    for i in range(frames):
        f = Dataset()
        f.FrameContentSequence = _seq(
            _item_of(
                StackID="1",
                InStackPositionNumber=i + 1,
                DimensionIndexValues=[1, i + 1],
                FrameAcquisitionDateTime=STUDY_DATE + STUDY_TIME,
                FrameReferenceDateTime=STUDY_DATE + STUDY_TIME,
                FrameAcquisitionDuration=100,
            )
        )
        f.PlanePositionSequence = _seq(
            _item_of(ImagePositionPatient=[-100.0, -100.0, float(i)])
        )
        if k.name == "Breast Tomosynthesis":
            f.XRay3DFrameTypeSequence = _seq(copy.deepcopy(frame_type))
        per_frame.append(f)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    _image_pixel_module(ds, k, rows, cols, frames, rng, pixels)


# ---- waveform ------------------------------------------------------------

_ECG_LEADS = [
    ("2:1", "Lead I"),
    ("2:2", "Lead II"),
    ("2:61", "Lead III"),
    ("2:62", "Lead aVR"),
    ("2:63", "Lead aVL"),
    ("2:64", "Lead aVF"),
    ("2:3", "Lead V1"),
    ("2:4", "Lead V2"),
    ("2:5", "Lead V3"),
    ("2:6", "Lead V4"),
    ("2:7", "Lead V5"),
    ("2:8", "Lead V6"),
]


def _build_waveform(ds, k, sop_class, rng, *, seconds: float = 2.0) -> None:
    twelve = sop_class == _uid.TwelveLeadECGWaveformStorage
    leads = _ECG_LEADS if twelve else _ECG_LEADS[:3]
    freq = 500
    n = int(freq * seconds)
    ds.AcquisitionDateTime = STUDY_DATE + STUDY_TIME
    ds.AcquisitionContextSequence = DicomSequence()
    ds.ManufacturerModelName = MODEL
    t = np.arange(n) / freq
    beat = np.exp(-(((t % 0.8) - 0.2) ** 2) / 0.0005) * 1000  # R-peaks, uV
    channels = []
    for i, _ in enumerate(leads):
        sig = beat * (1 - 0.1 * i) + 50 * np.sin(2 * np.pi * t * (i + 1))
        channels.append(sig + rng.normal(0, 5, n))
    data = np.stack(channels, axis=1).round().astype("<i2")  # interleaved
    mg = Dataset()
    mg.WaveformOriginality = "ORIGINAL"
    mg.NumberOfWaveformChannels = len(leads)
    mg.NumberOfWaveformSamples = n
    mg.SamplingFrequency = freq
    mg.MultiplexGroupLabel = "RHYTHM"
    defs = []
    for code, label in leads:
        c = Dataset()
        c.ChannelLabel = label
        c.ChannelStatus = "OK"
        src = _code(code, "MDC", label)
        src.CodingSchemeVersion = "1.0"
        c.ChannelSourceSequence = _seq(src)
        c.ChannelSensitivity = 1
        c.ChannelSensitivityUnitsSequence = _seq(_code("uV", "UCUM", "microvolt"))
        c.ChannelSensitivityCorrectionFactor = 1
        c.ChannelBaseline = 0
        c.ChannelTimeSkew = 0
        c.WaveformBitsStored = 16
        c.FilterLowFrequency = 0.05
        c.FilterHighFrequency = 150
        defs.append(c)
    mg.ChannelDefinitionSequence = DicomSequence(defs)
    mg.WaveformBitsAllocated = 16
    mg.WaveformSampleInterpretation = "SS"
    mg.add_new(0x54001010, "OW", data.tobytes())
    ds.WaveformSequence = _seq(mg)


# ---- presentation states ------------------------------------------------


def _icc_profile() -> bytes:
    try:
        from PIL import ImageCms

        return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    except Exception:  # pragma: no cover - Pillow without littlecms
        path = get_testdata_file("crayons.icc", download=False)
        if path is None:
            raise RuntimeError("no ICC profile available (install Pillow)") from None
        return Path(str(path)).read_bytes()


def _build_pr(ds, k, sop_class, refs: Sequence[Dataset]) -> None:
    """GSPS / Color / Pseudo-Color presentation state.

    The former "Presentation Label" / "Presentation Description" (0070,0080)
    / (0070,0081) are the Content Label / Content Description attributes
    (keywords ContentLabel, ContentDescription).
    """
    d, t = STUDY_DATE, STUDY_TIME
    if refs and refs[0].get("BodyPartExamined"):
        ds.BodyPartExamined = refs[0].BodyPartExamined
    ds.ContentLabel = "PGM_" + re.sub(r"[^A-Z0-9]", "_", k.name.upper())[:12]
    ds.ContentDescription = f"Pergamon {k.name}"
    ds.PresentationCreationDate = d
    ds.PresentationCreationTime = t
    ds.ContentCreatorName = "Reader^Rita"
    ds.ReferencedSeriesSequence = _ref_series(refs)
    area = Dataset()
    area.ReferencedImageSequence = DicomSequence([_sop_ref(r) for r in refs])
    rows = max((int(r.get("Rows", 64)) for r in refs), default=64)
    cols = max((int(r.get("Columns", 64)) for r in refs), default=64)
    area.DisplayedAreaTopLeftHandCorner = [1, 1]
    area.DisplayedAreaBottomRightHandCorner = [cols, rows]
    area.PresentationSizeMode = "SCALE TO FIT"
    area.PresentationPixelAspectRatio = [1, 1]
    ds.DisplayedAreaSelectionSequence = _seq(area)
    ds.ImageRotation = 0
    ds.ImageHorizontalFlip = "N"
    layer = Dataset()
    layer.GraphicLayer = "ANNOTATION"
    layer.GraphicLayerOrder = 1
    layer.GraphicLayerDescription = "Pergamon annotations"
    ds.GraphicLayerSequence = _seq(layer)
    ann = Dataset()
    ann.ReferencedImageSequence = DicomSequence([_sop_ref(r) for r in refs])
    ann.GraphicLayer = "ANNOTATION"
    txt = Dataset()
    txt.UnformattedTextValue = "Pergamon test annotation"
    txt.AnchorPointAnnotationUnits = "PIXEL"
    txt.AnchorPoint = [10.0, 10.0]
    txt.AnchorPointVisibility = "N"
    ann.TextObjectSequence = _seq(txt)
    ds.GraphicAnnotationSequence = _seq(ann)
    if sop_class == _uid.ColorSoftcopyPresentationStateStorage:
        ds.ICCProfile = _icc_profile()
        return
    # grayscale pipeline (GSPS and pseudo-color)
    first = refs[0] if refs else Dataset()
    if "RescaleSlope" in first:
        ds.RescaleIntercept = first.RescaleIntercept
        ds.RescaleSlope = first.RescaleSlope
        ds.RescaleType = first.get("RescaleType", "US")
    voi = Dataset()
    voi.ReferencedImageSequence = DicomSequence([_sop_ref(r) for r in refs])
    voi.WindowCenter = 40
    voi.WindowWidth = 400
    ds.SoftcopyVOILUTSequence = _seq(voi)
    if sop_class == _uid.PseudoColorSoftcopyPresentationStateStorage:
        ds.ICCProfile = _icc_profile()
        ramp = np.linspace(0, 65535, 256).astype("<u2")
        for color, lut in (
            ("Red", ramp),
            ("Green", ramp[::-1].copy()),
            ("Blue", np.roll(ramp, 128)),
        ):
            setattr(ds, f"{color}PaletteColorLookupTableDescriptor", [256, 0, 16])
            ds.add_new(
                pydicom.datadict.tag_for_keyword(
                    f"{color}PaletteColorLookupTableData"
                ),
                "OW",
                lut.tobytes(),
            )
    else:
        ds.PresentationLUTShape = "IDENTITY"


# ---- SR / KOS ------------------------------------------------------------


def _item(rel: str | None, vtype: str, concept, **attrs: Any) -> Dataset:
    d = Dataset()
    if rel:
        d.RelationshipType = rel
    d.ValueType = vtype
    d.ConceptNameCodeSequence = _seq(_code(*concept))
    for key, value in attrs.items():
        setattr(d, key, value)
    return d


def _ref_item(rel: str, ref: Dataset, concept=None) -> Dataset:
    vt = _value_type_for(ref)
    d = Dataset()
    d.RelationshipType = rel
    d.ValueType = vt
    if concept is not None:
        d.ConceptNameCodeSequence = _seq(_code(*concept))
    d.ReferencedSOPSequence = _seq(_sop_ref(ref))
    return d


def _num(rel, concept, value, unit=("mm", "UCUM", "millimeter")) -> Dataset:
    mv = Dataset()
    mv.NumericValue = value
    mv.MeasurementUnitsCodeSequence = _seq(_code(*unit))
    return _item(rel, "NUM", concept, MeasuredValueSequence=_seq(mv))


_SR_TITLES = {
    _uid.BasicTextSRStorage: ("11528-7", "LN", "Radiology Report"),
    _uid.EnhancedSRStorage: ("18748-4", "LN", "Diagnostic imaging report"),
    _uid.ComprehensiveSRStorage: ("18748-4", "LN", "Diagnostic imaging report"),
    _uid.Comprehensive3DSRStorage: ("126000", "DCM", "Imaging Measurement Report"),
    _uid.MammographyCADSRStorage: ("111036", "DCM", "Mammography CAD Report"),
}
_FINDINGS = ("121070", "DCM", "Findings")
_FINDING = ("121071", "DCM", "Finding")
_IMPRESSION = ("121072", "DCM", "Impressions")
_OBSERVER = ("121008", "DCM", "Person Observer Name")
_LENGTH = ("410668003", "SCT", "Length")


def _sr_content(sop_class: str, refs: Sequence[Dataset]) -> list[Dataset]:
    images = [r for r in refs if _value_type_for(r) == "IMAGE"]
    first_img = images[0] if images else None
    obs = _item(
        "HAS OBS CONTEXT", "PNAME", _OBSERVER, PersonName="Reader^Rita"
    )
    if sop_class == _uid.MammographyCADSRStorage:
        lib = _item(
            "CONTAINS", "CONTAINER", ("111028", "DCM", "Image Library"),
            ContinuityOfContent="SEPARATE",
        )
        lib.ContentSequence = DicomSequence(
            [_ref_item("CONTAINS", r) for r in images]
        )
        summary = _item(
            "CONTAINS", "CODE",
            ("111017", "DCM", "CAD Processing and Findings Summary"),
            ConceptCodeSequence=_seq(
                _code("111242", "DCM", "All algorithms succeeded; without findings")
            ),
        )
        return [lib, summary]
    text = _item(
        "CONTAINS", "TEXT", _FINDING, TextValue="No acute abnormality."
    )
    if first_img is not None:
        text.ContentSequence = _seq(_ref_item("INFERRED FROM", first_img))
    findings = _item(
        "CONTAINS", "CONTAINER", _FINDINGS, ContinuityOfContent="SEPARATE"
    )
    findings.ContentSequence = _seq(text)
    impression = _item(
        "CONTAINS", "CODE", _IMPRESSION,
        ConceptCodeSequence=_seq(_code("17621005", "SCT", "Normal")),
    )
    content = [obs, findings, impression]
    if sop_class in (_uid.EnhancedSRStorage, _uid.ComprehensiveSRStorage):
        num = _num("CONTAINS", _LENGTH, 12.5)
        if first_img is not None:
            sc = _item(
                "INFERRED FROM", "SCOORD", ("111030", "DCM", "Image Region"),
                GraphicType="POLYLINE",
                GraphicData=[10.0, 10.0, 30.0, 30.0],
            )
            sc.ContentSequence = _seq(_ref_item("SELECTED FROM", first_img))
            num.ContentSequence = _seq(sc)
        findings.ContentSequence.append(num)
    if sop_class == _uid.Comprehensive3DSRStorage:
        num = _num("CONTAINS", _LENGTH, 7.0)
        pt = _item(
            "INFERRED FROM", "SCOORD3D", ("111030", "DCM", "Image Region"),
            GraphicType="POINT",
            GraphicData=[1.0, 2.0, 3.0],
        )
        for_uid = (
            first_img.get("FrameOfReferenceUID") if first_img is not None else None
        )
        pt.ReferencedFrameOfReferenceUID = for_uid or generate_uid()
        num.ContentSequence = _seq(pt)
        findings.ContentSequence.append(num)
    return content


def _build_sr(ds, k, sop_class, refs, title) -> None:
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence()
    ds.PerformedProcedureCodeSequence = DicomSequence()
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    if sop_class == _uid.ComprehensiveSRStorage:
        ds.VerificationFlag = "VERIFIED"
        v = Dataset()
        v.VerifyingObserverName = "Verifier^Vera"
        v.VerifyingOrganization = "Pergamon Hospital"
        v.VerificationDateTime = STUDY_DATE + "120000"
        v.VerifyingObserverIdentificationCodeSequence = DicomSequence()
        ds.VerifyingObserverSequence = _seq(v)
    if refs:
        ds.CurrentRequestedProcedureEvidenceSequence = _evidence(refs)
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = _seq(_code(*(title or _SR_TITLES[sop_class])))
    ds.ContinuityOfContent = "SEPARATE"
    if sop_class == _uid.MammographyCADSRStorage:
        tpl = Dataset()
        tpl.MappingResource = "DCMR"
        tpl.TemplateIdentifier = "4000"
        ds.ContentTemplateSequence = _seq(tpl)
    ds.ContentSequence = DicomSequence(_sr_content(sop_class, refs))


def _build_ko(ds, k, sop_class, refs, title) -> None:
    title = title or KOS_OF_INTEREST
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence()
    ds.CurrentRequestedProcedureEvidenceSequence = _evidence(refs)
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = _seq(_code(*title))
    ds.ContinuityOfContent = "SEPARATE"
    tpl = Dataset()
    tpl.MappingResource = "DCMR"
    tpl.TemplateIdentifier = "2010"
    ds.ContentTemplateSequence = _seq(tpl)
    items = []
    if tuple(title) == KOS_OF_INTEREST:
        items.append(
            _item(
                "CONTAINS", "TEXT", ("113012", "DCM", "Key Object Description"),
                TextValue="Selected by the Pergamon test corpus",
            )
        )
    items.extend(_ref_item("CONTAINS", r) for r in refs)
    ds.ContentSequence = DicomSequence(items)


# ---- encapsulated documents -------------------------------------------


def _tiny_pdf(text: str = "Pergamon test document") -> bytes:
    """A minimal but well-formed one-page PDF 1.4 with a correct xref table."""
    content = b"BT /F1 12 Tf 10 50 Td (" + text.encode("latin-1") + b") Tj ET"
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 100] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
    offsets = []
    for i, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objs) + 1,
        xref,
    )
    return out


def _tiny_cda(doc_root: str, patient_id: str) -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3">
  <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>
  <id root="{doc_root}" extension="1"/>
  <code code="18748-4" codeSystem="2.16.840.1.113883.6.1"
        displayName="Diagnostic imaging report"/>
  <title>Pergamon test report</title>
  <effectiveTime value="{STUDY_DATE}{STUDY_TIME}"/>
  <confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>
  <recordTarget><patientRole><id extension="{patient_id}"
      root="1.2.3.4"/></patientRole></recordTarget>
  <component><nonXMLBody><text>No acute abnormality.</text></nonXMLBody>
  </component>
</ClinicalDocument>
""".encode()


def _build_doc(ds, k, sop_class, patient_id: str) -> None:
    ds.ConversionType = "WSD"
    ds.BurnedInAnnotation = "YES"
    ds.AcquisitionDateTime = STUDY_DATE + STUDY_TIME
    ds.ConceptNameCodeSequence = _seq(
        _code("18748-4", "LN", "Diagnostic imaging report")
    )
    if sop_class == _uid.EncapsulatedPDFStorage:
        doc = _tiny_pdf()
        ds.DocumentTitle = "Pergamon test PDF"
        ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    else:
        root = generate_uid()
        doc = _tiny_cda(root, patient_id)
        ds.DocumentTitle = "Pergamon test CDA"
        ds.MIMETypeOfEncapsulatedDocument = "text/XML"
        ds.HL7InstanceIdentifier = f"{root}^1"
    ds.EncapsulatedDocumentLength = len(doc)
    if len(doc) % 2:
        doc += b"\0"
    ds.add_new(0x00420011, "OB", doc)


# ---- RT ------------------------------------------------------------------


def _build_rtstruct(ds, refs: Sequence[Dataset]) -> None:
    img = refs[0] if refs else None
    for_uid = (img.get("FrameOfReferenceUID") if img else None) or generate_uid()
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = ""
    ds.StructureSetLabel = "PGM_STRUCT"
    ds.StructureSetName = "Pergamon"
    ds.StructureSetDate = STUDY_DATE
    ds.StructureSetTime = STUDY_TIME
    rfor = Dataset()
    rfor.FrameOfReferenceUID = for_uid
    if img is not None:
        st = Dataset()
        st.ReferencedSOPClassUID = _DETACHED_STUDY
        st.ReferencedSOPInstanceUID = img.StudyInstanceUID
        se = Dataset()
        se.SeriesInstanceUID = img.SeriesInstanceUID
        se.ContourImageSequence = _seq(_sop_ref(img))
        st.RTReferencedSeriesSequence = _seq(se)
        rfor.RTReferencedStudySequence = _seq(st)
    ds.ReferencedFrameOfReferenceSequence = _seq(rfor)
    roi = Dataset()
    roi.ROINumber = 1
    roi.ReferencedFrameOfReferenceUID = for_uid
    roi.ROIName = "BODY"
    roi.ROIGenerationAlgorithm = "MANUAL"
    ds.StructureSetROISequence = _seq(roi)
    contour = Dataset()
    contour.ContourGeometricType = "CLOSED_PLANAR"
    pts = [-20.0, -20.0, 0.0, 20.0, -20.0, 0.0, 20.0, 20.0, 0.0, -20.0, 20.0, 0.0]
    contour.NumberOfContourPoints = len(pts) // 3
    contour.ContourData = pts
    if img is not None:
        contour.ContourImageSequence = _seq(_sop_ref(img))
    rc = Dataset()
    rc.ReferencedROINumber = 1
    rc.ROIDisplayColor = [255, 0, 0]
    rc.ContourSequence = _seq(contour)
    ds.ROIContourSequence = _seq(rc)
    obs = Dataset()
    obs.ObservationNumber = 1
    obs.ReferencedROINumber = 1
    obs.RTROIInterpretedType = "EXTERNAL"
    obs.ROIInterpreter = ""
    ds.RTROIObservationsSequence = _seq(obs)
    ds.ApprovalStatus = "UNAPPROVED"


def _build_rtplan(ds, refs: Sequence[Dataset]) -> None:
    ds.FrameOfReferenceUID = generate_uid()
    ds.PositionReferenceIndicator = ""
    ds.RTPlanLabel = "PGM_PLAN"
    ds.RTPlanName = "Pergamon plan"
    ds.RTPlanDate = STUDY_DATE
    ds.RTPlanTime = STUDY_TIME
    ds.RTPlanGeometry = "PATIENT"
    ds.ApprovalStatus = "UNAPPROVED"
    structs = [r for r in refs if r.SOPClassUID == _uid.RTStructureSetStorage]
    if structs:
        ds.FrameOfReferenceUID = structs[0].ReferencedFrameOfReferenceSequence[
            0
        ].FrameOfReferenceUID
        ds.ReferencedStructureSetSequence = DicomSequence(
            [_sop_ref(s) for s in structs]
        )
    else:
        fake = Dataset()
        fake.ReferencedSOPClassUID = _uid.RTStructureSetStorage
        fake.ReferencedSOPInstanceUID = generate_uid()
        ds.ReferencedStructureSetSequence = _seq(fake)
    setup = Dataset()
    setup.PatientSetupNumber = 1
    setup.PatientPosition = "HFS"
    ds.PatientSetupSequence = _seq(setup)
    rb = Dataset()
    rb.ReferencedBeamNumber = 1
    rb.BeamMeterset = 100
    fg = Dataset()
    fg.FractionGroupNumber = 1
    fg.NumberOfFractionsPlanned = 30
    fg.NumberOfBeams = 1
    fg.NumberOfBrachyApplicationSetups = 0
    fg.ReferencedBeamSequence = _seq(rb)
    ds.FractionGroupSequence = _seq(fg)
    beam = Dataset()
    beam.BeamNumber = 1
    beam.BeamName = "AP"
    beam.BeamType = "STATIC"
    beam.RadiationType = "PHOTON"
    beam.TreatmentMachineName = "LINAC1"
    beam.PrimaryDosimeterUnit = "MU"
    beam.SourceAxisDistance = 1000
    beam.TreatmentDeliveryType = "TREATMENT"
    beam.NumberOfWedges = 0
    beam.NumberOfCompensators = 0
    beam.NumberOfBoli = 0
    beam.NumberOfBlocks = 0
    beam.FinalCumulativeMetersetWeight = 1
    beam.NumberOfControlPoints = 2
    jaws = []
    for name in ("ASYMX", "ASYMY"):
        bld = Dataset()
        bld.RTBeamLimitingDeviceType = name
        bld.NumberOfLeafJawPairs = 1
        jaws.append(bld)
    beam.BeamLimitingDeviceSequence = DicomSequence(jaws)
    beam.ReferencedPatientSetupNumber = 1
    cps = []
    for i, weight in enumerate((0, 1)):
        cp = Dataset()
        cp.ControlPointIndex = i
        cp.CumulativeMetersetWeight = weight
        if i == 0:
            cp.NominalBeamEnergy = 6
            cp.GantryAngle = 0
            cp.GantryRotationDirection = "NONE"
            cp.BeamLimitingDeviceAngle = 0
            cp.BeamLimitingDeviceRotationDirection = "NONE"
            cp.PatientSupportAngle = 0
            cp.PatientSupportRotationDirection = "NONE"
            cp.TableTopEccentricAngle = 0
            cp.TableTopEccentricRotationDirection = "NONE"
            cp.IsocenterPosition = [0, 0, 0]
        cps.append(cp)
    beam.ControlPointSequence = DicomSequence(cps)
    ds.BeamSequence = _seq(beam)


def _build_rtdose(ds, k, refs, rows, cols, frames, rng, pixels) -> None:
    _image_plane(ds, spacing=2.5, thickness=2.5)
    del ds.SliceLocation
    plans = [r for r in refs if r.SOPClassUID == _uid.RTPlanStorage]
    if plans:
        ds.FrameOfReferenceUID = plans[0].FrameOfReferenceUID
        ds.ReferencedRTPlanSequence = DicomSequence([_sop_ref(p) for p in plans])
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = "PLAN"
    ds.DoseGridScaling = 1e-6
    ds.GridFrameOffsetVector = [float(2.5 * i) for i in range(frames)]
    ds.FrameIncrementPointer = 0x3004000C
    _image_pixel_module(ds, k, rows, cols, frames, rng, pixels)


def _build_raw(ds) -> None:
    ds.CreatorVersionUID = generate_uid()
    ds.AcquisitionDateTime = STUDY_DATE + STUDY_TIME
    ds.AcquisitionContextSequence = DicomSequence()
    block = ds.private_block(0x0009, "PERGAMON RAW", create=True)
    block.add_new(0x10, "LO", "sinogram")
    block.add_new(0x11, "OB", bytes(range(256)) * 8)


# ---- video ---------------------------------------------------------------


def _nonzero(rng: np.random.Generator, n: int) -> bytes:
    """Payload bytes without 0x00, so no start code emulation can occur."""
    return rng.integers(1, 256, n, dtype=np.uint8).tobytes()


def _fake_mpeg2(rng, rows: int, cols: int, frames: int) -> bytes:
    # sequence_header: 12-bit width/height, aspect 4:3 (2), 29.97 Hz (4)
    hdr = (cols << 12 | rows).to_bytes(3, "big") + bytes([0x24])
    hdr += bytes([0xFF, 0xFF, 0xE0, 0x18])  # bit_rate, marker, vbv, flags
    out = b"\x00\x00\x01\xb3" + hdr
    out += b"\x00\x00\x01\xb5\x14\x8a\x00\x01\x00\x00"  # seq. extension MP@ML
    out += b"\x00\x00\x01\xb8\x00\x08\x00\x00"  # GOP header
    for i in range(frames):
        ptype = 1 if i == 0 else 2
        out += b"\x00\x00\x01\x00" + bytes([i >> 2 & 0xFF, (i & 3) << 6 | ptype << 3])
        out += b"\xff\xf8"
        for slice_no in range(1, 4):
            out += b"\x00\x00\x01" + bytes([slice_no]) + _nonzero(rng, 120)
    return out + b"\x00\x00\x01\xb7"


def _fake_h264(rng, rows: int, cols: int, frames: int) -> bytes:
    sc = b"\x00\x00\x00\x01"
    out = sc + b"\x09\xf0"  # access unit delimiter
    out += sc + b"\x67\x64\x00\x29\xac\x2c\xa5" + _nonzero(rng, 12)  # SPS HP@4.1
    out += sc + b"\x68\xeb\xe3\xcb\x22\xc0"  # PPS
    for i in range(frames):
        if i:
            out += sc + b"\x09\x30"
        nal = b"\x65\x88" if i == 0 else b"\x41\x9a"  # IDR / non-IDR slice
        out += sc + nal + _nonzero(rng, 400 if i == 0 else 120)
    return out


def _fake_hevc(rng, rows: int, cols: int, frames: int) -> bytes:
    sc = b"\x00\x00\x00\x01"
    out = sc + b"\x40\x01\x0c\x01\xff\xff\x01\x60" + _nonzero(rng, 16)  # VPS
    out += sc + b"\x42\x01\x01\x01\x60" + _nonzero(rng, 30)  # SPS Main
    out += sc + b"\x44\x01\xc1\x72\xb4\x62\x40"  # PPS
    for i in range(frames):
        nal = b"\x26\x01" if i == 0 else b"\x02\x01"  # IDR_W_RADL / TRAIL_R
        out += sc + nal + _nonzero(rng, 400 if i == 0 else 120)
    return out


_VIDEO_DEFAULTS = {
    _uid.MPEG2MPML: (480, 720, _fake_mpeg2, "ISO_13818_2"),
    _uid.MPEG2MPHL: (1080, 1920, _fake_mpeg2, "ISO_13818_2"),
    _uid.MPEG4HP41: (720, 1280, _fake_h264, "ISO_14496_10"),
    _uid.MPEG4HP41BD: (1080, 1920, _fake_h264, "ISO_14496_10"),
    _uid.HEVCMP51: (1080, 1920, _fake_hevc, "ISO_23008_2"),
    _uid.HEVCM10P51: (1080, 1920, _fake_hevc, "ISO_23008_2"),
}


def _build_video(ds, k, ts: str, frames: int, rng) -> None:
    if ts not in _VIDEO_DEFAULTS:
        raise ValueError(
            f"{k.name} needs a video transfer syntax, one of "
            f"{sorted(_VIDEO_DEFAULTS)}; got {ts}"
        )
    rows, cols, gen, method = _VIDEO_DEFAULTS[ts]
    stream = gen(rng, rows, cols, frames)
    if len(stream) % 2:
        stream += b"\0"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PatientOrientation = ""
    ds.AcquisitionContextSequence = DicomSequence()
    ds.AnatomicRegionSequence = _seq(_code("39937001", "SCT", "Skin"))
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = method
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_PARTIAL_420"
    ds.PlanarConfiguration = 0
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063
    ds.FrameTime = 33.3667
    ds.CineRate = 30
    ds.RecommendedDisplayFrameRate = 30
    ds.PreferredPlaybackSequencing = 0
    ds.add_new(0x7FE00010, "OB", encapsulate([stream], has_bot=False))
    ds["PixelData"].is_undefined_length = True


# ---- highdicom based ----------------------------------------------------


def _hd_common(
    ds_like: Dataset, series_uid: str, sop_uid: str, series_number: int,
    instance_number: int,
) -> dict[str, Any]:
    return dict(
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=sop_uid,
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL,
        software_versions="1.0",
        device_serial_number="0001",
    )


def _build_seg(source: Dataset, ts: str, **common: Any) -> Dataset:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    mask = np.zeros((1, source.Rows, source.Columns), dtype=bool)
    r, c = source.Rows, source.Columns
    mask[0, r // 4 : 3 * r // 4, c // 4 : 3 * c // 4] = True
    desc = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Liver",
        segmented_property_category=codes.SCT.Organ,
        segmented_property_type=codes.SCT.Liver,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    return hd.seg.Segmentation(
        source_images=[source],
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[desc],
        transfer_syntax_uid=ts,
        **common,
    )


def _build_pm(source: Dataset, ts: str, rng, **common: Any) -> Dataset:
    import highdicom as hd

    arr = rng.random((1, source.Rows, source.Columns), dtype=np.float32) * 3000
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="ADC",
        lut_explanation="Apparent Diffusion Coefficient",
        unit=hd.sr.CodedConcept("um2/s", "UCUM", "um2/s"),
        value_range=(0.0, 3000.0),
        intercept=0,
        slope=1,
    )
    return hd.pm.ParametricMap(
        source_images=[source],
        pixel_array=arr,
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[
            hd.VOILUTTransformation(window_center=1500.0, window_width=3000.0)
        ],
        transfer_syntax_uid=ts,
        **common,
    )


# --------------------------------------------------------------------------
# transfer syntax application
# --------------------------------------------------------------------------


_DCMTK_RLE = ["dcmcrle", "+un"]


def _run_dcmtk(ds: Dataset, ts: str) -> Dataset:
    cmd = list(_DCMTK_RLE if ts == _uid.RLELossless else _DCMTK_ENCODED[ts])
    exe = _which(cmd[0])
    with tempfile.TemporaryDirectory(prefix="pgm-dcmtk-") as tmp:
        src = Path(tmp) / "in.dcm"
        dst = Path(tmp) / "out.dcm"
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(src, enforce_file_format=True)
        proc = subprocess.run(
            [exe, *cmd[1:], str(src), str(dst)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0 or not dst.exists():
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}"
            )
        out = pydicom.dcmread(dst)
        out.PixelData  # noqa: B018 - make sure everything is loaded
    if out.file_meta.TransferSyntaxUID != ts:
        raise RuntimeError(
            f"{cmd[0]} produced {out.file_meta.TransferSyntaxUID}, wanted {ts}"
        )
    return out


def _apply_transfer_syntax(ds: Dataset, ts: str, encoder: str = "auto") -> Dataset:
    ts = UID(ts)
    if ts in BIG_ENDIAN_SYNTAXES:
        raise ValueError("big endian is retired; not generated by this corpus")
    if ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian,
              DeflatedExplicitVRLittleEndian):
        ds.file_meta.TransferSyntaxUID = ts
        return ds
    if ts in VIDEO_SYNTAXES:
        if ds.file_meta.TransferSyntaxUID != ts:
            raise ValueError(f"{ts.name} is only valid for Video SOP classes")
        return ds
    if "PixelData" not in ds:
        raise ValueError(f"{ts.name} needs an object with Pixel Data")
    if ts == _uid.RLELossless and encoder == "dcmtk":
        return _run_dcmtk(ds, ts)
    if ts in _PYDICOM_ENCODED:
        kwargs: dict[str, Any] = {}
        if ts == _uid.JPEG2000:
            kwargs["j2k_cr"] = [10]
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.compress(ts, generate_instance_uid=False, **kwargs)
        return ds
    if ts in _DCMTK_ENCODED:
        return _run_dcmtk(ds, ts)
    raise ValueError(f"no encoder for transfer syntax {ts} ({ts.name})")


# --------------------------------------------------------------------------
# public: make_instance / write
# --------------------------------------------------------------------------


def make_instance(
    sop_class: str,
    *,
    patient_id: str | None = None,
    patient_name: str | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_instance_uid: str | None = None,
    modality: str | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    rows: int = 64,
    cols: int = 64,
    frames: int = 1,
    charset: str | Sequence[str] | None = None,
    extra: Mapping[str, Any] | None = None,
    references: Sequence[Dataset] = (),
    title: tuple[str, str, str] | None = None,
    series_number: int = 1,
    instance_number: int = 1,
    study_description: str = "Pergamon test study",
    series_description: str | None = None,
    accession_number: str = "PGMACC0001",
    pixels: np.ndarray | None = None,
    seed: int | None = None,
    encoder: Literal["auto", "dcmtk"] = "auto",
) -> Dataset:
    """Build a synthetic instance of ``sop_class`` (see :data:`SOP_CLASSES`).

    - Patient / study default to those of ``references[0]`` (if given), else
      :data:`DEFAULT_PATIENT_ID` / :data:`DEFAULT_PATIENT_NAME` and a new
      Study Instance UID.
    - ``references``: instances a PR, KO, SR, SEG, PM, RT object refers to.
    - ``title``: (value, scheme, meaning) of the SR / KOS document title.
    - ``charset``: Specific Character Set; chosen as ISO_IR 192 if omitted
      and the name is not ASCII.  pydicom encodes the values on write.
    - ``pixels``: explicit pixel array (frames, rows, cols[, samples]) instead
      of the synthetic one; must match the SOP class' bit depth.
    - ``extra``: keyword -> value, applied last (may override anything).
    - ``seed``: seeds the synthetic pixels / waveform (same seed, same data).
    - ``encoder``: "auto" = dcmtk for JPEG / JPEG-LS, pydicom for RLE and
      JPEG 2000; "dcmtk" = dcmcrle for RLE.
    - video SOP classes: ``transfer_syntax`` must be an MPEG-2 / H.264 / HEVC
      syntax; the stream has max(frames, 30) frames at 30 fps.
    - the returned dataset's ``file_meta.TransferSyntaxUID`` is
      ``transfer_syntax`` and its Pixel Data is already encoded in it.
    """
    k = SOP_CLASSES.get(sop_class)
    if k is None:
        raise ValueError(
            f"unsupported SOP class {sop_class} ({UID(sop_class).name}); "
            f"supported: {', '.join(v.name for v in SOP_CLASSES.values())}"
        )
    rng = np.random.default_rng(seed)
    first = references[0] if references else None
    if patient_id is None:
        patient_id = str(first.PatientID) if first is not None else DEFAULT_PATIENT_ID
    if patient_name is None:
        patient_name = (
            str(first.PatientName) if first is not None else DEFAULT_PATIENT_NAME
        )
    if study_uid is None:
        study_uid = first.StudyInstanceUID if first is not None else generate_uid()
    series_uid = series_uid or generate_uid()
    sop_instance_uid = sop_instance_uid or generate_uid()
    modality = modality or k.modality
    if charset is None and first is not None and "SpecificCharacterSet" in first:
        charset = first.SpecificCharacterSet
    if charset is None and _needs_charset(patient_name, study_description):
        charset = "ISO_IR 192"

    if k.kind in ("seg", "pm"):
        return _make_highdicom(
            sop_class, k, patient_id=patient_id, patient_name=patient_name,
            study_uid=study_uid, series_uid=series_uid, sop_uid=sop_instance_uid,
            ts=transfer_syntax, references=references, rng=rng,
            series_number=series_number, instance_number=instance_number,
            series_description=series_description, extra=extra,
            rows=rows, cols=cols,
        )

    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = _uid.PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "PERGAMON_TEST"
    ds.file_meta = meta

    if charset is not None:
        ds.SpecificCharacterSet = (
            charset if isinstance(charset, str) else list(charset)
        )
    cdate, ctime = _now()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceCreationDate = cdate
    ds.InstanceCreationTime = ctime
    # Patient
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    # General Study
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = STUDY_DATE
    ds.StudyTime = STUDY_TIME
    ds.ReferringPhysicianName = "Referrer^Rolf"
    ds.StudyID = "1"
    ds.AccessionNumber = accession_number
    ds.StudyDescription = study_description
    # General Series
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description or k.name
    ds.SeriesDate = STUDY_DATE
    ds.SeriesTime = STUDY_TIME
    # General Equipment
    ds.Manufacturer = MANUFACTURER
    ds.InstitutionName = "Pergamon Hospital"
    ds.StationName = "PGMTEST"
    # General Image / instance
    ds.InstanceNumber = instance_number
    ds.ContentDate = STUDY_DATE
    ds.ContentTime = STUDY_TIME

    kind = k.kind
    body_part = _BODY_PARTS.get(k.modality)
    if body_part and kind != "pr":
        # an unpaired body part makes (0020,0060) Laterality not applicable
        ds.BodyPartExamined = body_part
    if kind in ("pr", "rtstruct", "rtplan"):
        del ds.ContentDate, ds.ContentTime
    if kind in ("rtstruct", "rtplan", "rtdose"):
        ds.OperatorsName = ""
    if kind in ("cr", "dx", "mg", "ct", "mr", "nm", "pet", "us", "xa", "sc", "vl"):
        _build_classic_image(ds, k, sop_class, rows, cols, frames, rng, pixels)
    elif kind == "enhanced":
        _build_enhanced(ds, k, sop_class, rows, cols, frames, rng, pixels)
    elif kind == "waveform":
        _build_waveform(ds, k, sop_class, rng)
    elif kind == "pr":
        if not references:
            references = [_phantom_image(ds, sop_class)]
        _build_pr(ds, k, sop_class, references)
    elif kind == "sr":
        _build_sr(ds, k, sop_class, references, title)
    elif kind == "ko":
        if not references:
            references = [_phantom_image(ds, sop_class)]
        _build_ko(ds, k, sop_class, references, title)
    elif kind == "doc":
        _build_doc(ds, k, sop_class, patient_id)
    elif kind == "rtstruct":
        _build_rtstruct(ds, references)
    elif kind == "rtplan":
        _build_rtplan(ds, references)
    elif kind == "rtdose":
        _build_rtdose(ds, k, references, rows, cols, frames, rng, pixels)
    elif kind == "raw":
        _build_raw(ds)
    elif kind == "video":
        ds.file_meta.TransferSyntaxUID = transfer_syntax
        _build_video(ds, k, transfer_syntax, max(frames, 30), rng)
    else:  # pragma: no cover
        raise AssertionError(kind)

    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    ds = _apply_transfer_syntax(ds, transfer_syntax, encoder)
    return ds


def _phantom_image(like: Dataset, sop_class: str) -> Dataset:
    """An image in the same study that is NOT written anywhere."""
    color = sop_class == _uid.ColorSoftcopyPresentationStateStorage
    return make_instance(
        _uid.VLPhotographicImageStorage if color else _uid.CTImageStorage,
        patient_id=str(like.PatientID),
        patient_name=str(like.PatientName),
        study_uid=like.StudyInstanceUID,
        rows=16,
        cols=16,
    )


def _make_highdicom(
    sop_class, k, *, patient_id, patient_name, study_uid, series_uid, sop_uid, ts,
    references, rng, series_number, instance_number, series_description, extra,
    rows, cols,
) -> Dataset:
    want = _uid.CTImageStorage if k.kind == "seg" else _uid.MRImageStorage
    sources = [r for r in references if r.SOPClassUID == want] or list(references)
    if sources:
        source = sources[0]
    else:
        source = make_instance(
            want, patient_id=patient_id, patient_name=patient_name,
            study_uid=study_uid, rows=rows, cols=cols,
        )
    common = _hd_common(source, series_uid, sop_uid, series_number, instance_number)
    if k.kind == "seg":
        ds: Dataset = _build_seg(source, ts, **common)
    else:
        ds = _build_pm(source, ts, rng, **common)
    ds.SeriesDescription = series_description or k.name
    ds.InstitutionName = "Pergamon Hospital"
    if "BodyPartExamined" not in ds and "Laterality" not in ds:
        ds.BodyPartExamined = source.get("BodyPartExamined") or "CHEST"
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    return ds


def _decodable(ds: Dataset) -> bool:
    if not _has_pixels(ds):
        return False
    ts = UID(ds.file_meta.TransferSyntaxUID)
    if ts in VIDEO_SYNTAXES:
        return False
    if not ts.is_compressed:
        return True
    try:
        from pydicom.pixels import get_decoder

        decoder = get_decoder(ts)
    except (NotImplementedError, ValueError):
        return False
    if not decoder.is_available:
        return False
    if ts == _uid.JPEGExtended12Bit and int(ds.get("BitsStored", 8)) > 8:
        # gdcm and Pillow only decode 8-bit JPEG Extended; 12-bit needs the
        # pylibjpeg plugin with pylibjpeg-libjpeg installed
        return "pylibjpeg" in decoder.available_plugins
    return True


_DETACHED_STUDY = "1.2.840.10008.3.1.2.3.1"  # RT Referenced Study "SOP" (a study)


def _referenced_uids(ds: Dataset) -> tuple[str, ...]:
    """SOP Instance UIDs referenced anywhere in ``ds`` (PR, KO, SR, SEG, RT)."""
    found: list[str] = []

    def walk(d: Dataset) -> None:
        for elem in d:
            if elem.VR == "SQ":
                for item in elem.value:
                    walk(item)
            elif (
                elem.keyword == "ReferencedSOPInstanceUID"
                and d.get("ReferencedSOPClassUID") != _DETACHED_STUDY
                and elem.value not in found
            ):
                found.append(str(elem.value))

    walk(ds)
    return tuple(found)


def _charset_str(ds: Dataset) -> str:
    cs = ds.get("SpecificCharacterSet")
    if cs is None:
        return ""
    return cs if isinstance(cs, str) else "\\".join(cs)


def write(
    ds: Dataset,
    path: str | Path,
    *,
    description: str | None = None,
    origin: str = "synthetic",
    encoded_patient_name: bytes = b"",
) -> Sample:
    """Write ``ds`` as a DICOM Part-10 file and return its :class:`Sample`.

    The transfer syntax is ``ds.file_meta.TransferSyntaxUID`` (compressed
    pixel data must already be encoded, as :func:`make_instance` does).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = ds.file_meta
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return _sample_from(
        ds, path, description=description, origin=origin,
        encoded_patient_name=encoded_patient_name,
    )


def _sample_from(
    ds: Dataset,
    path: Path,
    *,
    description: str | None,
    origin: str,
    encoded_patient_name: bytes = b"",
) -> Sample:
    ts = str(ds.file_meta.TransferSyntaxUID)
    if description is None:
        description = f"{sop_class_name(ds.SOPClassUID)}, {_ts_name(ts)}"
    return Sample(
        path=path,
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        transfer_syntax=ts,
        patient_id=str(ds.get("PatientID", "") or ""),
        description=description,
        pixels_decodable=_decodable(ds),
        modality=str(ds.get("Modality", "") or ""),
        patient_name=str(ds.get("PatientName", "") or ""),
        specific_character_set=_charset_str(ds),
        encoded_patient_name=encoded_patient_name,
        origin=origin,
        referenced_sop_instance_uids=_referenced_uids(ds),
        number_of_frames=int(ds.get("NumberOfFrames", 1) or 1),
    )


# --------------------------------------------------------------------------
# KOS helpers
# --------------------------------------------------------------------------


def make_kos(
    references: Sequence[Dataset],
    *,
    title: tuple[str, str, str] = KOS_OF_INTEREST,
    **kwargs: Any,
) -> Dataset:
    """Key Object Selection document referencing ``references``.

    Patient and study default to those of ``references[0]``.
    """
    if not references:
        raise ValueError("a KOS needs at least one referenced instance")
    return make_instance(
        _uid.KeyObjectSelectionDocumentStorage,
        references=references,
        title=title,
        **kwargs,
    )


def make_rejection_note(
    references: Sequence[Dataset],
    *,
    reason: tuple[str, str, str] = KOS_REJECTED_FOR_QUALITY_REASONS,
    **kwargs: Any,
) -> Dataset:
    """IHE IOCM rejection note (a KOS whose title is the rejection reason)."""
    kwargs.setdefault("series_description", f"Rejection note: {reason[2]}")
    return make_kos(references, title=reason, **kwargs)


# --------------------------------------------------------------------------
# storage corpus
# --------------------------------------------------------------------------

E = ExplicitVRLittleEndian
I = ImplicitVRLittleEndian  # noqa: E741
#: (description, sop class, transfer syntax, make_instance kwargs) in order.
#: Entries referring to earlier objects are resolved in storage_corpus().
CORPUS_PLAN: list[tuple[str, str, str, dict[str, Any]]] = [
    ("CR, Implicit VR LE", _U.ComputedRadiographyImageStorage, I, {}),
    ("DX For Presentation, JPEG 2000 lossless",
     _U.DigitalXRayImageStorageForPresentation, _U.JPEG2000Lossless, {}),
    ("DX For Processing, Explicit VR LE",
     _U.DigitalXRayImageStorageForProcessing, E, {}),
    ("MG For Presentation, JPEG-LS lossless",
     _U.DigitalMammographyXRayImageStorageForPresentation, _U.JPEGLSLossless, {}),
    ("MG For Processing, Explicit VR LE",
     _U.DigitalMammographyXRayImageStorageForProcessing, E, {}),
    ("Breast Tomosynthesis (4 frames), Explicit VR LE",
     _U.BreastTomosynthesisImageStorage, E, {"frames": 4}),
    ("Breast Projection For Presentation, JPEG-LS near-lossless",
     _U.BreastProjectionXRayImageStorageForPresentation, _U.JPEGLSNearLossless,
     {}),
    ("Breast Projection For Processing, Explicit VR LE",
     _U.BreastProjectionXRayImageStorageForProcessing, E, {}),
    ("CT, Explicit VR LE", _U.CTImageStorage, E, {}),
    ("CT, JPEG Lossless SV1", _U.CTImageStorage, _U.JPEGLosslessSV1, {}),
    ("CT, JPEG Extended 12-bit", _U.CTImageStorage, _U.JPEGExtended12Bit, {}),
    ("Enhanced CT (3 frames), Explicit VR LE",
     _U.EnhancedCTImageStorage, E, {"frames": 3}),
    ("MR, Explicit VR LE", _U.MRImageStorage, E, {}),
    ("MR, JPEG 2000 (lossy)", _U.MRImageStorage, _U.JPEG2000, {}),
    ("Enhanced MR (3 frames), RLE Lossless",
     _U.EnhancedMRImageStorage, _U.RLELossless, {"frames": 3}),
    ("NM (2 frames), Explicit VR LE",
     _U.NuclearMedicineImageStorage, E, {"frames": 2}),
    ("PET, Explicit VR LE", _U.PositronEmissionTomographyImageStorage, E, {}),
    ("US single-frame RGB, JPEG Baseline 8-bit",
     _U.UltrasoundImageStorage, _U.JPEGBaseline8Bit, {}),
    ("US multi-frame (5 frames), JPEG Baseline 8-bit",
     _U.UltrasoundMultiFrameImageStorage, _U.JPEGBaseline8Bit, {"frames": 5}),
    ("US multi-frame (3 frames), RLE Lossless (dcmtk dcmcrle)",
     _U.UltrasoundMultiFrameImageStorage, _U.RLELossless,
     {"frames": 3, "encoder": "dcmtk"}),
    ("XA (4 frames), JPEG Lossless SV1",
     _U.XRayAngiographicImageStorage, _U.JPEGLosslessSV1, {"frames": 4}),
    ("XRF (3 frames), JPEG Lossless P14 (SV6)",
     _U.XRayRadiofluoroscopicImageStorage, _U.JPEGLossless, {"frames": 3}),
    ("XRF (2 frames), Explicit VR LE",
     _U.XRayRadiofluoroscopicImageStorage, E, {"frames": 2}),
    ("12-lead ECG waveform, Explicit VR LE",
     _U.TwelveLeadECGWaveformStorage, E, {}),
    ("General ECG waveform, Implicit VR LE", _U.GeneralECGWaveformStorage, I, {}),
    ("Secondary Capture, Deflated Explicit VR LE",
     _U.SecondaryCaptureImageStorage, DeflatedExplicitVRLittleEndian, {}),
    ("VL Photographic, JPEG Baseline 8-bit",
     _U.VLPhotographicImageStorage, _U.JPEGBaseline8Bit, {}),
    ("Video Photographic, MPEG-4 AVC/H.264 HP@4.1",
     _U.VideoPhotographicImageStorage, _U.MPEG4HP41, {}),
    ("Video Endoscopic, MPEG-2 MP@ML",
     _U.VideoEndoscopicImageStorage, _U.MPEG2MPML, {}),
    ("Video Photographic, HEVC/H.265 Main@5.1",
     _U.VideoPhotographicImageStorage, _U.HEVCMP51, {}),
    ("GSPS, Explicit VR LE",
     _U.GrayscaleSoftcopyPresentationStateStorage, E, {"refs": ["CT", "MR"]}),
    ("Color Softcopy Presentation State, Explicit VR LE",
     _U.ColorSoftcopyPresentationStateStorage, E, {"refs": ["VL"]}),
    ("Pseudo-Color Softcopy Presentation State, Explicit VR LE",
     _U.PseudoColorSoftcopyPresentationStateStorage, E, {"refs": ["CT"]}),
    ("KOS Of Interest, Explicit VR LE",
     _U.KeyObjectSelectionDocumentStorage, E, {"refs": ["CT", "MG", "ECG"]}),
    ("KOS IOCM rejection note (Rejected for Quality Reasons), Explicit VR LE",
     _U.KeyObjectSelectionDocumentStorage, E,
     {"refs": ["PHANTOM"], "title": KOS_REJECTED_FOR_QUALITY_REASONS}),
    ("Basic Text SR, Explicit VR LE", _U.BasicTextSRStorage, E, {"refs": ["CT"]}),
    ("Enhanced SR, Explicit VR LE", _U.EnhancedSRStorage, E, {"refs": ["CT"]}),
    ("Comprehensive SR (verified), Deflated Explicit VR LE",
     _U.ComprehensiveSRStorage, DeflatedExplicitVRLittleEndian,
     {"refs": ["CT", "MR"]}),
    ("Comprehensive 3D SR, Explicit VR LE",
     _U.Comprehensive3DSRStorage, E, {"refs": ["CT"]}),
    ("Mammography CAD SR, Explicit VR LE",
     _U.MammographyCADSRStorage, E, {"refs": ["MG"]}),
    ("Encapsulated PDF, Explicit VR LE", _U.EncapsulatedPDFStorage, E, {}),
    ("Encapsulated CDA, Explicit VR LE", _U.EncapsulatedCDAStorage, E, {}),
    ("Segmentation (binary, highdicom), Explicit VR LE",
     _U.SegmentationStorage, E, {"refs": ["CT"]}),
    ("Parametric Map (float, highdicom), Explicit VR LE",
     _U.ParametricMapStorage, E, {"refs": ["MR"]}),
    ("RT Structure Set, Implicit VR LE",
     _U.RTStructureSetStorage, I, {"refs": ["CT"]}),
    ("RT Plan, Implicit VR LE", _U.RTPlanStorage, I, {"refs": ["RTSTRUCT"]}),
    ("RT Dose (4 frames, 32-bit), Implicit VR LE",
     _U.RTDoseStorage, I, {"refs": ["RTPLAN"], "frames": 4}),
    ("Raw Data, Explicit VR LE", _U.RawDataStorage, E, {}),
]
del E, I


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:60]


def storage_corpus(
    dest: str | Path,
    *,
    patient_id: str = DEFAULT_PATIENT_ID,
    patient_name: str = DEFAULT_PATIENT_NAME,
    study_uid: str | None = None,
) -> list[Sample]:
    """Write one file per entry of :data:`CORPUS_PLAN` into ``dest``.

    All objects belong to one patient and one (new) study; every entry is
    its own series.  PR / KOS / SR / SEG / PM / RT objects reference the
    first CT, MR, MG, VL, ECG ... of the corpus.  The IOCM rejection note
    deliberately references an instance that is *not* part of the corpus
    (so an IOCM-aware archive hides nothing else); use
    :func:`make_rejection_note` for real rejection tests.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    by_tag: dict[str, Dataset] = {}
    samples: list[Sample] = []
    for number, (desc, sop_class, ts, opts) in enumerate(CORPUS_PLAN, 1):
        opts = dict(opts)
        refs: list[Dataset] = []
        for tag in opts.pop("refs", ()):
            if tag == "PHANTOM":
                refs.append(
                    make_instance(
                        _uid.CTImageStorage, patient_id=patient_id,
                        patient_name=patient_name, study_uid=study_uid,
                        rows=16, cols=16,
                    )
                )
            else:
                refs.append(by_tag[tag])
        ds = make_instance(
            sop_class,
            patient_id=patient_id,
            patient_name=patient_name,
            study_uid=study_uid,
            transfer_syntax=ts,
            series_number=number,
            series_description=desc[:64],
            references=refs,
            seed=number,
            **opts,
        )
        tag = SOP_CLASSES[sop_class].modality
        if sop_class == _uid.VLPhotographicImageStorage:
            tag = "VL"
        by_tag.setdefault(tag, ds)
        samples.append(write(ds, dest / f"{number:02d}_{_slug(desc)}.dcm",
                             description=desc))
    return samples


# --------------------------------------------------------------------------
# pydicom sample files
# --------------------------------------------------------------------------

#: (file name, description) of pydicom / pydicom-data files copied by
#: pydicom_samples(), in order.  Big endian files, files without File Meta /
#: Study Instance UID and deliberately broken files are not included.
PYDICOM_FILES: list[tuple[str, str]] = [
    ("CT_small.dcm", "CT, Explicit VR LE (pydicom CT_small)"),
    ("MR_small.dcm", "MR, Explicit VR LE (pydicom MR_small)"),
    ("MR_small_implicit.dcm", "MR, Implicit VR LE (MR_small variant)"),
    ("MR_small_RLE.dcm", "MR, RLE Lossless (MR_small variant)"),
    ("MR_small_jp2klossless.dcm", "MR, JPEG 2000 lossless (MR_small variant)"),
    ("MR_small_jpeg_ls_lossless.dcm", "MR, JPEG-LS lossless (MR_small variant)"),
    ("693_J2KI.dcm", "CT, JPEG 2000 lossy (693_J2KI)"),
    ("693_J2KR.dcm", "CT, JPEG 2000 lossless (693_J2KR)"),
    ("JPEG2000.dcm", "SC (NM), JPEG 2000 lossy"),
    ("JPGExtended.dcm", "SC (NM), JPEG Extended 12-bit"),
    ("JPEG-LL.dcm", "SC (NM), JPEG Lossless SV1"),
    ("JPGLosslessP14SV1_1s_1f_8b.dcm", "US, JPEG Lossless SV1 8-bit, empty PatientID"),
    ("SC_rgb_jpeg_dcmtk.dcm", "SC RGB, JPEG Baseline (dcmtk, YBR_FULL_422)"),
    ("SC_rgb_dcmtk_+eb+cy+n1.dcm", "SC RGB, JPEG Baseline 4:1:1 (dcmtk)"),
    ("SC_rgb_rle.dcm", "SC RGB, RLE Lossless"),
    ("SC_rgb_gdcm_KY.dcm", "SC RGB, JPEG 2000 lossy (gdcm)"),
    ("examples_ybr_color.dcm", "US multi-frame YBR, JPEG Baseline"),
    ("color3d_jpeg_baseline.dcm", "US multi-frame 120 frames, JPEG Baseline"),
    ("examples_jpeg2k.dcm", "US RGB, JPEG 2000 lossless"),
    ("examples_palette.dcm", "US palette color, Explicit VR LE"),
    ("gdcm-US-ALOKA-16.dcm", "US 16-bit, Implicit VR LE"),
    ("image_dfl.dcm", "SC, Deflated Explicit VR LE"),
    ("liver_1frame.dcm", "Segmentation 1 frame (liver_1frame)"),
    ("liver.dcm", "Segmentation multi-frame (liver)"),
    ("reportsi.dcm", "Basic Text SR (reportsi), empty PatientID"),
    ("test-SR.dcm", "Comprehensive SR (test-SR)"),
    ("rtplan.dcm", "RT Plan, Implicit VR LE"),
    ("rtstruct.dcm", "RT Structure Set (File Meta added)"),
    ("rtdose.dcm", "RT Dose, Implicit VR LE"),
    ("rtdose_rle.dcm", "RT Dose, RLE Lossless"),
    ("waveform_ecg.dcm", "12-lead ECG waveform"),
    ("emri_small.dcm", "Enhanced MR, Explicit VR LE (emri_small)"),
    ("emri_small_RLE.dcm", "Enhanced MR, RLE Lossless"),
    ("emri_small_jpeg_2k_lossless.dcm", "Enhanced MR, JPEG 2000 lossless"),
    ("emri_small_jpeg_ls_lossless.dcm", "Enhanced MR, JPEG-LS lossless"),
    ("eCT_Supplemental.dcm", "Enhanced CT with supplemental palette"),
    ("MR-SIEMENS-DICOM-WithOverlays.dcm", "MR with overlays and private tags"),
    ("mlut_18.dcm", "SC with Modality LUT"),
    ("vlut_04.dcm", "SC with VOI LUT"),
]


def _testdata(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    if path is None:
        raise FileNotFoundError(
            f"pydicom test file {name!r} not found; install pydicom-data "
            "('pip install pydicom-data')"
        )
    return Path(str(path))


def pydicom_samples(dest: str | Path) -> list[Sample]:
    """Copy the pydicom / pydicom-data sample files in :data:`PYDICOM_FILES`.

    Files are copied byte for byte, UIDs as shipped, *except*:

    - several files are variants of one object and share a SOP Instance UID
      (MR_small*, emri_small*, liver*, rtdose*, examples_ybr_color /
      color3d_jpeg_baseline): every repeat gets a new SOP Instance UID
      (and MediaStorageSOPInstanceUID); nothing else changes;
    - the CTN sample files (MR_small, JPGExtended, JPEG2000, examples_jpeg2k
      ...) use one UID as Study/Series/SOP Instance UID for *different*
      patients; a file whose study already belongs to another Patient ID gets
      new Study and Series Instance UIDs (consistently per patient);
    - rtstruct.dcm has no File Meta Information: it gets one (Implicit VR LE).

    Kept as shipped although odd: rtplan.dcm's MediaStorageSOPInstanceUID
    differs from its SOPInstanceUID (noted in ``Sample.origin``; the Sample
    carries the data set's UID), several files have an empty PatientID,
    MR_small uses one UID as Study, Series and SOP Instance UID, and some
    encapsulated fragments have odd lengths (dcmtk warns).

    Such files are re-written with pydicom *without decoding the pixel data*
    (the encoded Pixel Data element is written back verbatim, same transfer
    syntax).  ``Sample.origin`` tells which (``"pydicom:<name> [changes]"``).
    Deterministic UIDs are kept, so two calls produce the same UIDs for the
    unmodified files; the re-written copies get fresh UIDs on every call.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    seen_sop: set[str] = set()
    study_owner: dict[str, str] = {}
    series_owner: dict[str, str] = {}
    remap: dict[tuple[str, str], str] = {}
    samples: list[Sample] = []
    # the shipped files contain values pydicom warns about (invalid UIDs, ...);
    # they are stored as received, so those warnings are expected here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for name, desc in PYDICOM_FILES:
            src = _testdata(name)
            ds = pydicom.dcmread(src, force=True)
            changes: list[str] = []
            if not getattr(ds, "file_meta", None) or (
                "TransferSyntaxUID" not in ds.file_meta
            ):
                meta = FileMetaDataset()
                meta.MediaStorageSOPClassUID = ds.SOPClassUID
                meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                meta.TransferSyntaxUID = (
                    ImplicitVRLittleEndian
                    if ds.original_encoding[0]
                    else ExplicitVRLittleEndian
                )
                meta.ImplementationClassUID = _uid.PYDICOM_IMPLEMENTATION_UID
                ds.file_meta = meta
                changes.append("File Meta added")
            pid = str(ds.get("PatientID", "") or "")
            study = str(ds.StudyInstanceUID)
            if study_owner.setdefault(study, pid) != pid:
                ds.StudyInstanceUID = remap.setdefault((pid, study), generate_uid())
                old_series = str(ds.SeriesInstanceUID)
                ds.SeriesInstanceUID = remap.setdefault((pid, old_series), generate_uid())
                changes.append("new Study/Series Instance UID")
            series = str(ds.SeriesInstanceUID)
            if series_owner.setdefault(series, str(ds.StudyInstanceUID)) != str(
                ds.StudyInstanceUID
            ):
                ds.SeriesInstanceUID = remap.setdefault(("series", series), generate_uid())
                changes.append("new Series Instance UID")
            if str(ds.SOPInstanceUID) in seen_sop:
                ds.SOPInstanceUID = generate_uid()
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                changes.append("new SOP Instance UID")
            seen_sop.add(str(ds.SOPInstanceUID))
            out = dest / f"pydicom_{Path(name).stem}.dcm"
            origin = f"pydicom:{name}"
            if ds.file_meta.get("MediaStorageSOPInstanceUID") != ds.SOPInstanceUID:
                # kept as shipped (rtplan.dcm): archives must use the data set's UID
                origin += " (File Meta MediaStorageSOPInstanceUID differs)"
            if changes:
                origin += f" [{'; '.join(changes)}]"
                ds.save_as(out, enforce_file_format=True)
            else:
                shutil.copyfile(src, out)
            samples.append(_sample_from(ds, out, description=desc, origin=origin))
    return samples


# --------------------------------------------------------------------------
# character sets
# --------------------------------------------------------------------------

#: (key, Specific Character Set, Patient's Name, exact encoded bytes, source)
CHARSET_CASES: list[tuple[str, str | list[str], str, bytes, str]] = [
    (
        "ISO2022_IR87",
        ["", "ISO 2022 IR 87"],
        "Yamada^Tarou=山田^太郎=やまだ^たろう",
        b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B="
        b"\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B",
        "PS3.5 H.3.1",
    ),
    (
        "ISO2022_IR13_IR87",
        ["ISO 2022 IR 13", "ISO 2022 IR 87"],
        "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう",
        b"\xd4\xcf\xc0\xde^\xc0\xdb\xb3=\x1b$B;3ED\x1b(J^\x1b$BB@O:\x1b(J="
        b"\x1b$B$d$^$@\x1b(J^\x1b$B$?$m$&\x1b(J",
        "PS3.5 H.3.2",
    ),
    (
        "ISO2022_IR149",
        ["", "ISO 2022 IR 149"],
        "Hong^Gildong=洪^吉洞=홍^길동",
        b"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7="
        b"\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf",
        "PS3.5 I.2",
    ),
    (
        "ISO_IR100_FR",
        "ISO_IR 100",
        "Buc^Jérôme",
        b"Buc^J\xe9r\xf4me",
        "Latin-1 (pydicom chrFren)",
    ),
    (
        "ISO_IR100_DE",
        "ISO_IR 100",
        "Müller^Jürgen",
        b"M\xfcller^J\xfcrgen",
        "Latin-1",
    ),
    (
        "ISO_IR126",
        "ISO_IR 126",
        "Παπαδόπουλος^Γιώργος",
        "Παπαδόπουλος^Γιώργος".encode("iso8859_7"),
        "Greek",
    ),
    (
        "ISO_IR144",
        "ISO_IR 144",
        "Пушкин^Александр",
        "Пушкин^Александр".encode("iso8859_5"),
        "Cyrillic",
    ),
    (
        "ISO_IR127",
        "ISO_IR 127",
        "قباني^لنزار",
        b"\xe2\xc8\xc7\xe6\xea^\xe4\xe6\xd2\xc7\xd1",
        "Arabic (pydicom chrArab)",
    ),
    (
        "ISO_IR138",
        "ISO_IR 138",
        "שרון^דבורה",
        b"\xf9\xf8\xe5\xef^\xe3\xe1\xe5\xf8\xe4",
        "Hebrew (pydicom chrHbrw)",
    ),
    (
        "ISO_IR192_ZH",
        "ISO_IR 192",
        "Wang^XiaoDong=王^小東",
        "Wang^XiaoDong=王^小東".encode(),
        "UTF-8 (pydicom chrX1)",
    ),
    (
        "ISO_IR192_RU",
        "ISO_IR 192",
        "Иванов^Иван",
        "Иванов^Иван".encode(),
        "UTF-8",
    ),
    (
        "GB18030",
        "GB18030",
        "Wang^XiaoDong=王^小东",
        b"Wang^XiaoDong=\xcd\xf5^\xd0\xa1\xb6\xab",
        "GB18030 (pydicom chrX2)",
    ),
]


def charset_samples(dest: str | Path) -> list[Sample]:
    """One small Secondary Capture per entry of :data:`CHARSET_CASES`.

    Each file is a separate patient (PatientID ``PGM-CS-<key>``) and study;
    ``Sample.patient_name`` is the expected Python str and
    ``Sample.encoded_patient_name`` the exact bytes of (0010,0010) in the
    file (verified after writing, trailing space padding aside).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    samples = []
    for key, charset, name, encoded, source in CHARSET_CASES:
        ds = make_instance(
            _uid.SecondaryCaptureImageStorage,
            patient_id=f"PGM-CS-{key}",
            patient_name=name,
            charset=charset,
            rows=16,
            cols=16,
            study_description=f"Charset {key}",
            series_description=f"Charset {key} ({source})",
        )
        path = dest / f"charset_{key}.dcm"
        sample = write(
            ds,
            path,
            description=f"Secondary Capture, Patient's Name in {key} ({source})",
            encoded_patient_name=encoded,
        )
        raw = _raw_element_value(path, 0x00100010)
        if raw.rstrip(b" ") != encoded:
            raise AssertionError(
                f"{key}: pydicom wrote {raw!r}, expected {encoded!r}"
            )
        samples.append(sample)
    return samples


def _raw_element_value(path: Path, tag: int) -> bytes:
    """Undecoded bytes of a top-level element (for charset checks)."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    raw = ds.get_item(tag)
    value = raw.value if raw is not None else b""
    return value if isinstance(value, bytes) else str(value).encode()


# --------------------------------------------------------------------------
# big multi-frame
# --------------------------------------------------------------------------

_MAX_PIXEL_LENGTH = 0xFFFFFFFE


def big_multiframe(
    dest: str | Path,
    size_bytes: int,
    *,
    rows: int = 512,
    cols: int = 512,
    patient_id: str = DEFAULT_PATIENT_ID,
    patient_name: str = DEFAULT_PATIENT_NAME,
    study_uid: str | None = None,
    fill: Literal["sparse", "pattern"] = "sparse",
    filename: str = "big_multiframe.dcm",
) -> Sample:
    """A Multi-frame Grayscale Word SC (16-bit, Explicit VR LE) of ~size_bytes.

    The header is written by pydicom without Pixel Data; then the Pixel Data
    element header (7FE0,0010) OW with a 4-byte length is appended and the
    value is produced without holding it in memory:

    - ``fill="sparse"``: ``truncate()`` extends the file with zeros (a
      sparse file on most file systems: instant, no disk use);
    - ``fill="pattern"``: written in 1 MiB chunks whose 16-bit words are
      ``(word_index + 7 * chunk_index) & 0xFFFF`` so that shifted, swapped or
      truncated data is detectable (:func:`big_multiframe_expected_chunk`).

    NumberOfFrames = floor((size_bytes - header) / (rows*cols*2)); the file
    size is within one frame of ``size_bytes``.  The Pixel Data length must
    stay below 2**32 - 1, i.e. at most ~4 GiB.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    frame_bytes = rows * cols * 2
    sop_class = _uid.MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    ds = make_instance(
        sop_class,
        patient_id=patient_id,
        patient_name=patient_name,
        study_uid=study_uid,
        rows=1,
        cols=1,
        frames=1,
        series_description="Big multi-frame",
        extra={"BitsStored": 16, "HighBit": 15},
    )
    del ds.PixelData
    ds.Rows = rows
    ds.Columns = cols
    path = dest / filename
    ds.NumberOfFrames = 1
    ds.save_as(path, enforce_file_format=True)
    header = path.stat().st_size + 12
    frames = max((size_bytes - header) // frame_bytes, 1)
    length = frames * frame_bytes
    if length > _MAX_PIXEL_LENGTH:
        raise ValueError(
            f"{size_bytes} bytes need a Pixel Data length of {length} > 2**32-2; "
            "use a smaller size (max ~4 GiB) or an encapsulated syntax"
        )
    ds.NumberOfFrames = frames
    ds.save_as(path, enforce_file_format=True)
    with path.open("r+b") as f:
        f.seek(0, 2)
        f.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, length))
        start = f.tell()
        if fill == "sparse":
            f.truncate(start + length)
        elif fill == "pattern":
            chunk = _BIG_CHUNK
            written = 0
            index = 0
            while written < length:
                n = min(chunk, length - written)
                f.write(big_multiframe_expected_chunk(index, n))
                written += n
                index += 1
        else:
            raise ValueError(f"fill must be 'sparse' or 'pattern', not {fill!r}")
    return _sample_from(
        ds,
        path,
        description=(
            f"MF Grayscale Word SC {frames} frames {rows}x{cols} 16-bit, "
            f"Explicit VR LE, {fill} ({path.stat().st_size} bytes)"
        ),
        origin="synthetic (streamed)",
    )


_BIG_CHUNK = 1 << 20
_BASE_WORDS = np.arange(_BIG_CHUNK // 2, dtype=np.uint32)


def big_multiframe_expected_chunk(index: int, nbytes: int = _BIG_CHUNK) -> bytes:
    """Bytes of chunk ``index`` (1 MiB chunks) of a ``fill="pattern"`` file."""
    words = ((_BASE_WORDS[: nbytes // 2] + 7 * index) & 0xFFFF).astype("<u2")
    return words.tobytes()


def pixel_data_offset(path: str | Path) -> tuple[int, int]:
    """(offset of the Pixel Data value, its length) of a native Part-10 file."""
    tell = _header_end(path)
    with Path(path).open("rb") as f:
        f.seek(tell)
        tag = f.read(12)
    group, elem, _vr, _, length = struct.unpack("<HH2sHI", tag)
    if (group, elem) != (0x7FE0, 0x0010):
        raise ValueError("Pixel Data does not follow the header")
    return tell + 12, length


def _header_end(path: str | Path) -> int:
    # offset of the (7FE0,0010) OW element header (first MiB only)
    with Path(path).open("rb") as f:
        data = f.read(1 << 20)
    idx = data.find(b"\xe0\x7f\x10\x00OW", 132)
    if idx < 0:
        raise ValueError("no (7FE0,0010) OW found in the first MiB")
    return idx


# --------------------------------------------------------------------------
# sending with dcmtk storescu
# --------------------------------------------------------------------------


def storescu_commands(
    samples: Iterable[Sample],
    host: str,
    port: int,
    *,
    workdir: str | Path,
    called_aet: str = "PERGAMON",
    calling_aet: str = "STORESCU",
    extra_args: Sequence[str] = (),
) -> list[list[str]]:
    """dcmtk ``storescu`` command lines that send ``samples`` *unchanged*.

    storescu's ``-x?`` options cannot propose every transfer syntax (e.g. no
    JPEG Lossless P14 SV6) and storescu transcodes (or fails) when no context
    matches the file.  So one association configuration file (``-xf``) is
    written into ``workdir`` per transfer syntax, proposing for each SOP
    class of the files exactly one context with exactly that syntax; one
    command per transfer syntax is returned (run them in order).
    """
    exe = _which("storescu")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        groups.setdefault(s.transfer_syntax, []).append(s)
    commands = []
    for n, (ts, group) in enumerate(sorted(groups.items()), 1):
        sops = sorted({s.sop_class_uid for s in group})
        lines = ["[[TransferSyntaxes]]", "[TS]", f"TransferSyntax1 = {ts}", ""]
        lines += ["[[PresentationContexts]]", "[Contexts]"]
        lines += [f"PresentationContext{i} = {sop}\\TS" for i, sop in enumerate(sops, 1)]
        lines += ["", "[[Profiles]]", "[Pergamon]", "PresentationContexts = Contexts", ""]
        cfg = workdir / f"storescu-{n:02d}.cfg"
        cfg.write_text("\n".join(lines))
        commands.append(
            [
                exe,
                "-aet", calling_aet,
                "-aec", called_aet,
                "-xf", str(cfg), "Pergamon",
                *extra_args,
                host,
                str(port),
                *(str(s.path) for s in group),
            ]
        )
    return commands


# --------------------------------------------------------------------------
# CT series
# --------------------------------------------------------------------------


def ct_series(
    dest: str | Path,
    n: int,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    patient_id: str = DEFAULT_PATIENT_ID,
    patient_name: str = DEFAULT_PATIENT_NAME,
    size: int = 512,
    seed: int = 0,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> list[Sample]:
    """``n`` CT slices (size x size, 16-bit, 12 bits stored) of one series.

    Pixel data are uniform random 12-bit values from ``numpy`` with seed
    ``seed + slice index`` (cheap, deterministic, incompressible); a 512x512
    slice is ~0.5 MiB.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    for_uid = generate_uid()
    samples = []
    for i in range(n):
        rng = np.random.default_rng(seed + i)
        pixels = rng.integers(0, 4096, (1, size, size), dtype=np.uint16)
        z = float(i) * 1.25
        ds = make_instance(
            _uid.CTImageStorage,
            patient_id=patient_id,
            patient_name=patient_name,
            study_uid=study_uid,
            series_uid=series_uid,
            rows=size,
            cols=size,
            pixels=pixels,
            instance_number=i + 1,
            series_description="CT series",
            transfer_syntax=transfer_syntax,
            extra={
                "FrameOfReferenceUID": for_uid,
                "ImagePositionPatient": [-160.0, -160.0, z],
                "SliceLocation": z,
                "SliceThickness": 1.25,
                "PixelSpacing": [0.625, 0.625],
            },
        )
        samples.append(
            write(ds, dest / f"ct_{i + 1:05d}.dcm",
                  description=f"CT slice {i + 1}/{n}, {_ts_name(transfer_syntax)}")
        )
    return samples
