"""Which attribute belongs to which level of the patient / study / series / instance model.

PS3.4 C.6 defines the keys of each Query/Retrieve level; a PACS also keeps the attributes users
expect at study and series level (description, institution, request attributes). `split_levels`
turns one stored object's header into the four levels' attribute sets, as DICOM JSON ready for
the index, without ever touching bulk data.
"""

from __future__ import annotations

import base64
import math
import struct
from dataclasses import dataclass, field
from typing import Any

from pydicom import Dataset, config
from pydicom.charset import default_encoding
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag

from pergamon.archive.index.schema import INDEXED_KEYS, IndexedKey, Level
from pergamon.archive.query import normalize

PATIENT_KEYWORDS = frozenset(
    {
        "PatientName",
        "PatientID",
        "IssuerOfPatientID",
        "IssuerOfPatientIDQualifiersSequence",
        "TypeOfPatientID",
        "PatientBirthDate",
        "PatientBirthTime",
        "PatientSex",
        "OtherPatientIDsSequence",
        "OtherPatientNames",
        "PatientBirthName",
        "PatientMotherBirthName",
        "EthnicGroup",
        "PatientComments",
        "PatientSpeciesDescription",
        "PatientSpeciesCodeSequence",
        "PatientBreedDescription",
        "ResponsiblePerson",
        "ResponsiblePersonRole",
        "ResponsibleOrganization",
        "PatientIdentityRemoved",
        "DeidentificationMethod",
    }
)

STUDY_KEYWORDS = frozenset(
    {
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "IssuerOfAccessionNumberSequence",
        "StudyID",
        "ReferringPhysicianName",
        "ReferringPhysicianIdentificationSequence",
        "StudyDescription",
        "ProcedureCodeSequence",
        "NameOfPhysiciansReadingStudy",
        "PhysiciansOfRecord",
        "AdmittingDiagnosesDescription",
        "AdmittingDiagnosesCodeSequence",
        "PatientAge",
        "PatientSize",
        "PatientWeight",
        "Occupation",
        "AdditionalPatientHistory",
        "OtherStudyNumbers",
        "ReferencedStudySequence",
        "ReferencedPatientSequence",
        "StudyIDIssuer",
        "RequestingService",
        "RequestedProcedureDescription",
    }
)

SERIES_KEYWORDS = frozenset(
    {
        "SeriesInstanceUID",
        "Modality",
        "SeriesNumber",
        "SeriesDescription",
        "SeriesDescriptionCodeSequence",
        "SeriesDate",
        "SeriesTime",
        "BodyPartExamined",
        "Laterality",
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
        "PerformedProcedureStepID",
        "PerformedProcedureStepDescription",
        "PerformedProtocolCodeSequence",
        "RequestAttributesSequence",
        "ReferencedPerformedProcedureStepSequence",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "StationName",
        "Manufacturer",
        "ManufacturerModelName",
        "DeviceSerialNumber",
        "SoftwareVersions",
        "ProtocolName",
        "OperatorsName",
        "PerformingPhysicianName",
        "PatientPosition",
        "AnatomicalOrientationType",
    }
)

# Attributes never copied into the index: bulk data and trees that can reach megabytes. They stay
# in the stored object and are read from it on retrieve.
EXCLUDED_KEYWORDS = frozenset(
    {
        "PixelData",
        "FloatPixelData",
        "DoubleFloatPixelData",
        "EncapsulatedDocument",
        "WaveformSequence",
        "ContentSequence",
        "PerFrameFunctionalGroupsSequence",
        "SharedFunctionalGroupsSequence",
        "IconImageSequence",
        "ROIContourSequence",
        "StructureSetROISequence",
        "RTROIObservationsSequence",
        "BeamSequence",
        "DVHSequence",
        "FractionGroupSequence",
        "DimensionIndexSequence",
        "OverlayData",
        "CurveData",
        "AudioSampleData",
        "SpectroscopyData",
    }
)
BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_MAX_ELEMENT_JSON = 8192
# VRs pydicom decodes as plain ASCII whatever the character set, so `split_levels` reads them from the raw bytes.
_ASCII_VRS = frozenset({"AS", "CS", "UI"})
_DATE_TIME_VRS = frozenset({"DA", "TM"})  # ... and these too unless pydicom turns them into date / time objects
_ASCII_AND_DATE_TIME_VRS = _ASCII_VRS | _DATE_TIME_VRS
# Text VRs decoded with the Specific Character Set: read from the raw bytes too when those are plain
# ASCII with no escape sequence, which every character set PS3.3 C.12.1.1.2 allows decodes alike.
_MULTI_TEXT_VRS = frozenset({"SH", "LO", "UC"})  # backslash separates values, each right-stripped
_SINGLE_TEXT_VRS = frozenset({"ST", "LT", "UT"})  # one value, backslash is text
# Binary number VRs: struct code and size of one value (read by `_numeric_json`, like DS and IS).
_BINARY_NUMBER_FORMATS = {
    "US": ("H", 2),
    "SS": ("h", 2),
    "UL": ("I", 4),
    "SL": ("i", 4),
    "FL": ("f", 4),
    "FD": ("d", 8),
}
_NUMERIC_VRS = frozenset({"DS", "IS", *_BINARY_NUMBER_FORMATS})
# VRs whose DICOM JSON is just their string values (PS3.18 F.2.3): no numbers, names, tags or bytes.
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"})

