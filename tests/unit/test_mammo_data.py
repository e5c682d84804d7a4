"""The mammography test data says the truth: markers, findings and CAD coordinates agree with the pixels.

The browser tests (`tests/e2e/test_mammo.py`) trust `mammo_data` for where things are; these checks
make sure a wrong flip or coordinate in the generator cannot make a wrong display pass.
"""

from __future__ import annotations

import mammo_data as md
import numpy as np
from pydicom import Dataset


def _pixels(ds: Dataset, frame: int = 1) -> np.ndarray:
    count = int(ds.get("NumberOfFrames", 1))
    frames = np.frombuffer(ds.PixelData, dtype="<u2").reshape(count, ds.Rows, ds.Columns)
    return frames[frame - 1]


def _scoords(item: Dataset) -> list[Dataset]:
    found = []
    for child in item.get("ContentSequence", []):
        if child.ValueType in ("SCOORD", "SCOORD3D"):
            found.append(child)
        found += _scoords(child)
    return found


def test_stored_orientation_undoes_the_flips() -> None:
    """Flipping the stored pixels as Patient Orientation says gives the canonical drawing back."""
    data = md.build()
    for ds, view, plan in data.hung.values():
        row, column = md.PATIENT_ORIENTATION[(view.laterality, view.view)]
        stored = _pixels(ds)
        shown = stored[:, ::-1] if ds.PatientOrientation[0] != row else stored
        shown = shown[::-1, :] if ds.PatientOrientation[1] != column else shown
        assert np.array_equal(shown, md.canonical(view, plan.rows, plan.columns, content=plan.content)), view.label
    flips = {view.stored for _, view, _ in data.hung.values()}
    assert {"", "h", "v", "hv"} <= flips  # every kind of flip is exercised


def test_cad_points_land_on_the_burnt_in_findings() -> None:
    data = md.build()
    by_uid = {str(ds.SOPInstanceUID): ds for ds in data.datasets}
    points = [s for s in _scoords(data.cad) if s.GraphicType == "POINT"]
    assert len(points) == 4  # current RCC, current LMLO, DBT RCC (SCOORD + frame), DBT LCC (SCOORD3D)
    for scoord in points:
        if scoord.ValueType == "SCOORD":
            ref = scoord.ContentSequence[0].ReferencedSOPSequence[0]
            image = by_uid[str(ref.ReferencedSOPInstanceUID)]
            frame = int(ref.get("ReferencedFrameNumber", 1))
            x, y = (float(v) for v in scoord.GraphicData)
        else:
            image = next(
                ds for ds in data.datasets if ds.get("FrameOfReferenceUID") == scoord.ReferencedFrameOfReferenceUID
            )
            shared = image.SharedFunctionalGroupsSequence[0]
            iop = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
            row_spacing, column_spacing = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
            normal = np.cross(iop[:3], iop[3:])
            point = np.array(scoord.GraphicData, dtype=float)
            positions = [
                np.array(g.PlanePositionSequence[0].ImagePositionPatient)
                for g in image.PerFrameFunctionalGroupsSequence
            ]
            frame = 1 + int(np.argmin([abs(np.dot(point - p, normal)) for p in positions]))
            offset = point - positions[frame - 1]
            x, y = np.dot(offset, iop[:3]) / column_spacing + 0.5, np.dot(offset, iop[3:]) / row_spacing + 0.5
        pixels = _pixels(image, frame)
        assert pixels[int(y), int(x)] == md.FINDING, (image.SOPClassUID, frame, x, y)
        others = [f for f in range(1, int(image.get("NumberOfFrames", 1)) + 1) if f != frame]
        assert all(not (_pixels(image, f) == md.FINDING).any() for f in others)


def test_for_processing_companions_and_spacings() -> None:
    data = md.build()
    assert {ds.PresentationIntentType for ds in data.processing} == {"FOR PROCESSING"}
    assert {ds.SOPClassUID for ds in data.processing} == {md.MG_PROCESSING}
    current = data.hung["current-RCC"][0]
    prior = data.hung["prior-RCC"][0]
    assert current.StudyDate > prior.StudyDate and current.PatientID == prior.PatientID
    assert current.ImagerPixelSpacing != prior.ImagerPixelSpacing
    implant = data.extra["current-RCCID"][0]
    assert implant.BreastImplantPresent == "YES"
    assert implant.ViewCodeSequence[0].ViewModifierCodeSequence[0].CodeMeaning == "Implant Displaced"
