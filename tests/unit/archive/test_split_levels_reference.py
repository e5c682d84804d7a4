"""`split_levels` (one pass, cached tag map, plain-text JSON fast path) equals the plain per-element version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import samples
from pydicom import Dataset, dcmread
from pydicom.datadict import keyword_for_tag

from pergamon.archive.index.schema import INDEXED_KEYS
from pergamon.archive.model import (
    _MAX_ELEMENT_JSON,
    BULK_VRS,
    EXCLUDED_KEYWORDS,
    LevelRecord,
    ObjectRecord,
    element_text,
    level_of,
    split_levels,
)
from pergamon.archive.query import normalize


def reference_split_levels(ds: Dataset) -> ObjectRecord:
    """The earlier `split_levels`: every element through pydicom's `to_json_dict`."""
    record = ObjectRecord(LevelRecord(), LevelRecord(), LevelRecord(), LevelRecord())
    for tag in list(ds.keys()):
        if tag.group in (0x0002, 0xFFFE) or tag.is_private:
            continue
        raw = ds.get_item(tag)
        if raw is None or (raw.VR in BULK_VRS and (getattr(raw, "length", None) or len(raw.value or b"")) > 64):
            continue
        keyword = keyword_for_tag(tag)
        if not keyword or keyword in EXCLUDED_KEYWORDS or keyword == "SpecificCharacterSet":
            continue
        elem = ds[tag]
        encoded = _reference_json(elem)
        if encoded is None:
            continue
        target = record.of(level_of(keyword))
        target.attrs[f"{tag:08X}"] = encoded
        key = INDEXED_KEYS.get(keyword)
        if key is not None and key.level is level_of(keyword):
            target.columns[key.column] = normalize(key.vr, element_text(elem))
    record.patient.columns.setdefault("patient_id", "")
    record.patient.columns["patient_id"] = record.patient.columns["patient_id"] or ""
    record.patient.columns["issuer"] = record.patient.columns.get("issuer") or ""
    return record


def _reference_json(elem: Any) -> dict[str, Any] | None:
    import base64

    if elem.VR in BULK_VRS:
        length = len(elem.value) if isinstance(elem.value, (bytes, bytearray)) else 0
        if length > 64 or elem.value is None:
            return None
        return {"vr": elem.VR, "InlineBinary": base64.b64encode(bytes(elem.value)).decode("ascii")}
    try:
        encoded = elem.to_json_dict(bulk_data_element_handler=None, bulk_data_threshold=1024)
    except Exception:
        return None
    if "BulkDataURI" in encoded:
        return None
    if elem.VR == "SQ" and len(repr(encoded)) > _MAX_ELEMENT_JSON:
        return None
    return encoded


def test_split_levels_equals_the_reference_over_the_corpus(index_corpus: list[Path]) -> None:
    assert len(index_corpus) > 50
    for path in index_corpus:
        new = split_levels(dcmread(path, stop_before_pixels=True, defer_size=1024))
        old = reference_split_levels(dcmread(path, stop_before_pixels=True, defer_size=1024))
        for level in ("patient", "study", "series", "instance"):
            assert getattr(new, level).attrs == getattr(old, level).attrs, (path.name, level)
            assert getattr(new, level).columns == getattr(old, level).columns, (path.name, level)


def test_split_levels_equals_the_reference_on_empty_and_multivalued_text() -> None:
    ds = Dataset()
    ds.PatientID = "P1"
    ds.PatientName = ""
    ds.StudyInstanceUID = "1.2.3"
    ds.AccessionNumber = ""
    ds.ImageType = ["ORIGINAL", "", "AXIAL"]
    ds.Modality = "CT"
    ds.StudyDescription = "Caf\u00e9"
    ds.SeriesNumber = "7"
    ds.PixelSpacing = ["0.5", "0.5"]
    ds.OtherPatientNames = ["A^B", "C^D"]
    new, old = split_levels(ds), reference_split_levels(ds)
    assert (new.patient, new.study, new.series, new.instance) == (old.patient, old.study, old.series, old.instance)
    assert new.instance.attrs["00080008"] == {"vr": "CS", "Value": ["ORIGINAL", "", "AXIAL"]}


