"""Mammography and tomosynthesis test data with markers burnt in at known anatomical positions.

One patient, two studies: a current (2026) and a prior (2025) screening exam. Each has the four
standard views (RCC, LCC, RMLO, LMLO) as Digital Mammography X-Ray Image - For Presentation; the
current study adds For Processing companions, an implant-displaced view (RCCID), a partial view,
Breast Tomosynthesis objects (RCC, LCC) with a synthesized 2D each, a Breast Projection X-Ray
Image - For Presentation and a Mammography CAD SR with 2D and per-slice marks.

Every image is drawn in its *canonical display orientation* (right breast: chest wall on the
right, nipple to the left; left breast mirrored; top = lateral for CC, superior for MLO) and then
stored flipped when `View.stored` says so, with Patient Orientation (0020,0020) (or the plane
orientation of enhanced objects) telling the truth. A viewer that orients by the attributes shows
the canonical drawing; one that does not shows it mirrored or upside down, which the markers expose:

* a chest-wall bar along the chest-wall edge, a nipple disc, a "top" block near the lateral or
  superior edge;
* a tissue level (`View.tissue`) unique to each view, so a swapped view is detected;
* CAD findings (bright discs) at positions given in canonical fractions (`View.findings`).

Positions are fractions of the displayed image: `d` is the distance from the chest wall over the
width (0 at the chest wall, 1 at the nipple side edge), `v` is down from the top over the height.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

MG_PRESENTATION = UID("1.2.840.10008.5.1.4.1.1.1.2")
MG_PROCESSING = UID("1.2.840.10008.5.1.4.1.1.1.2.1")
BREAST_TOMO = UID("1.2.840.10008.5.1.4.1.1.13.1.3")
BREAST_PROJECTION_PRESENTATION = UID("1.2.840.10008.5.1.4.1.1.13.1.4")
MAMMO_CAD_SR = UID("1.2.840.10008.5.1.4.1.1.88.50")

PATIENT_ID = "MAMMO-001"
BACKGROUND = 100
MARKER = 4000
FINDING = 3600

# Canonical marker geometry (fractions; d from the chest wall, v from the top).
CHEST_WALL_BAR = (0.0, 0.05, 0.06, 0.95)  # d0, v0, d1, v1
NIPPLE = (0.85, 0.5, 0.05)  # d, v, radius as a fraction of the width
TOP_BLOCK = (0.25, 0.08, 0.45, 0.16)  # d0, v0, d1, v1
TISSUE_PROBE = (0.25, 0.55, 0.45, 0.7)  # where the plain tissue level can be measured (no marker)
WINDOWS = ((2000.0, 4000.0), (1200.0, 2000.0))  # the two VOI presets of every image (center, width)

VIEW_CODES = {
    "CC": ("399162004", "SCT", "cranio-caudal"),
    "MLO": ("399368009", "SCT", "medio-lateral oblique"),
}
IMPLANT_DISPLACED = ("399209000", "SCT", "Implant Displaced")
PATIENT_ORIENTATION = {  # canonical display: (row direction, column direction)
    ("R", "CC"): ("P", "L"),
    ("L", "CC"): ("A", "R"),
    ("R", "MLO"): ("P", "F"),
    ("L", "MLO"): ("A", "F"),
}
OPPOSITE = {"A": "P", "P": "A", "L": "R", "R": "L", "H": "F", "F": "H"}
LPS = {"L": (1, 0, 0), "R": (-1, 0, 0), "P": (0, 1, 0), "A": (0, -1, 0), "H": (0, 0, 1), "F": (0, 0, -1)}


@dataclass
class View:
    """One image to make: which breast and view, how it is stored, and what it shows."""

    laterality: str
    view: str
    tissue: int
    stored: str = ""  # "h" mirrored left-right, "v" upside down, "hv" both
    modifier: tuple[str, str, str] | None = None
    implant: bool = False
    partial: bool = False
    findings: list[tuple[float, float]] = field(default_factory=list)
    finding_slice: int = 3  # tomosynthesis: the 1-based slice that shows the findings
    three_d: bool = False  # tomosynthesis: the CAD SR places the findings with SCOORD3D (patient coordinates)

    @property
    def label(self) -> str:
        """The label a viewer must show (ACR MQCM abbreviation)."""
        return f"{self.laterality}{self.view}{'ID' if self.modifier == IMPLANT_DISPLACED else ''}"


@dataclass
class StudyPlan:
    """A study's date, pixel spacing and views."""

    date: str
    spacing: float  # Imager Pixel Spacing, mm
    magnification: float
    rows: int
    columns: int
    views: list[View]
    content: tuple[int, int] | None = None  # rows, columns covered by the breast drawing (default: all)
    uid: str = field(default_factory=lambda: str(generate_uid()))


