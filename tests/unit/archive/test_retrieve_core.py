"""`archive.retrieve` (and the context planning of `dimse.sending`): what a retrieve designates and sends.

Runs on the backend of PERGAMON_TEST_DB (the `archive` fixture). Covers the retrieve keys of
PS3.4 C.4.2.2.1 (levels per model, unique keys, List of UID Matching, refusals), `locate` at every
level, and `outgoing`: the stored file when its syntax is accepted, else a decompressed Dataset in
Explicit or Implicit VR Little Endian with the same pixels and UIDs, else `CannotConvert`.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import samples
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import (
    MPEG4HP41,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from pynetdicom.dsutils import decode, encode

from pergamon.archive import errors
from pergamon.archive.index.schema import Level
from pergamon.archive.origin import Origin
from pergamon.archive.retrieve import (
    CannotConvert,
    RetrieveRequest,
    StoredInstance,
    locate,
    outgoing,
    parse_identifier,
    prepare_outgoing,
)
from pergamon.dimse.sending import MAX_PRESENTATION_CONTEXTS, plan_associations, proposed_contexts

MR = "1.2.840.10008.5.1.4.1.1.4"
CT = "1.2.840.10008.5.1.4.1.1.2"
VIDEO = "1.2.840.10008.5.1.4.1.1.77.1.4.1"


def identifier(**keys: Any) -> Dataset:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def put(archive: Any, folder: Path, sop_class: str = MR, **kwargs: Any) -> samples.Sample:
    ds = samples.make_instance(sop_class, **kwargs)
    sample = samples.write(ds, folder / f"{ds.SOPInstanceUID}.dcm")
    archive.store_file(sample.path, Origin.from_import(str(sample.path)))
    return sample


def one(archive: Any, sample: samples.Sample) -> StoredInstance:
    request = RetrieveRequest(Level.IMAGE, {"SOPInstanceUID": (sample.sop_instance_uid,)})
    (stored,) = locate(archive, request)
    return stored


# --- retrieve keys -------------------------------------------------------------------------------


def test_study_level_with_a_uid_list() -> None:
    request = parse_identifier(
        identifier(QueryRetrieveLevel="STUDY", StudyInstanceUID=["1.2.3", "1.2.4"], PatientName="ignored"),
        patient_root=False,
    )
    assert request.level is Level.STUDY
    assert request.keys == {"StudyInstanceUID": ("1.2.3", "1.2.4")}
    assert request.describe() == "STUDY StudyInstanceUID=1.2.3 (+1 more)"


def test_higher_keys_narrow_when_present_and_padding_is_ignored() -> None:
    request = parse_identifier(identifier(QueryRetrieveLevel="SERIES", SeriesInstanceUID="1.2.5\0"), patient_root=False)
    assert request.keys == {"SeriesInstanceUID": ("1.2.5",)}
    request = parse_identifier(
        identifier(QueryRetrieveLevel="IMAGE", PatientID="P1", IssuerOfPatientID="HOSP", SOPInstanceUID="1.2.6"),
        patient_root=True,
    )
    assert request.keys == {"PatientID": ("P1",), "SOPInstanceUID": ("1.2.6",)}
    assert request.issuer_of_patient_id == "HOSP"


@pytest.mark.parametrize(
    ("keys", "patient_root", "message"),
    [
        ({"StudyInstanceUID": "1.2.3"}, False, "not a retrieve level"),
        ({"QueryRetrieveLevel": "PATIENT", "PatientID": "P1"}, False, "Study Root"),
        ({"QueryRetrieveLevel": "FRAME", "StudyInstanceUID": "1.2"}, False, "not a retrieve level"),
        ({"QueryRetrieveLevel": "STUDY"}, False, "StudyInstanceUID"),
        ({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": ""}, False, "missing or empty"),
        ({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "*"}, False, "not a UID"),
        ({"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": "1.2.?"}, False, "not a UID"),
        ({"QueryRetrieveLevel": "IMAGE", "SeriesInstanceUID": "1.2"}, False, "SOPInstanceUID"),
        ({"QueryRetrieveLevel": "PATIENT", "PatientID": "PAT*"}, True, "wild cards"),
        ({"QueryRetrieveLevel": "PATIENT", "PatientID": ["A", "B"]}, True, "one Patient ID"),
    ],
)
def test_identifiers_that_do_not_match_the_model_are_refused(
    keys: dict[str, Any], patient_root: bool, message: str
) -> None:
    with pytest.raises(errors.InvalidQuery, match=message):
        parse_identifier(identifier(**keys), patient_root=patient_root)


# --- locating ------------------------------------------------------------------------------------


def test_locate_at_every_level(archive: Any, tmp_path: Path) -> None:
    study_1, study_2, series_a, series_b = (generate_uid() for _ in range(4))
    a1 = put(archive, tmp_path, patient_id="P1", study_uid=study_1, series_uid=series_a, instance_number=1)
    a2 = put(archive, tmp_path, patient_id="P1", study_uid=study_1, series_uid=series_a, instance_number=2)
    b1 = put(archive, tmp_path, CT, patient_id="P1", study_uid=study_1, series_uid=series_b)
    c1 = put(archive, tmp_path, patient_id="P1", study_uid=study_2)
    other = put(archive, tmp_path, patient_id="P2")

    def uids(level: Level, **keys: tuple[str, ...]) -> list[str]:
        return [s.sop_instance_uid for s in locate(archive, RetrieveRequest(level, dict(keys)))]

    assert uids(Level.PATIENT, PatientID=("P1",)) == [s.sop_instance_uid for s in (a1, a2, b1, c1)]
    assert uids(Level.STUDY, StudyInstanceUID=(study_1,)) == [s.sop_instance_uid for s in (a1, a2, b1)]
    assert set(uids(Level.STUDY, StudyInstanceUID=(study_2, other.study_uid))) == {
        c1.sop_instance_uid,
        other.sop_instance_uid,
    }
    assert uids(Level.SERIES, StudyInstanceUID=(study_1,), SeriesInstanceUID=(series_b,)) == [b1.sop_instance_uid]
    assert uids(Level.SERIES, StudyInstanceUID=(study_2,), SeriesInstanceUID=(series_b,)) == []
    assert uids(Level.IMAGE, SOPInstanceUID=(a2.sop_instance_uid, c1.sop_instance_uid)) == [
        a2.sop_instance_uid,
        c1.sop_instance_uid,
    ]
    assert uids(Level.PATIENT, PatientID=("P3",)) == []
    with_issuer = RetrieveRequest(Level.PATIENT, {"PatientID": ("P1",)}, issuer_of_patient_id="ELSEWHERE")
    assert locate(archive, with_issuer) == []

    stored = one(archive, b1)
    assert (stored.sop_class_uid, stored.transfer_syntax, stored.study_uid, stored.series_uid, stored.patient_id) == (
        CT,
        ExplicitVRLittleEndian,
        study_1,
        series_b,
        "P1",
    )
    assert stored.size == b1.path.stat().st_size


# --- what leaves ---------------------------------------------------------------------------------


def test_accepted_stored_syntax_leaves_as_the_stored_file(archive: Any, tmp_path: Path) -> None:
    sample = put(archive, tmp_path, transfer_syntax=JPEGLSLossless)
    stored = one(archive, sample)
    leaving = outgoing(archive, stored, [ExplicitVRLittleEndian, JPEGLSLossless])
    assert leaving.is_stored_file and leaving.transfer_syntax == JPEGLSLossless
    assert isinstance(leaving.content, Path)
    assert leaving.content.read_bytes() == sample.path.read_bytes()
    assert prepare_outgoing(archive, stored) == leaving.content


@pytest.mark.parametrize(
    ("source", "target"),
    [(ts, ExplicitVRLittleEndian) for ts in (JPEGLSLossless, RLELossless, JPEG2000Lossless, ImplicitVRLittleEndian)]
    + [(ts, ImplicitVRLittleEndian) for ts in (JPEGLSLossless, RLELossless, JPEG2000Lossless, ExplicitVRLittleEndian)],
)
def test_conversion_to_uncompressed_keeps_pixels_and_uids(
    archive: Any, tmp_path: Path, source: str, target: str
) -> None:
    sample = put(archive, tmp_path, CT, transfer_syntax=source)
    leaving = outgoing(archive, one(archive, sample), [target])
    assert not leaving.is_stored_file and leaving.transfer_syntax == target
    assert isinstance(leaving.content, Dataset)
    assert leaving.content.file_meta.TransferSyntaxUID == target
    # What pynetdicom puts on the wire for this context, read back as the receiver would.
    implicit = target == ImplicitVRLittleEndian
    wire = encode(leaving.content, implicit, True)
    assert wire is not None
    received = decode(BytesIO(wire), implicit, True)
    received.file_meta = leaving.content.file_meta
    original = dcmread(sample.path)
    assert received.SOPInstanceUID == original.SOPInstanceUID
    assert received.StudyInstanceUID == original.StudyInstanceUID
    assert received.PatientName == original.PatientName
    assert (received.pixel_array == original.pixel_array).all()


def test_big_endian_is_converted_to_little_endian(archive: Any) -> None:
    path = Path(get_testdata_file("MR_small_bigendian.dcm"))  # type: ignore[arg-type]
    result = archive.store_file(path, Origin.from_import(str(path)))
    stored = locate(archive, RetrieveRequest(Level.IMAGE, {"SOPInstanceUID": (result.sop_instance_uid,)}))[0]
    leaving = outgoing(archive, stored, [ExplicitVRLittleEndian])
    assert isinstance(leaving.content, Dataset)
    received = decode(BytesIO(encode(leaving.content, False, True) or b""), False, True)
    received.file_meta = leaving.content.file_meta
    reference = dcmread(get_testdata_file("MR_small.dcm"))
    assert (received.pixel_array == reference.pixel_array).all()
    assert received.Rows == reference.Rows and received.PatientName == reference.PatientName


def test_what_cannot_be_converted_is_refused(archive: Any, tmp_path: Path) -> None:
    video = one(archive, put(archive, tmp_path, VIDEO, transfer_syntax=MPEG4HP41))
    with pytest.raises(CannotConvert, match="cannot decode"):
        outgoing(archive, video, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assert outgoing(archive, video, [MPEG4HP41]).is_stored_file
    jpeg_ls = one(archive, put(archive, tmp_path, transfer_syntax=JPEGLSLossless))
    with pytest.raises(CannotConvert, match="neither"):
        outgoing(archive, jpeg_ls, [JPEG2000Lossless])
    with pytest.raises(CannotConvert):
        outgoing(archive, jpeg_ls, [])


def test_a_missing_blob_is_not_found(archive: Any, tmp_path: Path) -> None:
    stored = one(archive, put(archive, tmp_path))
    archive.blobs.delete(stored.blob_key)
    with pytest.raises(errors.NotFound):
        outgoing(archive, stored, [ExplicitVRLittleEndian])


# --- presentation contexts -----------------------------------------------------------------------


def fake(sop_class: str, syntax: str = ExplicitVRLittleEndian) -> StoredInstance:
    return StoredInstance(sop_class, generate_uid(), syntax, "k", 0, "1.2", "1.2.1", "P")


def test_each_stored_syntax_gets_its_own_context_plus_the_fallback() -> None:
    shapes = [cx.transfer_syntax for cx in proposed_contexts(MR, [JPEGLSLossless, RLELossless, JPEGLSLossless])]
    assert shapes == [[JPEGLSLossless], [RLELossless], [ExplicitVRLittleEndian, ImplicitVRLittleEndian]]
    shapes = [cx.transfer_syntax for cx in proposed_contexts(MR, [ImplicitVRLittleEndian])]
    assert shapes == [[ImplicitVRLittleEndian], [ExplicitVRLittleEndian]]
    shapes = [cx.transfer_syntax for cx in proposed_contexts(MR, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]
    assert shapes == [[ExplicitVRLittleEndian], [ImplicitVRLittleEndian]]


def test_plans_stay_within_128_contexts_and_keep_each_sop_class_whole() -> None:
    classes = [generate_uid() for _ in range(70)]
    instances = [fake(c) for c in classes] + [fake(classes[0], JPEGLSLossless), fake(classes[-1])]
    plans = plan_associations(instances)
    assert len(plans) == 2
    assert all(len(plan.contexts) <= MAX_PRESENTATION_CONTEXTS for plan in plans)
    assert sum(len(plan.instances) for plan in plans) == len(instances)
    for plan in plans:
        offered = {cx.abstract_syntax for cx in plan.contexts}
        assert {s.sop_class_uid for s in plan.instances} <= offered
    assert len(plans[0].contexts) == 3 + 62 * 2  # the first class has three contexts (JPEG-LS too)
    assert len(plan_associations([fake(MR), fake(CT)])) == 1
    assert plan_associations([]) == []
