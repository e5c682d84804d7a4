"""benchmarks/data.py: the generated benchmark data is deterministic and valid Part-10 DICOM."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pydicom

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def bench_data() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_data", BENCHMARKS / "data.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_data"] = module
    spec.loader.exec_module(module)
    return module


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.dcm"))}


def test_small_studies_are_identical_for_a_seed_and_match_their_manifest(tmp_path: Path) -> None:
    data = bench_data()
    rows = data.small_studies(tmp_path / "a", 5, per_study=4, seed=3)
    again = data.small_studies(tmp_path / "b", 5, per_study=4, seed=3)
    other = data.small_studies(tmp_path / "c", 5, per_study=4, seed=4)
    assert rows == again
    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert {r.study_uid for r in rows}.isdisjoint({r.study_uid for r in other})
    by_study = {r.study_uid: r for r in rows}
    found = files(tmp_path / "a")
    assert len(found) == 20
    sop_uids = set()
    for name in found:
        ds = pydicom.dcmread(tmp_path / "a" / name)
        row = by_study[ds.StudyInstanceUID]
        assert (ds.PatientID, str(ds.PatientName), ds.StudyDate, ds.Modality) == (
            row.patient_id, row.patient_name, row.study_date, row.modality,
        )
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID == data.SOP_CLASSES[row.modality]
        assert ds.pixel_array.shape == (8, 8)
        sop_uids.add(ds.SOPInstanceUID)
    assert len(sop_uids) == 20


def test_ct_study_is_deterministic(tmp_path: Path) -> None:
    data = bench_data()
    study = data.ct_study(tmp_path / "a", 4, size=16)
    assert data.ct_study(tmp_path / "b", 4, size=16).study_uid == study.study_uid
    assert files(tmp_path / "a") == files(tmp_path / "b")
    datasets = [pydicom.dcmread(p) for p in sorted((tmp_path / "a").rglob("*.dcm"))]
    assert [ds.SeriesInstanceUID for ds in datasets] == [study.series_uids[0]] * 2 + [study.series_uids[1]] * 2
    assert datasets[0].SOPInstanceUID == data.uid("ct-instance", 0, 4, 0)
    assert datasets[3].pixel_array.shape == (16, 16)