CURRENT = StudyPlan(
    "20260110",
    0.1,
    1.0,
    480,
    360,
    [
        View("R", "CC", 1000, findings=[(0.55, 0.7)]),
        View("L", "CC", 1200, stored="h"),
        View("R", "MLO", 1400, stored="v", partial=True),
        View("L", "MLO", 1600, stored="h", findings=[(0.4, 0.35)]),
        View("R", "CC", 2600, modifier=IMPLANT_DISPLACED, implant=True),
    ],
)
PRIOR = StudyPlan(
    "20250108",
    0.162,
    1.08,  # 0.162 / 1.08 = 0.15 mm at the breast: a 60 x 45 mm field, the breast drawn on 48 x 36 mm
    400,
    300,
    [
        View("R", "CC", 1800, stored="hv"),
        View("L", "CC", 2000),
        View("R", "MLO", 2200),
        View("L", "MLO", 2400, stored="h"),
    ],
    content=(320, 240),
)
DBT_SLICES = 5
DBT_FINDING_SLICE = 3  # 1-based frame with the RCC tomosynthesis finding (SCOORD with a frame number)
DBT_FINDING = (0.5, 0.3)
DBT_FINDING_3D_SLICE = 4  # the LCC finding, placed by SCOORD3D
DBT_FINDING_3D = (0.6, 0.65)
DBT_VIEWS = [
    View("R", "CC", 1300, findings=[DBT_FINDING], finding_slice=DBT_FINDING_SLICE),
    View("L", "CC", 1500, stored="h", findings=[DBT_FINDING_3D], finding_slice=DBT_FINDING_3D_SLICE, three_d=True),
]


def canonical(
    view: View, rows: int, columns: int, *, tissue: int | None = None, content: tuple[int, int] | None = None
) -> np.ndarray:
    """The image as it must be displayed (uint16), with the markers and findings.

    The breast is drawn on `content` (rows, columns; the whole image by default) placed against the
    chest-wall edge and centred vertically; the rest of the detector is air.
    """
    level = view.tissue if tissue is None else tissue
    crows, ccols = content or (rows, columns)
    y, x = np.mgrid[0:crows, 0:ccols]
    d = (ccols - 1 - x) / ccols if view.laterality == "R" else x / ccols  # from the chest wall
    v = y / crows
    drawn = np.full((crows, ccols), BACKGROUND, dtype=np.uint16)
    drawn[((d / 0.95) ** 2 + ((v - 0.5) / 0.47) ** 2) <= 1.0] = level
    d0, v0, d1, v1 = CHEST_WALL_BAR
    drawn[(d >= d0) & (d < d1) & (v >= v0) & (v < v1)] = MARKER
    d0, v0, d1, v1 = TOP_BLOCK
    drawn[(d >= d0) & (d < d1) & (v >= v0) & (v < v1)] = MARKER
    nd, nv, nr = NIPPLE
    drawn[((d - nd) * ccols) ** 2 + ((v - nv) * crows) ** 2 <= (nr * ccols) ** 2] = MARKER
    for fd, fv in view.findings:
        drawn[((d - fd) * ccols) ** 2 + ((v - fv) * crows) ** 2 <= (0.03 * ccols) ** 2] = FINDING
    img = np.full((rows, columns), BACKGROUND, dtype=np.uint16)
    x0, y0 = content_origin(view, rows, columns, (crows, ccols))
    img[y0 : y0 + crows, x0 : x0 + ccols] = drawn
    return img


def content_origin(view: View, rows: int, columns: int, content: tuple[int, int]) -> tuple[int, int]:
    """Top-left pixel of the drawn area in the canonical image (against the chest wall, centred vertically)."""
    crows, ccols = content
    return (columns - ccols if view.laterality == "R" else 0), (rows - crows) // 2


def to_stored(img: np.ndarray, stored: str) -> np.ndarray:
    """Canonical pixels as stored (flipped as `stored` says)."""
    if "h" in stored:
        img = img[:, ::-1]
    if "v" in stored:
        img = img[::-1, :]
    return np.ascontiguousarray(img)


