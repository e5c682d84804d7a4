"""Performed procedure steps in the core (`archive.mpps`, `archive.ian`): states, merge, forwarding log, IAN."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from sqlalchemy import select

from pergamon.archive import ian, mpps
from pergamon.archive.events import ApplicationStarted
from pergamon.archive.index.schema import job
from pergamon.archive.origin import Origin
from pergamon.archive.service import Archive
from pergamon.config import ConfigError, RemoteAE, Settings, WorkflowSettings, load_settings

FILES = ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm")


@pytest.fixture
def workflow_settings(tmp_path: Path, database_url: str) -> Settings:
    base = make_settings(
        tmp_path / "data",
        database_url,
        remotes=(RemoteAE(ae_title="OF", port=1), RemoteAE(ae_title="RM", port=2)),
    )
    return dataclasses.replace(base, workflow=WorkflowSettings(mpps_forward=("OF", "RM"), ian_destinations=("OF",)))


@pytest.fixture
def core(workflow_settings: Settings) -> Iterator[Archive]:
    archive = Archive.open(workflow_settings)
    archive.bus.subscribe(ian.IanTrigger(archive))
    yield archive
    archive.close()


def in_progress(**extra: Any) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Müller^Hans"
    ds.PatientID = "P1"
    step = Dataset()
    step.StudyInstanceUID = "1.2.3.4"
    step.AccessionNumber = "A1"
    ds.ScheduledStepAttributesSequence = [step]
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "MODALITY"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedSeriesSequence = []
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    return ds


def performed_series(refs: list[tuple[str, str, str]]) -> list[Dataset]:
    """A Performed Series Sequence referencing (series, SOP class, SOP instance) triples."""
    by_series: dict[str, list[Dataset]] = {}
    for series_uid, sop_class, sop_uid in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_uid
        by_series.setdefault(series_uid, []).append(item)
    items = []
    for series_uid, images in by_series.items():
        series = Dataset()
        series.SeriesInstanceUID = series_uid
        series.RetrieveAETitle = ""
        series.ReferencedImageSequence = images
        items.append(series)
    return items


def completed(refs: list[tuple[str, str, str]], status: str = "COMPLETED") -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = "20261127"
    ds.PerformedSeriesSequence = performed_series(refs)
    return ds


def jobs_of(archive: Archive, kind: str) -> list[Any]:
    with archive.db.read() as conn:
        return list(conn.execute(select(job).where(job.c.kind == kind).order_by(job.c.pk)))


def test_create_in_progress_records_step_message_and_forwarding_jobs(core: Archive) -> None:
    uid = generate_uid()
    step = mpps.create(core, mpps.MPPS_CLASS, uid, in_progress(), "MODALITY")
    assert (step.status, step.patient_id, step.study_uid, step.calling_ae) == (
        "IN PROGRESS",
        "P1",
        "1.2.3.4",
        "MODALITY",
    )
    assert step.dataset().PatientName == "Müller^Hans"
    forwards = jobs_of(core, mpps.FORWARD_JOB)
    assert sorted(json.loads(r.payload)["destination"] for r in forwards) == ["OF", "RM"]
    _cls, pending = mpps.undelivered(core, uid, "OF")
    assert [(m.seq, m.operation) for m in pending] == [(1, "N-CREATE")]
    assert pending[0].dataset() == in_progress()


@pytest.mark.parametrize("status", ["COMPLETED", "DISCONTINUED", "", "in progress"])
def test_create_not_in_progress_is_refused_and_stores_nothing(core: Archive, status: str) -> None:
    with pytest.raises(mpps.InvalidStatus):
        mpps.create(core, mpps.MPPS_CLASS, generate_uid(), in_progress(PerformedProcedureStepStatus=status))
    assert mpps.search(core) == ([], 0)
    assert jobs_of(core, mpps.FORWARD_JOB) == []


def test_create_without_status_is_missing_attribute(core: Archive) -> None:
    ds = in_progress()
    del ds.PerformedProcedureStepStatus
    with pytest.raises(mpps.MissingStatus):
        mpps.create(core, mpps.MPPS_CLASS, generate_uid(), ds)


def test_duplicate_create_is_refused_and_the_first_kept(core: Archive) -> None:
    uid = generate_uid()
    mpps.create(core, mpps.MPPS_CLASS, uid, in_progress())
    with pytest.raises(mpps.DuplicateStep):
        mpps.create(core, mpps.MPPS_CLASS, uid, in_progress(PatientID="OTHER"))
    assert mpps.get(core, uid).patient_id == "P1"
    assert len(jobs_of(core, mpps.FORWARD_JOB)) == 2


def test_set_merges_and_a_final_state_cannot_be_updated(core: Archive) -> None:
    uid = generate_uid()
    mpps.create(core, mpps.MPPS_CLASS, uid, in_progress())
    refs = [("1.2.9.1", "1.2.840.10008.5.1.4.1.1.2", "1.2.9.1.1")]
    progress = Dataset()
    progress.PerformedProcedureStepDescription = "half way"
    progress.PerformedSeriesSequence = performed_series(refs)
    assert mpps.update(core, mpps.MPPS_CLASS, uid, progress).status == "IN PROGRESS"
    done = mpps.update(core, mpps.MPPS_CLASS, uid, completed(refs))
    assert done.status == "COMPLETED" and done.is_final and done.last_seq == 3
    ds = done.dataset()
    assert ds.PerformedProcedureStepDescription == "half way"  # kept
    assert ds.PerformedProcedureStepEndDate == "20261127"  # added
    assert ds.PatientName == "Müller^Hans"
    assert mpps.references(core, uid) == refs

    before = mpps.get(core, uid)
    again = Dataset()
    again.PerformedProcedureStepStatus = "DISCONTINUED"
    again.PatientID = "CHANGED"
    with pytest.raises(mpps.NoLongerUpdatable, match="may no longer be updated"):
        mpps.update(core, mpps.MPPS_CLASS, uid, again)
    assert mpps.get(core, uid) == before  # nothing changed
    assert len(jobs_of(core, mpps.FORWARD_JOB)) == 6  # 3 messages x 2 destinations, none for the refused one


def test_set_replaces_a_sequence_as_a_whole(core: Archive) -> None:
    uid = generate_uid()
    first = [
        ("1.2.9.1", "1.2.840.10008.5.1.4.1.1.2", "1.2.9.1.1"),
        ("1.2.9.1", "1.2.840.10008.5.1.4.1.1.2", "1.2.9.1.2"),
    ]
    mpps.create(core, mpps.MPPS_CLASS, uid, in_progress(PerformedSeriesSequence=performed_series(first)))
    mpps.update(core, mpps.MPPS_CLASS, uid, completed(first[1:]))
    assert mpps.references(core, uid) == first[1:]
    assert len(mpps.get(core, uid).dataset().PerformedSeriesSequence[0].ReferencedImageSequence) == 1


def test_set_errors_change_nothing(core: Archive) -> None:
    uid = generate_uid()
    mpps.create(core, mpps.MPPS_CLASS, uid, in_progress())
    before = mpps.get(core, uid)
    with pytest.raises(mpps.NoSuchStep):
        mpps.update(core, mpps.MPPS_CLASS, generate_uid(), completed([]))
    with pytest.raises(mpps.ClassInstanceConflict):
        mpps.update(core, mpps.GPPPS_CLASS, uid, Dataset())
    with pytest.raises(mpps.InvalidStatus):
        mpps.update(core, mpps.MPPS_CLASS, uid, completed([], status="DONE"))
    assert mpps.get(core, uid) == before


def test_specific_character_set_is_combined_not_replaced() -> None:
    current = {
        "00080005": {"vr": "CS", "Value": ["ISO_IR 100"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller"}]},
    }
    same = mpps.merge(current, {"00080005": {"vr": "CS", "Value": ["ISO_IR 100"]}})
    assert same["00080005"]["Value"] == ["ISO_IR 100"]
    mixed = mpps.merge(
        current, {"00080005": {"vr": "CS", "Value": ["ISO_IR 144"]}, "00081030": {"vr": "LO", "Value": ["Ж"]}}
    )
    assert mixed["00080005"]["Value"] == ["ISO_IR 192"]
    assert Dataset.from_json(mixed).PatientName == "Müller"


def test_forwarding_log_tracks_each_destination(core: Archive) -> None:
    uid = generate_uid()
    mpps.create(core, mpps.MPPS_CLASS, uid, in_progress())
    mpps.update(core, mpps.MPPS_CLASS, uid, completed([]))
    mpps.mark_delivered(core, uid, "OF", 1)
    assert [m.seq for m in mpps.undelivered(core, uid, "OF")[1]] == [2]
    assert [m.seq for m in mpps.undelivered(core, uid, "RM")[1]] == [1, 2]
    mpps.mark_delivered(core, uid, "OF", 2)
    mpps.mark_delivered(core, uid, "OF", 1)  # late acknowledgement of an older message: no step back
    assert mpps.forwarding(core, uid) == {"OF": 2, "RM": 0}


def test_gp_pps_is_stored_with_its_own_status_and_not_forwarded(core: Archive) -> None:
    uid = generate_uid()
    ds = Dataset()
    ds.PatientID = "P1"
    ds.GeneralPurposePerformedProcedureStepStatus = "IN PROGRESS"
    mpps.create(core, mpps.GPPPS_CLASS, uid, ds, "RPTMGR")
    done = Dataset()
    done.GeneralPurposePerformedProcedureStepStatus = "COMPLETED"
    assert mpps.update(core, mpps.GPPPS_CLASS, uid, done).status == "COMPLETED"
    with pytest.raises(mpps.NoLongerUpdatable):
        mpps.update(core, mpps.GPPPS_CLASS, uid, done)
    assert jobs_of(core, mpps.FORWARD_JOB) == []
    steps, total = mpps.search(core, sop_class_uid=mpps.GPPPS_CLASS, status="COMPLETED")
    assert total == 1 and steps[0].sop_uid == uid


def store(archive: Archive, name: str) -> tuple[str, str, str]:
    path = Path(get_testdata_file(name))  # type: ignore[arg-type]
    archive.store_file(path, Origin.from_import(str(path)))
    ds = dcmread(path, stop_before_pixels=True)
    return str(ds.SeriesInstanceUID), str(ds.SOPClassUID), str(ds.SOPInstanceUID)


def test_ian_is_queued_once_when_the_last_referenced_instance_arrives(core: Archive) -> None:
    refs = [
        (str(ds.SeriesInstanceUID), str(ds.SOPClassUID), str(ds.SOPInstanceUID))
        for ds in (dcmread(get_testdata_file(name), stop_before_pixels=True) for name in FILES)  # type: ignore[arg-type]
    ]
    uid = generate_uid()
    mpps.create(core, mpps.MPPS_CLASS, uid, in_progress())
    store(core, FILES[0])
    store(core, FILES[1])
    mpps.update(core, mpps.MPPS_CLASS, uid, completed(refs))
    assert jobs_of(core, ian.IAN_JOB) == []
    assert mpps.get(core, uid).ian_queued_at is None

    store(core, FILES[2])
    queued = jobs_of(core, ian.IAN_JOB)
    assert mpps.get(core, uid).ian_queued_at is not None
    payloads = [json.loads(row.payload) for row in queued]
    assert {p["destination"] for p in payloads} == {"OF"}
    notified = {
        str(ref.ReferencedSOPInstanceUID): (str(ref.InstanceAvailability), str(ref.RetrieveAETitle))
        for p in payloads
        for series in Dataset.from_json(p["attrs"]).ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    assert notified == {sop_uid: ("ONLINE", "PERGAMON") for _s, _c, sop_uid in refs}
    first = Dataset.from_json(payloads[0]["attrs"])
    assert first.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPInstanceUID == uid

    store(core, FILES[2])  # stored again (duplicate policy replace): no second notification
    assert not ian.check(core, uid)
    assert len(jobs_of(core, ian.IAN_JOB)) == len(queued)


def test_ian_when_the_instances_come_first(core: Archive) -> None:
    refs = [store(core, name) for name in FILES]
    uid = generate_uid()
    mpps.create(core, mpps.MPPS_CLASS, uid, in_progress())
    assert jobs_of(core, ian.IAN_JOB) == []
    mpps.update(core, mpps.MPPS_CLASS, uid, completed(refs, status="DISCONTINUED"))
    assert len(jobs_of(core, ian.IAN_JOB)) == 3  # one per study (three test files, three studies), one destination


def test_workflow_destinations_must_be_configured_peers(tmp_path: Path) -> None:
    config = tmp_path / "pergamon.toml"
    config.write_text('[[dicom.remote]]\nae_title = "RIS"\nport = 104\n[workflow]\nmpps_forward = ["RIS"]\n')
    assert load_settings(config, environ={}).workflow.mpps_forward == ("RIS",)
    config.write_text('[[dicom.remote]]\nae_title = "RIS"\nport = 104\n[workflow]\nian_destinations = ["RIS", "OF"]\n')
    with pytest.raises(ConfigError, match=r"workflow\.ian_destinations\[1\]: 'OF' is not the ae_title"):
        load_settings(config, environ={})


def test_a_missed_check_is_made_good_at_the_next_start(workflow_settings: Settings) -> None:
    """Instances and MPPS committed but never checked (a crash): the next start queues the IAN."""
    archive = Archive.open(workflow_settings)  # no IanTrigger subscribed: every check is missed
    try:
        refs = [store(archive, name) for name in FILES[:2]]
        uid = generate_uid()
        mpps.create(archive, mpps.MPPS_CLASS, uid, in_progress())
        mpps.update(archive, mpps.MPPS_CLASS, uid, completed(refs))
        assert jobs_of(archive, ian.IAN_JOB) == []
        trigger = ian.IanTrigger(archive)
        trigger(ApplicationStarted(ae_title="PERGAMON"))
        assert len(jobs_of(archive, ian.IAN_JOB)) == 2  # two studies, one destination
        trigger(ApplicationStarted(ae_title="PERGAMON"))
        assert len(jobs_of(archive, ian.IAN_JOB)) == 2  # once
    finally:
        archive.close()


def test_a_destination_configured_later_gets_every_message(workflow_settings: Settings) -> None:
    uid = generate_uid()
    first = Archive.open(dataclasses.replace(workflow_settings, workflow=WorkflowSettings(mpps_forward=("OF",))))
    try:
        mpps.create(first, mpps.MPPS_CLASS, uid, in_progress())
    finally:
        first.close()
    later = Archive.open(workflow_settings)  # RM added
    try:
        mpps.update(later, mpps.MPPS_CLASS, uid, completed([]))
        assert [m.seq for m in mpps.undelivered(later, uid, "RM")[1]] == [1, 2]
        mpps.mark_delivered(later, uid, "RM", 2)
        assert mpps.forwarding(later, uid) == {"OF": 0, "RM": 2}
    finally:
        later.close()


def test_steps_follow_their_patient_through_a_merge_and_an_identifier_change(core: Archive) -> None:
    """ihe-radiology.md 2.7: on an A40 the MPPS of the MRG patient move to the PID patient (and on an A47)."""
    from pergamon.archive.patients import PatientKey, change_identifier, merge, update_demographics

    with_issuer, without, other = generate_uid(), generate_uid(), generate_uid()
    mpps.create(core, mpps.MPPS_CLASS, with_issuer, in_progress(PatientID="TMP1", IssuerOfPatientID="HOSP"))
    mpps.create(core, mpps.MPPS_CLASS, without, in_progress(PatientID="TMP1"))
    mpps.create(core, mpps.MPPS_CLASS, other, in_progress(PatientID="TMP1", IssuerOfPatientID="ELSEWHERE"))
    assert (mpps.get(core, with_issuer).patient_id, mpps.get(core, with_issuer).issuer) == ("TMP1", "HOSP")

    merge(core, PatientKey("REAL1", "HOSP"), PatientKey("TMP1", "HOSP"))
    step = mpps.get(core, with_issuer)
    assert (step.patient_id, step.issuer) == ("REAL1", "HOSP")
    assert step.dataset().PatientID == "TMP1"  # what the modality sent (and what is forwarded) stays
    assert mpps.get(core, without).patient_id == "TMP1"  # another patient: same ID, no issuer
    assert (mpps.get(core, other).patient_id, mpps.get(core, other).issuer) == ("TMP1", "ELSEWHERE")

    progress = Dataset()
    progress.PerformedProcedureStepDescription = "still going"
    assert mpps.update(core, mpps.MPPS_CLASS, with_issuer, progress).patient_id == "REAL1"  # not reverted

    update_demographics(core, PatientKey("TMP1"), {})
    change_identifier(core, PatientKey("TMP1"), PatientKey("NEW1", "HOSP"))
    step = mpps.get(core, without)
    assert (step.patient_id, step.issuer) == ("NEW1", "HOSP")

    changed = Dataset()
    changed.PatientID = "FIXED1"
    assert mpps.update(core, mpps.MPPS_CLASS, without, changed).patient_id == "FIXED1"  # an explicit new ID wins