_LEVEL_OF_KEYWORD: dict[str, Level] = {
    **{kw: Level.PATIENT for kw in PATIENT_KEYWORDS},
    **{kw: Level.STUDY for kw in STUDY_KEYWORDS},
    **{kw: Level.SERIES for kw in SERIES_KEYWORDS},
}


def level_of(keyword: str) -> Level:
    """The level an attribute belongs to; anything not listed is an instance attribute."""
    return _LEVEL_OF_KEYWORD.get(keyword, Level.IMAGE)


@dataclass
class LevelRecord:
    """One level's share of an object: column values (normalised) and DICOM JSON of its attributes."""

    columns: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ObjectRecord:
    """What the index keeps of one stored object, split by level."""

    patient: LevelRecord
    study: LevelRecord
    series: LevelRecord
    instance: LevelRecord

    def of(self, level: Level) -> LevelRecord:
        return {
            Level.PATIENT: self.patient,
            Level.STUDY: self.study,
            Level.SERIES: self.series,
            Level.IMAGE: self.instance,
        }[level]


def split_levels(ds: Dataset) -> ObjectRecord:
    """Split a header (read without pixel data) into the four levels' columns and JSON attributes."""
    record = ObjectRecord(LevelRecord(), LevelRecord(), LevelRecord(), LevelRecord())
    levels = (record.patient, record.study, record.series, record.instance)  # in _LEVEL_ORDER
    ascii_vrs = ascii_json_vrs()
    for tag, raw in list(ds.items()):
        info = _tag_info(tag)
        if info is None:
            continue
        if raw.VR in BULK_VRS and (getattr(raw, "length", None) or len(raw.value or b"")) > 64:
            continue  # bulk data stays in the object; reading it here would defeat deferred reading
        level, key, json_key = info
        target = levels[level]
        if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes):
            if raw.VR in ascii_vrs:
                encoded, text = ascii_json(raw)
            else:
                encoded, text = plain_json(raw)
            if encoded is not None:
                target.attrs[json_key] = encoded
                if key is not None:
                    target.columns[key.column] = normalize(key.vr, text)
                continue
        elem = ds[tag]
        encoded = element_json(elem)
        if encoded is None:
            continue
        target.attrs[json_key] = encoded
        if key is not None:
            target.columns[key.column] = normalize(key.vr, element_text(elem))
    record.patient.columns.setdefault("patient_id", "")
    record.patient.columns["patient_id"] = record.patient.columns["patient_id"] or ""
    record.patient.columns["issuer"] = record.patient.columns.get("issuer") or ""
    return record


_LEVEL_ORDER = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE)
# tag -> (index in _LEVEL_ORDER, indexed column or None, DICOM JSON key), or None when the tag is never
# indexed (file meta, delimiters, private, excluded); filled on first sight.
_TAG_INFO: dict[int, tuple[int, IndexedKey | None, str] | None] = {}


def _tag_info(tag: BaseTag) -> tuple[int, IndexedKey | None, str] | None:
    """Where an attribute goes in `split_levels`, computed once per tag."""
    try:
        return _TAG_INFO[tag]
    except KeyError:
        pass
    info: tuple[int, IndexedKey | None, str] | None = None
    keyword = keyword_for_tag(tag)
    public = tag.group not in (0x0002, 0xFFFE) and not tag.group & 1
    if public and keyword and keyword not in EXCLUDED_KEYWORDS and keyword != "SpecificCharacterSet":
        level = level_of(keyword)
        key = INDEXED_KEYS.get(keyword)
        info = (_LEVEL_ORDER.index(level), key if key is not None and key.level is level else None, f"{tag:08X}")
    _TAG_INFO[int(tag)] = info
    return info


def element_text(elem: DataElement) -> str | None:
    """An element's value as one DICOM string (multiple values joined with a backslash)."""
    value = elem.value
    if value is None or value == "":
        return None
    if elem.VR == "SQ":
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def element_json(elem: DataElement) -> dict[str, Any] | None:
    """DICOM JSON (PS3.18 F.2) of one element, or None when it is bulk data or too large to index."""
    if elem.VR in BULK_VRS:
        length = len(elem.value) if isinstance(elem.value, (bytes, bytearray)) else 0
        if length > 64 or elem.value is None:
            return None
        return {"vr": elem.VR, "InlineBinary": base64.b64encode(bytes(elem.value)).decode("ascii")}
    if elem.VR in _TEXT_VRS:
        fast = _text_json(elem)
        if fast is not None:
            return fast
    try:
        encoded = elem.to_json_dict(bulk_data_element_handler=None, bulk_data_threshold=1024)
    except Exception:  # a value pydicom cannot express in JSON is simply not indexed
        return None
    if "BulkDataURI" in encoded:
        return None
    if elem.VR == "SQ" and len(repr(encoded)) > _MAX_ELEMENT_JSON:
        return None
    return encoded