def stored_point(
    view: View, d: float, v: float, rows: int, columns: int, content: tuple[int, int] | None = None
) -> tuple[float, float]:
    """A canonical (d, v) position as stored image coordinates (column, row) in pixels (PS3.3 C.18.6.1.1)."""
    crows, ccols = content or (rows, columns)
    x0, y0 = content_origin(view, rows, columns, (crows, ccols))
    x = x0 + ((1.0 - d) * ccols if view.laterality == "R" else d * ccols)
    y = y0 + v * crows
    if "h" in view.stored:
        x = columns - x
    if "v" in view.stored:
        y = rows - y
    return x, y


def orientation(view: View) -> tuple[str, str]:
    """Patient Orientation (row, column direction) of the stored pixels."""
    row, col = PATIENT_ORIENTATION[(view.laterality, view.view)]
    if "h" in view.stored:
        row = OPPOSITE[row]
    if "v" in view.stored:
        col = OPPOSITE[col]
    return row, col


def _code(value: tuple[str, str, str]) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value
    return item


def _patient_study(ds: Dataset, plan: StudyPlan, accession: str) -> None:
    ds.PatientName = "MAMMO^TEST"
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19640312"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = plan.uid
    ds.StudyDate = plan.date
    ds.StudyTime = "093000"
    ds.StudyID = accession
    ds.AccessionNumber = accession
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Screening mammography"
    ds.Manufacturer = "Pergamon test"
    ds.ContentDate = plan.date
    ds.ContentTime = "093500"


def _file_meta(ds: Dataset) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta


def _pixels(ds: Dataset, frames: list[np.ndarray]) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = frames[0].shape
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = b"".join(f.astype("<u2").tobytes() for f in frames)


def _breast(ds: Dataset, view: View) -> None:
    ds.ImageLaterality = view.laterality
    item = _code(VIEW_CODES[view.view])
    item.ViewModifierCodeSequence = Sequence([_code(view.modifier)] if view.modifier else [])
    ds.ViewCodeSequence = Sequence([item])
    ds.BreastImplantPresent = "YES" if view.implant else "NO"
    if view.partial:
        ds.PartialView = "YES"
        ds.PartialViewCodeSequence = Sequence([_code(("76752008", "SCT", "Breast superior"))])
    ds.BodyPartExamined = "BREAST"
    ds.KVP = 29
    ds.ExposureInuAs = 98000
    ds.Exposure = 98
    ds.BodyPartThickness = 52
    ds.CompressionForce = 110
    ds.AnodeTargetMaterial = "TUNGSTEN"
    ds.FilterMaterial = "RHODIUM"
    ds.PositionerPrimaryAngle = 0 if view.view == "CC" else (45 if view.laterality == "R" else -45)


def mg_image(
    plan: StudyPlan, view: View, series_uid: str, number: int, *, processing: bool = False, generated: bool = False
) -> Dataset:
    """A Digital Mammography X-Ray Image (For Presentation, or For Processing)."""
    ds = Dataset()
    ds.SOPClassUID = MG_PROCESSING if processing else MG_PRESENTATION
    ds.SOPInstanceUID = generate_uid()
    _patient_study(ds, plan, f"ACC{plan.date}")
    ds.Modality = "MG"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 2 if processing else 1
    ds.InstanceNumber = number
    ds.ImageType = ["DERIVED" if generated else "ORIGINAL", "PRIMARY", "GENERATED_2D" if generated else ""]
    ds.PresentationIntentType = "FOR PROCESSING" if processing else "FOR PRESENTATION"
    ds.PatientOrientation = list(orientation(view))
    ds.ImagerPixelSpacing = [plan.spacing, plan.spacing]
    ds.EstimatedRadiographicMagnificationFactor = plan.magnification
    ds.DetectorType = "DIRECT"
    ds.BurnedInAnnotation = "NO"
    ds.PresentationLUTShape = "IDENTITY"
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    _breast(ds, view)
    tissue = 3000 if processing else None
    _pixels(ds, [to_stored(canonical(view, plan.rows, plan.columns, tissue=tissue, content=plan.content), view.stored)])
    if not processing:
        ds.WindowCenter = [w[0] for w in WINDOWS]
        ds.WindowWidth = [w[1] for w in WINDOWS]
        ds.WindowCenterWidthExplanation = ["NORMAL", "BRIGHT"]
        ds.VOILUTFunction = "SIGMOID" if plan is CURRENT else "LINEAR"
    _file_meta(ds)
    return ds