@pytest.mark.parametrize("little_endian", [True, False], ids=["little-endian", "big-endian"])
def test_numbers_read_from_their_bytes_equal_pydicom(tmp_path: Path, little_endian: bool) -> None:
    """DS, IS and binary numbers take `_numeric_json`'s short cut; empty, multi-valued and odd ones too."""
    from pydicom.dataelem import DataElement
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian

    ds = samples.make_instance("1.2.840.10008.5.1.4.1.1.2", seed=3)
    ds.SliceThickness = " 1.25 "  # DS, padded
    ds.ImagePositionPatient = ["-125.5", "1e2", "0"]
    ds.ImageOrientationPatient = []  # empty DS
    ds.InstanceNumber = "  42"  # IS, indexed: stays with pydicom
    ds.add(DataElement(0x00200105, "IS", ["3", "-7"]))  # Number of Temporal Positions... multi-valued IS
    ds.add(DataElement(0x00281050, "DS", ["40", "400.0"]))  # Window Center
    ds.add(DataElement(0x00181310, "US", [0, 512, 512, 0]))  # Acquisition Matrix
    ds.add(DataElement(0x00189306, "FD", [0.5]))  # Single Collimation Width
    ds.add(DataElement(0x00189345, "FD", [-1.5e-3, 2.0]))
    ds.add(DataElement(0x00280106, "SS", -2000))  # Smallest Image Pixel Value
    ds.add(DataElement(0x00189328, "FL", [1.5]))
    ds.add(DataElement(0x00181151, "IS", ""))  # X-Ray Tube Current, empty
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if little_endian else ExplicitVRBigEndian
    path = tmp_path / "numbers.dcm"
    ds.save_as(path, enforce_file_format=True)
    new = split_levels(dcmread(path, stop_before_pixels=True, defer_size=1024))
    old = reference_split_levels(dcmread(path, stop_before_pixels=True, defer_size=1024))
    assert (new.patient, new.study, new.series, new.instance) == (old.patient, old.study, old.series, old.instance)
    assert new.instance.attrs["00181310"] == {"vr": "US", "Value": [0, 512, 512, 0]}
    assert new.instance.attrs["00200032"] == {"vr": "DS", "Value": [-125.5, 100.0, 0.0]}
    assert new.instance.attrs["00200037"] == {"vr": "DS"}


@pytest.mark.parametrize(
    "charset", ["", "ISO_IR 192", "ISO 2022 IR 6\\ISO 2022 IR 87"], ids=["default", "utf-8", "iso-2022"]
)
def test_text_read_from_its_bytes_equals_pydicom(tmp_path: Path, charset: str) -> None:
    """Names, IDs and descriptions take `plain_json`'s short cut when plain ASCII; anything else stays with pydicom."""
    from pydicom.dataelem import DataElement

    ds = samples.make_instance("1.2.840.10008.5.1.4.1.1.2", seed=4)
    if charset:
        ds.SpecificCharacterSet = charset.split("\\")
    ds.PatientName = "Doe^John^^^ "  # PN, indexed, trailing empty components
    ds.ReferringPhysicianName = "Smith^Ann=Sumisu^An"  # PN with a second group: pydicom
    ds.add(DataElement(0x00081050, "PN", ["A^B", "C^D"]))  # Performing Physician's Name, several: pydicom
    ds.add(DataElement(0x00081070, "PN", ""))  # Operators' Name, empty
    ds.StudyDescription = "  leading spaces kept "  # LO, indexed
    ds.SeriesDescription = "Caf\u00e9" if charset == "ISO_IR 192" else "plain"  # not ASCII under UTF-8: pydicom
    ds.add(DataElement(0x00081010, "SH", ["ST1 ", "ST2"]))  # Station Name, several, one padded
    ds.add(DataElement(0x00181030, "LO", ["A", ""]))  # Protocol Name with an empty value: pydicom
    ds.add(DataElement(0x00204000, "LT", "a\\b  "))  # Image Comments: LT keeps its backslash
    ds.add(DataElement(0x00081080, "LO", ""))  # Admitting Diagnoses Description, empty
    ds.add(DataElement(0x00321066, "UT", "reason\\text "))  # Reason for Visit
    ds.add(DataElement(0x00400254, "LO", "step \u00e9" if charset == "ISO_IR 192" else "step"))
    ds.SeriesNumber = " +7 "  # IS, indexed
    path = tmp_path / "text.dcm"
    ds.save_as(path, enforce_file_format=True)
    raw = path.read_bytes()
    if "IR 87" in charset:  # a name with an escape sequence to JIS X 0208 and back
        raw = raw.replace(b"Doe^John^^^ ", b"\x1b$B;3ED\x1b(B^J")  # same length
        assert raw.count(b"\x1b$B;3ED") == 1
        path.write_bytes(raw)
    new = split_levels(dcmread(path, stop_before_pixels=True, defer_size=1024))
    old = reference_split_levels(dcmread(path, stop_before_pixels=True, defer_size=1024))
    assert (new.patient, new.study, new.series, new.instance) == (old.patient, old.study, old.series, old.instance)
    assert new.study.columns["study_description"] == "leading spaces kept"
    assert new.series.columns["series_number"] == "7"
    assert new.instance.attrs["00204000"] == {"vr": "LT", "Value": ["a\\b"]}