def ascii_json_vrs() -> frozenset[str]:
    """The VRs `ascii_json` serves: AS, CS, UI, and DA / TM while pydicom keeps those as text."""
    return _ASCII_VRS if config.datetime_conversion else _ASCII_AND_DATE_TIME_VRS  # asked per element: no new set


def ascii_json(raw: RawDataElement) -> tuple[dict[str, Any], str | None]:
    """DICOM JSON and text of an element of `ascii_json_vrs` from its bytes, as pydicom would make them.

    pydicom's own decoding of these VRs (values.convert_UI / convert_string) without its per-element cost.
    """
    values = raw.value.decode(default_encoding).rstrip(" \x00").split("\\")
    text = "\\".join(values)
    return ({"vr": raw.VR, "Value": values} if text else {"vr": raw.VR}), text or None


def plain_json(raw: RawDataElement) -> tuple[dict[str, Any] | None, str | None]:
    """DICOM JSON and text of a number or plain-ASCII text element from its bytes; (None, None): use pydicom.

    These are the elements of a typical image header that pydicom's per-element conversion made
    the costliest part of indexing (numbers, names, descriptions, IDs). The results equal pydicom's
    `to_json_dict` and `element_text`: `tests/unit/archive/test_split_levels_reference.py` holds
    them to it over the whole sample corpus.
    """
    vr = raw.VR
    if vr in _NUMERIC_VRS:
        encoded = _numeric_json(raw)
        if encoded is None:
            return None, None
        values = encoded.get("Value")
        return encoded, "\\".join(str(v) for v in values) if values else None
    data = raw.value
    if vr not in _MULTI_TEXT_VRS and vr not in _SINGLE_TEXT_VRS and vr != "PN":
        return None, None
    if not data.isascii() or b"\x1b" in data:
        return None, None
    if vr in _SINGLE_TEXT_VRS:
        text = data.decode("ascii").rstrip("\x00 ")
        return ({"vr": vr, "Value": [text]} if text else {"vr": vr}), text or None
    if vr == "PN":
        text = data.rstrip(b"\x00 ").decode("ascii")
        if "\\" in text or "=" in text:  # several names, or ideographic / phonetic groups
            return None, None
        return ({"vr": vr, "Value": [{"Alphabetic": text}]} if text else {"vr": vr}), text or None
    values = [value.rstrip("\x00 ") for value in data.decode("ascii").split("\\")]
    if len(values) > 1 and not all(values):  # pydicom's JSON of an empty value among several: leave it to pydicom
        return None, None
    text = "\\".join(values)
    return ({"vr": vr, "Value": values} if text else {"vr": vr}), text or None


def _numeric_json(raw: RawDataElement) -> dict[str, Any] | None:
    """DICOM JSON of a DS, IS or binary number element read straight from its bytes; None: use pydicom.

    The same numbers pydicom's `to_json_dict` gives (float / int per value), at a fraction of its
    per-element cost (each CT slice carries ~30 of these). Anything unusual (an empty item in a
    list, text that is not a plain number, NaN, big endian, a length that is not a whole number of
    values) goes back to pydicom, which also owns the warnings about invalid values.
    """
    data = raw.value
    if not isinstance(data, bytes):
        return None
    vr = raw.VR
    if vr in _BINARY_NUMBER_FORMATS:
        code, size = _BINARY_NUMBER_FORMATS[vr]
        if not raw.is_little_endian or len(data) % size:
            return None
        if not data:
            return {"vr": vr}
        values = list(struct.unpack(f"<{len(data) // size}{code}", data))
        if code in "fd" and not all(math.isfinite(v) for v in values):
            return None
        return {"vr": vr, "Value": values}
    text = data.decode("ascii", "replace").strip(" \x00")
    if not text:
        return {"vr": vr}
    convert = float if vr == "DS" else int
    try:
        numbers = [convert(item) for item in text.split("\\")]
    except ValueError:
        return None
    if convert is float and not all(math.isfinite(v) for v in numbers):
        return None
    return {"vr": vr, "Value": numbers}


def _text_json(elem: DataElement) -> dict[str, Any] | None:
    """`DataElement.to_json_dict` of a text-valued element without its per-call overhead; None: not plain text."""
    value = elem.value
    if value is None or value == "":
        return {"vr": elem.VR}
    if isinstance(value, str):
        return {"vr": elem.VR, "Value": [value]}
    if isinstance(value, (list, MultiValue)) and all(isinstance(v, str) for v in value):
        return {"vr": elem.VR, "Value": list(value)} if value else {"vr": elem.VR}
    return None


def tag_key(tag: BaseTag | int) -> str:
    """The DICOM JSON key of a tag ('0010,0010' -> '00100010')."""
    return f"{int(tag):08X}"