def _enhanced(ds: Dataset, plan: StudyPlan, view: View, frames: list[np.ndarray], spacing: float) -> None:
    """Multi-frame functional groups: plane orientation from the stored orientation, positions per frame."""
    row, col = (LPS[c] for c in orientation(view))
    normal = np.cross(row, col)
    ds.NumberOfFrames = len(frames)
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [spacing, spacing]
    measures.SliceThickness = 1.0
    shared.PixelMeasuresSequence = Sequence([measures])
    plane = Dataset()
    plane.ImageOrientationPatient = [float(c) for c in (*row, *col)]
    shared.PlaneOrientationSequence = Sequence([plane])
    voi = Dataset()
    voi.WindowCenter = [w[0] for w in WINDOWS]
    voi.WindowWidth = [w[1] for w in WINDOWS]
    voi.WindowCenterWidthExplanation = ["NORMAL", "BRIGHT"]
    voi.VOILUTFunction = "LINEAR"
    shared.FrameVOILUTSequence = Sequence([voi])
    transform = Dataset()
    transform.RescaleIntercept, transform.RescaleSlope, transform.RescaleType = 0, 1, "US"
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for index in range(len(frames)):
        group = Dataset()
        position = Dataset()
        height = 10.0 + 5.0 * index  # mm above the detector, along the slice normal
        position.ImagePositionPatient = [float(c) * height for c in normal]
        group.PlanePositionSequence = Sequence([position])
        content = Dataset()
        content.DimensionIndexValues = [index + 1]
        content.FrameAcquisitionNumber = 1
        group.FrameContentSequence = Sequence([content])
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.FrameOfReferenceUID = generate_uid()
    ds.PositionReferenceIndicator = ""
    ds.ContentQualification = "PRODUCT"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImagerPixelSpacing = [spacing, spacing]
    ds.EstimatedRadiographicMagnificationFactor = 1.0
    _pixels(ds, frames)


def tomo_frames(view: View, rows: int, columns: int, count: int) -> list[np.ndarray]:
    """Slices: the markers on every slice, the findings on `view.finding_slice` only, tissue brighter by slice."""
    frames = []
    for number in range(1, count + 1):
        shown = View(view.laterality, view.view, view.tissue + 40 * number)
        if number == view.finding_slice:
            shown.findings = list(view.findings)
        frames.append(to_stored(canonical(shown, rows, columns), view.stored))
    return frames


def tomo_image(plan: StudyPlan, view: View, series_uid: str, sop_class: UID = BREAST_TOMO) -> Dataset:
    """A Breast Tomosynthesis Image (or Breast Projection X-Ray Image - For Presentation), multi-frame."""
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    _patient_study(ds, plan, f"ACC{plan.date}")
    ds.Modality = "MG"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 3 if sop_class == BREAST_TOMO else 4
    ds.InstanceNumber = 1
    projection = sop_class == BREAST_PROJECTION_PRESENTATION
    ds.ImageType = ["ORIGINAL", "PRIMARY", "TOMOSYNTHESIS", "NONE"]
    ds.AcquisitionDateTime = plan.date + "093000"
    ds.BurnedInAnnotation = "NO"
    ds.PresentationLUTShape = "IDENTITY"
    _breast(ds, view)
    rows, columns = plan.rows // 2, plan.columns // 2
    count = 3 if projection else DBT_SLICES
    _enhanced(ds, plan, view, tomo_frames(view, rows, columns, count), plan.spacing * 2)
    _file_meta(ds)
    return ds


def _content(value_type: str, concept: tuple[str, str, str], relationship: str = "CONTAINS") -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = Sequence([_code(concept)])
    return item


def _image_ref(image: Dataset, frame: int | None = None) -> Dataset:
    item = Dataset()  # no concept name: optional for IMAGE items (PS3.3 C.17.3.2.4)
    item.RelationshipType = "SELECTED FROM"
    item.ValueType = "IMAGE"
    ref = Dataset()
    ref.ReferencedSOPClassUID = image.SOPClassUID
    ref.ReferencedSOPInstanceUID = image.SOPInstanceUID
    if frame is not None:
        ref.ReferencedFrameNumber = frame
    item.ReferencedSOPSequence = Sequence([ref])
    return item


