"""Generated benchmark data: large CT slices for ingest and viewing, many small studies for queries.

Everything is deterministic for a given seed (UIDs are hashes of fixed strings,
names, dates and pixels from seeded generators), so Orthanc and Pergamon receive identical
files and a re-run can reuse a cached folder. Files are Part-10, Explicit VR Little Endian.
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
    "MG": "1.2.840.10008.5.1.4.1.1.1.2",
    "PT": "1.2.840.10008.5.1.4.1.1.128",
    "NM": "1.2.840.10008.5.1.4.1.1.20",
    "XA": "1.2.840.10008.5.1.4.1.1.12.1",
}
# share of studies per modality, roughly a general hospital's mix
MODALITY_WEIGHTS = {"CR": 25, "CT": 20, "MR": 15, "US": 12, "DX": 10, "MG": 8, "PT": 4, "NM": 3, "XA": 3}
FAMILY_NAMES = [
    "SMITH", "JOHNSON", "WILLIAMS", "BROWN", "JONES", "GARCIA", "MILLER", "DAVIS", "RODRIGUEZ", "MARTINEZ",
    "HERNANDEZ", "LOPEZ", "GONZALEZ", "WILSON", "ANDERSON", "THOMAS", "TAYLOR", "MOORE", "JACKSON", "MARTIN", "LEE",
    "PEREZ", "THOMPSON", "WHITE", "HARRIS", "SANCHEZ", "CLARK", "RAMIREZ", "LEWIS", "ROBINSON", "WALKER", "YOUNG",
    "ALLEN", "KING", "WRIGHT", "SCOTT", "TORRES", "NGUYEN", "HILL", "FLORES", "GREEN", "ADAMS", "NELSON", "BAKER",
    "HALL", "RIVERA", "CAMPBELL", "MITCHELL", "CARTER", "ROBERTS", "MULLER", "SCHMIDT", "SCHNEIDER", "FISCHER",
    "WEBER", "MEYER", "WAGNER", "BECKER", "SCHULZ", "HOFFMANN", "DUBOIS", "LAMBERT", "LEROY", "MOREAU", "FOURNIER",
    "GIRARD", "BONNET", "DUPONT", "ROSSI", "RUSSO", "FERRARI", "ESPOSITO", "BIANCHI", "ROMANO", "COLOMBO", "RICCI",
    "MARINO", "GRECO", "JANSEN", "DEVRIES", "BAKKER", "VISSER", "SMIT", "NOWAK", "KOWALSKI", "WISNIEWSKI",
    "NIELSEN", "HANSEN", "PEDERSEN", "ANDERSEN", "LARSEN", "SILVA", "SANTOS", "FERREIRA", "PEREIRA", "OLIVEIRA",
    "COSTA", "RODRIGUES", "ALMEIDA",
]
GIVEN_NAMES = [
    "JAMES", "MARY", "ROBERT", "PATRICIA", "JOHN", "JENNIFER", "MICHAEL", "LINDA", "DAVID", "ELIZABETH", "WILLIAM",
    "BARBARA", "RICHARD", "SUSAN", "JOSEPH", "JESSICA", "THOMAS", "SARAH", "ANNA", "PETER", "MARIA", "LUCA",
    "SOPHIE", "PAUL", "CLAIRE", "JAN", "EVA", "LARS", "INGRID", "PEDRO", "ANA",
]
DESCRIPTIONS = {
    "CR": "CHEST PA", "CT": "CT ABDOMEN", "MR": "MR BRAIN", "US": "US ABDOMEN", "DX": "DX KNEE",
    "MG": "MAMMO SCREENING", "PT": "PET CT WHOLE BODY", "NM": "BONE SCAN", "XA": "CORONARY ANGIO",
}


def uid(*parts: object) -> str:
    """A 2.25 UID derived from `parts` (same parts, same UID): 128 bits of their SHA-256, as PS3.5 B.2 allows."""
    digest = hashlib.sha256("\x00".join(str(p) for p in parts).encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def _dataset(sop_class: str, sop_uid: str, attrs: dict[str, object], pixels: np.ndarray) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    return ds


@dataclass(frozen=True)
class CtStudy:
    """Where the CT slices are and the UIDs a viewer asks for."""

    folder: str
    study_uid: str
    series_uids: list[str]
    instances: int
    bytes: int


def ct_study(dest: Path, n: int, *, series: int = 2, size: int = 512, seed: int = 0) -> CtStudy:
    """`n` CT slices (size x size, 16-bit, 12 bits stored, ~0.5 MB at 512) in `series` series of one study.

    Pixels are seeded uniform noise (incompressible). Cached: an existing complete folder is reused.
    """
    dest.mkdir(parents=True, exist_ok=True)
    manifest = dest / "manifest.json"
    if manifest.exists():
        return CtStudy(**json.loads(manifest.read_text()))
    study_uid = uid("ct-study", seed, n)
    series_uids = [uid("ct-series", seed, n, s) for s in range(series)]
    per_series = -(-n // series)
    total = 0
    for i in range(n):
        s, index = divmod(i, per_series)
        pixels = np.random.default_rng(seed * 1_000_003 + i).integers(0, 4096, (size, size), dtype=np.uint16)
        z = index * 1.25
        ds = _dataset(SOP_CLASSES["CT"], uid("ct-instance", seed, n, i), {
            "PatientName": "BENCH^CT", "PatientID": "BENCHCT", "PatientBirthDate": "19600101", "PatientSex": "O",
            "StudyInstanceUID": study_uid, "StudyDate": "20240101", "StudyTime": "120000", "StudyID": "1",
            "AccessionNumber": "BENCHCT1", "ReferringPhysicianName": "", "StudyDescription": "CT BENCHMARK",
            "Modality": "CT", "SeriesInstanceUID": series_uids[s], "SeriesNumber": s + 1,
            "SeriesDescription": f"CT series {s + 1}", "InstanceNumber": index + 1,
            "FrameOfReferenceUID": uid("ct-for", seed, n, s), "ImagePositionPatient": [-160.0, -160.0, z],
            "ImageOrientationPatient": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], "SliceLocation": z,
            "SliceThickness": 1.25, "PixelSpacing": [0.625, 0.625], "RescaleIntercept": -1024.0,
            "RescaleSlope": 1.0, "WindowCenter": 40.0, "WindowWidth": 400.0,
        }, pixels)
        path = dest / f"s{s + 1}" / f"ct_{i + 1:05d}.dcm"
        path.parent.mkdir(exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        total += path.stat().st_size
    study = CtStudy(str(dest), study_uid, series_uids, n, total)
    manifest.write_text(json.dumps(asdict(study)))
    return study


@dataclass(frozen=True)
class StudyRow:
    """What the query benchmark needs to know about one small study."""

    study_uid: str
    patient_id: str
    patient_name: str
    study_date: str
    modality: str


def small_studies(dest: Path, n_studies: int, *, per_study: int = 10, seed: int = 0) -> list[StudyRow]:
    """`n_studies` studies of `per_study` tiny (8x8) instances in 2 series, with realistic demographics.

    About two studies per patient; names from common family/given names, StudyDate uniform over
    2015-2024, one modality per study from MODALITY_WEIGHTS. Files go to `dest/part-K/STUDY/`
    folders (8 parts, so loaders can send them over parallel associations; one folder per study,
    so `storescu +sd +r` sends each study's instances in a row, as modalities and archives do,
    studies in directory order). Encoded by `_part10` rather than pydicom (20x faster; 10^6 files
    matter). Cached like `ct_study`.
    """
    dest.mkdir(parents=True, exist_ok=True)
    manifest = dest / "manifest.json"
    if manifest.exists():
        return [StudyRow(**row) for row in json.loads(manifest.read_text())]
    rng = random.Random(seed)
    n_patients = max(1, n_studies // 2)
    patients = [
        (f"P{seed:02d}{i:07d}", f"{rng.choice(FAMILY_NAMES)}^{rng.choice(GIVEN_NAMES)}",
         (date(1930, 1, 1) + timedelta(days=rng.randrange(30000))).strftime("%Y%m%d"), rng.choice("MF"))
        for i in range(n_patients)
    ]
    modalities, weights = zip(*MODALITY_WEIGHTS.items(), strict=True)
    first_day, days = date(2015, 1, 1), (date(2024, 12, 31) - date(2015, 1, 1)).days + 1
    pixels = np.arange(64, dtype=np.uint16).reshape(8, 8).tobytes()
    rows = []
    for k in range(n_studies):
        patient_id, name, birth, sex = patients[k] if k < n_patients else rng.choice(patients)
        modality = rng.choices(modalities, weights)[0]
        study_date = (first_day + timedelta(days=rng.randrange(days))).strftime("%Y%m%d")
        study_uid = uid("small-study", seed, k)
        sop_class = SOP_CLASSES[modality]
        study = {
            0x00080005: ("CS", "ISO_IR 100"), 0x00080016: ("UI", sop_class), 0x00080020: ("DA", study_date),
            0x00080030: ("TM", f"{rng.randrange(24):02d}0000"), 0x00080050: ("SH", f"A{seed:02d}{k:08d}"),
            0x00080060: ("CS", modality), 0x00080090: ("PN", "WHO^DR"), 0x00081030: ("LO", DESCRIPTIONS[modality]),
            0x00100010: ("PN", name), 0x00100020: ("LO", patient_id), 0x00100030: ("DA", birth),
            0x00100040: ("CS", sex), 0x0020000D: ("UI", study_uid), 0x00200010: ("SH", str(k)),
            0x00280002: ("US", 1), 0x00280004: ("CS", "MONOCHROME2"), 0x00280010: ("US", 8),
            0x00280011: ("US", 8), 0x00280100: ("US", 16), 0x00280101: ("US", 12), 0x00280102: ("US", 11),
            0x00280103: ("US", 0), 0x7FE00010: ("OW", pixels),
        }
        part = dest / f"part-{k % 8}" / f"{k:07d}"
        part.mkdir(parents=True, exist_ok=True)
        for i in range(per_study):
            s = i * 2 // per_study
            sop_uid = uid("small-instance", seed, k, i)
            elements = {**study, 0x00080018: ("UI", sop_uid), 0x0020000E: ("UI", uid("small-series", seed, k, s)),
                        0x00200011: ("IS", str(s + 1)), 0x00200013: ("IS", str(i + 1))}
            (part / f"{i:02d}.dcm").write_bytes(_part10(sop_class, sop_uid, elements))
        rows.append(StudyRow(study_uid, patient_id, name, study_date, modality))
    manifest.write_text(json.dumps([asdict(row) for row in rows]))
    return rows


_LONG_VRS = frozenset({"OB", "OW", "SQ", "UN", "UT", "UC", "UR"})


def _element(tag: int, vr: str, value: object) -> bytes:
    """One Explicit VR Little Endian element (strings padded to even length as PS3.5 says)."""
    if vr == "US":
        raw = struct.pack("<H", value)
    elif isinstance(value, bytes):
        raw = value
    else:
        raw = str(value).encode("latin-1")
    if len(raw) % 2:
        raw += b"\0" if vr in ("UI", "OB") else b" "
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode()
    if vr in _LONG_VRS:
        return head + struct.pack("<HI", 0, len(raw)) + raw
    return head + struct.pack("<H", len(raw)) + raw


def _part10(sop_class: str, sop_uid: str, elements: dict[int, tuple[str, object]]) -> bytes:
    """A Part-10 file: preamble, File Meta group, then `elements` in tag order."""
    meta = b"".join(_element(tag, vr, value) for tag, vr, value in (
        (0x00020001, "OB", b"\0\1"), (0x00020002, "UI", sop_class), (0x00020003, "UI", sop_uid),
        (0x00020010, "UI", ExplicitVRLittleEndian), (0x00020012, "UI", PYDICOM_IMPLEMENTATION_UID),
    ))
    body = b"".join(_element(tag, *elements[tag]) for tag in sorted(elements))
    group_length = struct.pack("<HH", 0x0002, 0x0000) + b"UL" + struct.pack("<HI", 4, len(meta))
    return b"\0" * 128 + b"DICM" + group_length + meta + body


def parts(folder: Path, n: int) -> list[list[Path]]:
    """The .dcm files under `folder` split round-robin into `n` lists (one per association or client)."""
    return parts_of(sorted(folder.rglob("*.dcm")), n)


def parts_of(files: list[Path], n: int) -> list[list[Path]]:
    """`files` split round-robin into `n` lists."""
    return [files[i::n] for i in range(n)]