def _finding(
    image: Dataset,
    view: View,
    point: tuple[float, float],
    size: tuple[int, int, tuple[int, int] | None],
    frame: int | None,
) -> Dataset:
    """A Single Image Finding with its Center (POINT) and Outline (CIRCLE), each SELECTED FROM the image."""
    finding = _content("CODE", ("111059", "DCM", "Single Image Finding"))
    finding.ConceptCodeSequence = Sequence([_code(("4147007", "SCT", "Mass"))])
    rows, cols, content = size
    x, y = stored_point(view, point[0], point[1], rows, cols, content)
    center = _content("SCOORD", ("111010", "DCM", "Center"), "HAS PROPERTIES")
    center.GraphicType = "POINT"
    center.GraphicData = [x, y]
    center.ContentSequence = Sequence([_image_ref(image, frame)])
    outline = _content("SCOORD", ("111041", "DCM", "Outline"), "HAS PROPERTIES")
    outline.GraphicType = "CIRCLE"
    outline.GraphicData = [x, y, x + 0.06 * cols, y]
    outline.ContentSequence = Sequence([_image_ref(image, frame)])
    finding.ContentSequence = Sequence([center, outline])
    return finding


def cad_sr(plan: StudyPlan, marked: list[Marked]) -> Dataset:
    """A Mammography CAD SR (TID 4000): image library, and one Single Image Finding per marked finding."""
    ds = Dataset()
    ds.SOPClassUID = MAMMO_CAD_SR
    ds.SOPInstanceUID = generate_uid()
    _patient_study(ds, plan, f"ACC{plan.date}")
    ds.Modality = "SR"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 9
    ds.InstanceNumber = 1
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([_code(("111036", "DCM", "Mammography CAD Report"))])
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "4000"
    ds.ContentTemplateSequence = Sequence([template])
    library = _content("CONTAINER", ("111028", "DCM", "Image Library"))
    library.ContinuityOfContent = "SEPARATE"
    library.ContentSequence = Sequence([])
    summary = _content("CODE", ("111017", "DCM", "CAD Processing and Findings Summary"))
    summary.ConceptCodeSequence = Sequence([_code(("111242", "DCM", "All algorithms succeeded; with findings"))])
    summary.ContentSequence = Sequence([])
    evidence: dict[str, list[Dataset]] = {}
    for image, view, rows, cols, content, frame in marked:
        ref = _image_ref(image)
        ref.RelationshipType = "CONTAINS"
        library.ContentSequence.append(ref)
        for point in view.findings:
            make = _finding_3d if view.three_d else _finding
            summary.ContentSequence.append(make(image, view, point, (rows, cols, content), frame))
        evidence.setdefault(str(image.SeriesInstanceUID), []).append(image)
    ds.ContentSequence = Sequence([library, summary])
    series = []
    for series_uid, images in evidence.items():
        item = Dataset()
        item.SeriesInstanceUID = series_uid
        item.ReferencedSOPSequence = Sequence([_sop_ref(image.SOPClassUID, image.SOPInstanceUID) for image in images])
        series.append(item)
    study = Dataset()
    study.StudyInstanceUID = plan.uid
    study.ReferencedSeriesSequence = Sequence(series)
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([study])
    _file_meta(ds)
    return ds


def _finding_3d(
    image: Dataset,
    view: View,
    point: tuple[float, float],
    size: tuple[int, int, tuple[int, int] | None],
    frame: int | None,
) -> Dataset:
    """A Single Image Finding whose Center is a SCOORD3D POINT in the image's frame of reference (PS3.3 C.18.9)."""
    rows, cols, content = size
    x, y = stored_point(view, point[0], point[1], rows, cols, content)
    shared = image.SharedFunctionalGroupsSequence[0]
    iop = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
    row_spacing, column_spacing = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    ipp = np.array(
        image.PerFrameFunctionalGroupsSequence[(frame or 1) - 1].PlanePositionSequence[0].ImagePositionPatient
    )
    # Image Position (Patient) is the centre of the first pixel, whose image coordinates are (0.5, 0.5).
    patient = ipp + iop[:3] * (x - 0.5) * column_spacing + iop[3:] * (y - 0.5) * row_spacing
    finding = _content("CODE", ("111059", "DCM", "Single Image Finding"))
    finding.ConceptCodeSequence = Sequence([_code(("4147007", "SCT", "Mass"))])
    center = _content("SCOORD3D", ("111010", "DCM", "Center"), "HAS PROPERTIES")
    center.GraphicType = "POINT"
    center.GraphicData = [float(c) for c in patient]
    center.ReferencedFrameOfReferenceUID = image.FrameOfReferenceUID
    finding.ContentSequence = Sequence([center])
    return finding


Marked = tuple[Dataset, View, int, int, "tuple[int, int] | None", "int | None"]
"""An image with CAD findings: image, view, rows, columns, drawn area, frame number."""


def _sop_ref(sop_class: str, sop_instance: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    return item


@dataclass
class MammoData:
    """The objects made, and where each view's markers are."""

    datasets: list[Dataset]
    hung: dict[str, tuple[Dataset, View, StudyPlan]]  # "current-RCC" -> image, view, plan
    processing: list[Dataset]
    extra: dict[str, tuple[Dataset, View, StudyPlan]]  # "current-RCCID"
    tomo: dict[str, tuple[Dataset, View]]  # "RCC" -> BTO
    synthesized: dict[str, Dataset]
    projection: Dataset
    cad: Dataset


def build() -> MammoData:
    """Both studies with new UIDs (the plans' Study Instance UIDs are renewed on every call)."""
    datasets: list[Dataset] = []
    hung: dict[str, tuple[Dataset, View, StudyPlan]] = {}
    extra: dict[str, tuple[Dataset, View, StudyPlan]] = {}
    processing: list[Dataset] = []
    marked: list[Marked] = []
    for name, plan in (("current", CURRENT), ("prior", PRIOR)):
        plan.uid = str(generate_uid())
        series, processing_series = str(generate_uid()), str(generate_uid())
        for number, view in enumerate(plan.views, start=1):
            ds = mg_image(plan, view, series, number)
            datasets.append(ds)
            key = f"{name}-{view.label}"
            (extra if view.modifier else hung)[key] = (ds, view, plan)
            if view.findings:
                marked.append((ds, view, plan.rows, plan.columns, plan.content, None))
            if plan is CURRENT and not view.modifier:
                companion = mg_image(plan, view, processing_series, number, processing=True)
                processing.append(companion)
                datasets.append(companion)
    tomo: dict[str, tuple[Dataset, View]] = {}
    synthesized: dict[str, Dataset] = {}
    tomo_series, synth_series = str(generate_uid()), str(generate_uid())
    for view in DBT_VIEWS:
        bto = tomo_image(CURRENT, view, tomo_series)
        tomo[view.label] = (bto, view)
        datasets.append(bto)
        if view.findings:
            marked.append((bto, view, CURRENT.rows // 2, CURRENT.columns // 2, None, view.finding_slice))
        flat = View(view.laterality, view.view, view.tissue + 400, stored=view.stored)
        synth = mg_image(CURRENT, flat, synth_series, 10 + len(synthesized), generated=True)
        synthesized[view.label] = synth
        datasets.append(synth)
    projection = tomo_image(CURRENT, DBT_VIEWS[0], str(generate_uid()), BREAST_PROJECTION_PRESENTATION)
    datasets.append(projection)
    cad = cad_sr(CURRENT, marked)
    datasets.append(cad)
    return MammoData(datasets, hung, processing, extra, tomo, synthesized, projection, cad)


def write(data: MammoData, folder: Path, *, dicomdir: bool = False) -> list[Path]:
    """Part-10 files in `folder` (as a DICOMDIR media file-set when asked); their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    if dicomdir:
        from pydicom.fileset import FileSet

        fileset = FileSet()
        for ds in data.datasets:
            fileset.add(ds)
        fileset.write(folder)
        fileset._stage["t"].cleanup()  # pydicom's staging folder: otherwise a ResourceWarning when collected
        return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "DICOMDIR")
    paths = []
    for index, ds in enumerate(data.datasets):
        path = folder / f"{index:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def iter_part10(data: MammoData) -> Iterator[bytes]:
    """Each object as Part-10 bytes (for STOW-RS)."""
    import io

    for ds in data.datasets:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        yield buffer.getvalue()


def study_date(plan: StudyPlan) -> _dt.date:
    """The plan's Study Date."""
    return _dt.datetime.strptime(plan.date, "%Y%m%d").date()
