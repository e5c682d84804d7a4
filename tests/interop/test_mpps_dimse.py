"""MPPS / GP-PPS SCP, MPPS forwarding and IAN (PS3.4 F.7, F.10, R; IHE RAD-6/7, RAD-42, RAD-49) with real peers.

pynetdicom plays the modality (N-CREATE / N-SET, C-STORE) and, on its own port configured as the
`[[dicom.remote]]` "OF", the Order Filler: an MPPS SCP that keeps what it receives and an IAN SCP.
"""

from __future__ import annotations

import copy
import dataclasses
import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port, make_settings
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from pynetdicom import AE, build_context, evt
from pynetdicom.association import Association
from sqlalchemy import select

from pergamon.archive import ian, mpps
from pergamon.archive.index.schema import job
from pergamon.config import RemoteAE, Settings, WorkflowSettings
from pergamon.runtime import Pergamon

pytestmark = pytest.mark.interop

MODALITY = "MODALITY"
ORDER_FILLER = "OF"

# pynetdicom 3.0.4 leaks the socket of a refused connection (see test_commitment.py): harmless.
peer_down = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)


@dataclass(frozen=True)
class Received:
    operation: str
    sop_class: str
    sop_uid: str
    dataset: Dataset
    calling_ae: str


class OrderFiller:
    """A pynetdicom MPPS SCP + IAN SCP that records every message and keeps each MPPS as set."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: queue.Queue[Received] = queue.Queue()
        self.steps: dict[str, Dataset] = {}
        self.refuse_with: int | None = None
        self.ae = AE(ae_title=ORDER_FILLER)
        self.ae.add_supported_context(mpps.MPPS_CLASS)
        self.ae.add_supported_context(ian.IAN_CLASS)
        self.server: Any = None

    def start(self) -> OrderFiller:
        handlers = [(evt.EVT_N_CREATE, self._on_create), (evt.EVT_N_SET, self._on_set)]
        self.server = self.ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def _on_create(self, event: evt.Event) -> tuple[int, None]:
        if self.refuse_with is not None:
            return self.refuse_with, None
        request = event.request
        ds = event.attribute_list
        uid = str(request.AffectedSOPInstanceUID)  # type: ignore[attr-defined]
        sop_class = str(request.AffectedSOPClassUID)  # type: ignore[attr-defined]
        if sop_class == mpps.MPPS_CLASS:
            if uid in self.steps:
                return 0x0111, None
            self.steps[uid] = copy.deepcopy(ds)  # updated by N-SETs; `ds` stays as received
        self.received.put(Received("N-CREATE", sop_class, uid, ds, event.assoc.requestor.ae_title))
        return 0x0000, None

    def _on_set(self, event: evt.Event) -> tuple[int, None]:
        request = event.request
        uid = str(request.RequestedSOPInstanceUID)  # type: ignore[attr-defined]
        ds = event.modification_list
        if uid not in self.steps:
            return 0x0112, None
        for element in ds:
            self.steps[uid][element.tag] = element
        self.received.put(Received("N-SET", mpps.MPPS_CLASS, uid, ds, event.assoc.requestor.ae_title))
        return 0x0000, None

    def next(self, timeout: float = 10.0) -> Received:
        return self.received.get(timeout=timeout)


@pytest.fixture
def peer_port() -> int:
    return free_port()


def workflow_settings(tmp_path: Path, database_url: str, peer_port: int, *, forward: bool = True) -> Settings:
    base = make_settings(
        tmp_path / "data", database_url, remotes=(RemoteAE(ae_title=ORDER_FILLER, host="127.0.0.1", port=peer_port),)
    )
    return dataclasses.replace(
        base,
        jobs=dataclasses.replace(base.jobs, retry_delay=0.2, retry_max_delay=0.5, poll_interval=0.1),
        workflow=WorkflowSettings(
            mpps_forward=(ORDER_FILLER,) if forward else (), ian_destinations=(ORDER_FILLER,) if forward else ()
        ),
    )


@pytest.fixture
def settings_with_peer(tmp_path: Path, database_url: str, peer_port: int) -> Settings:
    return workflow_settings(tmp_path, database_url, peer_port)


@pytest.fixture
def pergamon(settings_with_peer: Settings) -> Iterator[Pergamon]:
    app = Pergamon(settings_with_peer)
    app.start()
    yield app
    app.stop()


@pytest.fixture
def alone(tmp_path: Path, database_url: str, peer_port: int) -> Iterator[Pergamon]:
    """Pergamon forwarding nothing (for the SCP alone)."""
    app = Pergamon(workflow_settings(tmp_path, database_url, peer_port, forward=False))
    app.start()
    yield app
    app.stop()


@pytest.fixture
def order_filler(peer_port: int) -> Iterator[OrderFiller]:
    peer = OrderFiller(peer_port).start()
    yield peer
    peer.stop()


def modality(app: Pergamon, *contexts: Any) -> Association:
    ae = AE(ae_title=MODALITY)
    ae.add_requested_context(mpps.MPPS_CLASS)
    ae.add_requested_context(mpps.GPPPS_CLASS)
    for context in contexts:
        ae.add_requested_context(context.abstract_syntax, context.transfer_syntax)
    assoc = ae.associate("127.0.0.1", app.settings.dicom.port, ae_title=app.settings.dicom.ae_title)
    assert assoc.is_established
    return assoc


def create_attributes(status: str = "IN PROGRESS") -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Müller^Hans"
    ds.PatientID = "P1"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "M"
    step = Dataset()
    step.StudyInstanceUID = generate_uid()
    step.AccessionNumber = "ACC1"
    step.RequestedProcedureID = "RP1"
    step.ScheduledProcedureStepID = "SPS1"
    step.ReferencedStudySequence = []
    ds.ScheduledStepAttributesSequence = [step]
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = MODALITY
    ds.PerformedProcedureStepStartDate = "20261127"
    ds.PerformedProcedureStepStartTime = "101500"
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepDescription = "CT chest"
    ds.Modality = "CT"
    ds.PerformedSeriesSequence = []
    return ds


def completion(refs: list[tuple[str, str, str]], status: str = "COMPLETED") -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = "20261127"
    ds.PerformedProcedureStepEndTime = "103000"
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
        series.PerformingPhysicianName = ""
        series.ProtocolName = "chest"
        series.OperatorsName = ""
        series.SeriesDescription = ""
        series.RetrieveAETitle = ""
        series.ReferencedImageSequence = images
        series.ReferencedNonImageCompositeSOPInstanceSequence = []
        items.append(series)
    ds.PerformedSeriesSequence = items
    return ds


def n_create(assoc: Association, ds: Dataset, uid: str, sop_class: str = mpps.MPPS_CLASS) -> Dataset:
    status, _reply = assoc.send_n_create(ds, sop_class, uid)
    return status


def n_set(assoc: Association, ds: Dataset, uid: str, sop_class: str = mpps.MPPS_CLASS) -> Dataset:
    status, _reply = assoc.send_n_set(ds, sop_class, uid)
    return status


def api(app: Pergamon, path: str, method: str = "GET") -> httpx.Response:
    return httpx.request(method, f"http://127.0.0.1:{app.settings.http.port}/api{path}", timeout=10)


def jobs_of(app: Pergamon, kind: str) -> list[Any]:
    with app.archive.db.read() as conn:
        return list(conn.execute(select(job).where(job.c.kind == kind).order_by(job.c.pk)))


def wait_for(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout} s")


def test_state_machine_and_refusals(alone: Pergamon) -> None:
    """IN PROGRESS -> IN PROGRESS -> COMPLETED; a later N-SET is refused (0110H, A710H) and changes nothing."""
    uid = generate_uid()
    assoc = modality(alone)
    try:
        assert n_create(assoc, create_attributes(), uid).Status == 0x0000
        progress = Dataset()
        progress.PerformedProcedureStepDescription = "CT chest and abdomen"
        assert n_set(assoc, progress, uid).Status == 0x0000
        assert n_set(assoc, completion([("1.2.3", "1.2.840.10008.5.1.4.1.1.2", "1.2.3.1")]), uid).Status == 0x0000
        before = api(alone, f"/mpps/{uid}").json()

        late = completion([], status="DISCONTINUED")
        late.PatientID = "CHANGED"
        refused = n_set(assoc, late, uid)
        assert refused.Status == 0x0110
        assert refused.ErrorComment == "Performed Procedure Step Object may no longer be updated"
        assert refused.ErrorID == 0xA710

        assert n_create(assoc, create_attributes(), uid).Status == 0x0111  # duplicate SOP instance
        assert n_create(assoc, create_attributes("COMPLETED"), generate_uid()).Status == 0x0106
        assert n_set(assoc, progress, generate_uid()).Status == 0x0112  # no such object instance
        assert n_set(assoc, progress, uid, mpps.GPPPS_CLASS).Status == 0x0119  # class-instance conflict
        assert n_create(assoc, create_attributes(), generate_uid()).Status == 0x0000  # the next request still works
    finally:
        assoc.release()

    after = api(alone, f"/mpps/{uid}").json()
    assert after == before
    assert after["status"] == "COMPLETED"
    assert after["attributes"]["00400254"]["Value"] == ["CT chest and abdomen"]  # Performed Procedure Step Description
    assert after["references"] == [
        {"series_instance_uid": "1.2.3", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "sop_instance_uid": "1.2.3.1"}
    ]
    listed = api(alone, "/mpps?state=COMPLETED").json()
    assert [item["sop_instance_uid"] for item in listed["items"]] == [uid]
    assert api(alone, "/mpps?state=IN%20PROGRESS").json()["total"] == 1  # the one created after the refusals
    assert api(alone, "/mpps?state=bogus").status_code == 400
    assert api(alone, f"/mpps/{generate_uid()}").status_code == 404


def test_gp_pps_create_and_set_are_accepted(alone: Pergamon) -> None:
    """RAD-42: the retired GP-PPS SOP class is negotiated and its N-CREATE / N-SET handled."""
    uid = generate_uid()
    created = Dataset()
    created.PatientID = "P1"
    created.PatientName = "Doe^Jane"
    created.GeneralPurposePerformedProcedureStepStatus = "IN PROGRESS"
    created.PerformedProcedureStepID = "READ1"
    done = Dataset()
    done.GeneralPurposePerformedProcedureStepStatus = "COMPLETED"
    assoc = modality(alone)
    try:
        gp_contexts = [cx for cx in assoc.accepted_contexts if cx.abstract_syntax == mpps.GPPPS_CLASS]
        assert gp_contexts, "GP-PPS presentation context not accepted"
        assert n_create(assoc, created, uid, mpps.GPPPS_CLASS).Status == 0x0000
        assert n_set(assoc, done, uid, mpps.GPPPS_CLASS).Status == 0x0000
        assert n_set(assoc, done, uid, mpps.GPPPS_CLASS).Status == 0x0110
    finally:
        assoc.release()
    shown = api(alone, f"/mpps/{uid}").json()
    assert (shown["sop_class_uid"], shown["status"]) == (mpps.GPPPS_CLASS, "COMPLETED")


def test_forwarded_mpps_has_the_same_uid_and_attributes(pergamon: Pergamon, order_filler: OrderFiller) -> None:
    uid = generate_uid()
    sent_create = create_attributes()
    sent_set = completion([("1.2.3", "1.2.840.10008.5.1.4.1.1.2", "1.2.3.1")])
    assoc = modality(pergamon)
    try:
        assert n_create(assoc, sent_create, uid).Status == 0x0000
        assert n_set(assoc, sent_set, uid).Status == 0x0000
    finally:
        assoc.release()

    first, second = order_filler.next(), order_filler.next()
    assert (first.operation, first.sop_uid, first.calling_ae) == ("N-CREATE", uid, pergamon.settings.dicom.ae_title)
    assert first.dataset == sent_create
    assert first.dataset.PatientName == "Müller^Hans"
    assert (second.operation, second.sop_uid) == ("N-SET", uid)
    assert second.dataset == sent_set
    assert order_filler.steps[uid].PerformedProcedureStepStatus == "COMPLETED"
    assert mpps.get(pergamon.archive, uid).dataset() == order_filler.steps[uid]  # same final state on both sides
    wait_for(lambda: all(r.state == "done" for r in jobs_of(pergamon, mpps.FORWARD_JOB)))
    shown = api(pergamon, f"/mpps/{uid}").json()
    assert shown["forwarding"] == [{"destination": ORDER_FILLER, "delivered": 2, "pending": 0}]


@peer_down
def test_destination_down_then_up_gets_everything_in_order(pergamon: Pergamon, peer_port: int) -> None:
    uid = generate_uid()
    assoc = modality(pergamon)
    try:
        assert n_create(assoc, create_attributes(), uid).Status == 0x0000
        assert n_set(assoc, completion([]), uid).Status == 0x0000
    finally:
        assoc.release()
    row = wait_for(lambda: next((r for r in jobs_of(pergamon, mpps.FORWARD_JOB) if r.last_error), None))
    assert f"{ORDER_FILLER}@127.0.0.1:{peer_port}" in row.last_error
    listed = api(pergamon, f"/jobs?kind={mpps.FORWARD_JOB}").json()
    assert any(item["last_error"] for item in listed["jobs"])

    peer = OrderFiller(peer_port).start()
    try:
        received = [peer.next(), peer.next()]
        wait_for(lambda: all(r.state == "done" for r in jobs_of(pergamon, mpps.FORWARD_JOB)))
    finally:
        peer.stop()
    assert [(r.operation, r.sop_uid) for r in received] == [("N-CREATE", uid), ("N-SET", uid)]
    assert peer.received.empty()  # each message delivered once


@peer_down
def test_pending_forwarding_survives_a_restart(settings_with_peer: Settings, peer_port: int) -> None:
    uid = generate_uid()
    first = Pergamon(settings_with_peer)
    first.start()
    try:
        assoc = modality(first)
        try:
            assert n_create(assoc, create_attributes(), uid).Status == 0x0000
            assert n_set(assoc, completion([]), uid).Status == 0x0000
        finally:
            assoc.release()
        wait_for(lambda: next((r for r in jobs_of(first, mpps.FORWARD_JOB) if r.last_error), None))
    finally:
        first.stop()

    second = Pergamon(settings_with_peer)
    second.start()
    peer = OrderFiller(peer_port).start()
    try:
        received = [peer.next(), peer.next()]
        wait_for(lambda: all(r.state == "done" for r in jobs_of(second, mpps.FORWARD_JOB)))
    finally:
        peer.stop()
        second.stop()
    assert [(r.operation, r.sop_uid) for r in received] == [("N-CREATE", uid), ("N-SET", uid)]
    assert received[1].dataset.PerformedProcedureStepStatus == "COMPLETED"


def test_refused_forwarding_fails_and_an_operator_retries_it(pergamon: Pergamon, order_filler: OrderFiller) -> None:
    order_filler.refuse_with = 0x0110
    uid = generate_uid()
    assoc = modality(pergamon)
    try:
        assert n_create(assoc, create_attributes(), uid).Status == 0x0000
    finally:
        assoc.release()
    failed = wait_for(lambda: api(pergamon, f"/jobs?state=failed&kind={mpps.FORWARD_JOB}").json()["jobs"])
    assert "0x0110" in failed[0]["last_error"]
    pk = failed[0]["pk"]
    assert api(pergamon, f"/jobs/{pk}").json()["payload"]["sop_uid"] == uid

    order_filler.refuse_with = None
    retried = api(pergamon, f"/jobs/{pk}/retry", method="POST")
    assert retried.status_code == 200 and retried.json()["state"] in ("pending", "running", "done")
    assert order_filler.next().sop_uid == uid
    wait_for(lambda: api(pergamon, f"/jobs/{pk}").json()["state"] == "done")
    assert api(pergamon, f"/jobs/{pk}/retry", method="POST").status_code == 409
    assert api(pergamon, "/jobs/999999999/retry", method="POST").status_code == 404
    assert api(pergamon, "/jobs?state=bogus").status_code == 400


def three_instances(directory: Path) -> list[Path]:
    """Three CT images of one new series (copies of pydicom's CT_small with new UIDs)."""
    source = dcmread(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]
    series_uid = generate_uid()
    paths = []
    for number in range(1, 4):
        ds = copy.deepcopy(source)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = number
        paths.append(directory / f"ct{number}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def test_ian_after_the_last_referenced_instance(pergamon: Pergamon, order_filler: OrderFiller, tmp_path: Path) -> None:
    """MPPS completed referencing 3 instances; 2 stored: no IAN; the 3rd: IAN with the right references."""
    paths = three_instances(tmp_path)
    datasets = [dcmread(p, stop_before_pixels=True) for p in paths]
    refs = [(str(ds.SeriesInstanceUID), str(ds.SOPClassUID), str(ds.SOPInstanceUID)) for ds in datasets]
    context = build_context(datasets[0].SOPClassUID, datasets[0].file_meta.TransferSyntaxUID)
    uid = generate_uid()
    assoc = modality(pergamon, context)
    try:
        assert n_create(assoc, create_attributes(), uid).Status == 0x0000
        assert assoc.send_c_store(paths[0]).Status == 0x0000
        assert n_set(assoc, completion(refs), uid).Status == 0x0000
        assert assoc.send_c_store(paths[1]).Status == 0x0000
    finally:
        assoc.release()
    forwarded = [order_filler.next(), order_filler.next()]
    assert [r.operation for r in forwarded] == ["N-CREATE", "N-SET"]
    assert jobs_of(pergamon, ian.IAN_JOB) == []  # two of three stored: nothing to announce yet
    assert api(pergamon, f"/mpps/{uid}").json()["ian_queued_at"] is None

    assoc = modality(pergamon, context)
    try:
        assert assoc.send_c_store(paths[2]).Status == 0x0000
    finally:
        assoc.release()
    notification = order_filler.next()
    assert (notification.operation, notification.sop_class) == ("N-CREATE", ian.IAN_CLASS)
    ds = notification.dataset
    assert ds.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPClassUID == mpps.MPPS_CLASS
    assert ds.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPInstanceUID == uid
    assert ds.StudyInstanceUID == datasets[0].StudyInstanceUID
    references = [
        (str(series.SeriesInstanceUID), str(ref.ReferencedSOPClassUID), str(ref.ReferencedSOPInstanceUID))
        for series in ds.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    ]
    assert sorted(references) == sorted(refs)
    for series in ds.ReferencedSeriesSequence:
        for ref in series.ReferencedSOPSequence:
            assert (ref.InstanceAvailability, ref.RetrieveAETitle) == ("ONLINE", pergamon.settings.dicom.ae_title)
    wait_for(lambda: all(r.state == "done" for r in jobs_of(pergamon, ian.IAN_JOB)))
    assert order_filler.received.empty()  # one notification, sent once


# --- workflow checks across peers (ihe-radiology.md 3.1 check 2 and 5, 3.3 CATH, 3.9 RWF) --------------------------

REPORT_MANAGER = "RM"


def study_find(app: Pergamon, study_uid: str) -> Dataset:
    """RAD-11 Image Availability Query: a Study Root C-FIND by Study Instance UID (pynetdicom as the SCU)."""
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as StudyFind

    ae = AE(ae_title=ORDER_FILLER)
    ae.add_requested_context(StudyFind)
    assoc = ae.associate("127.0.0.1", app.settings.dicom.port, ae_title=app.settings.dicom.ae_title)
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_uid
    identifier.ModalitiesInStudy = ""
    identifier.NumberOfStudyRelatedSeries = ""
    identifier.NumberOfStudyRelatedInstances = ""
    try:
        found = [ds for status, ds in assoc.send_c_find(identifier, StudyFind) if status and status.Status == 0xFF00]
    finally:
        assoc.release()
    assert len(found) == 1, found
    return found[0]


@pytest.fixture
def rwf(tmp_path: Path, database_url: str) -> Iterator[tuple[Pergamon, OrderFiller, OrderFiller]]:
    """Pergamon as PPS Manager forwarding to an Order Filler and a Report Manager (two pynetdicom peers)."""
    of_port, rm_port = free_port(), free_port()
    base = make_settings(tmp_path / "data", database_url, remotes=(
        RemoteAE(ae_title=ORDER_FILLER, host="127.0.0.1", port=of_port),
        RemoteAE(ae_title=REPORT_MANAGER, host="127.0.0.1", port=rm_port),
    ))  # fmt: skip
    settings = dataclasses.replace(
        base,
        jobs=dataclasses.replace(base.jobs, retry_delay=0.2, retry_max_delay=0.5, poll_interval=0.1),
        workflow=WorkflowSettings(mpps_forward=(ORDER_FILLER, REPORT_MANAGER)),
    )
    order_filler, report_manager = OrderFiller(of_port).start(), OrderFiller(rm_port).start()
    app = Pergamon(settings)
    app.start()
    try:
        yield app, order_filler, report_manager
    finally:
        app.stop()
        order_filler.stop()
        report_manager.stop()


def test_mpps_reaches_the_order_filler_and_the_report_manager(
    rwf: tuple[Pergamon, OrderFiller, OrderFiller], tmp_path: Path
) -> None:
    """SWF check 2 and RWF: both get N-CREATE and N-SET with the same UID; RAD-11 then sees the instances."""
    app, order_filler, report_manager = rwf
    (path, *_rest) = three_instances(tmp_path)
    image = dcmread(path, stop_before_pixels=True)
    refs = [(str(image.SeriesInstanceUID), str(image.SOPClassUID), str(image.SOPInstanceUID))]
    attributes = create_attributes()
    attributes.ScheduledStepAttributesSequence[0].StudyInstanceUID = image.StudyInstanceUID
    uid = generate_uid()
    assoc = modality(app, build_context(image.SOPClassUID, image.file_meta.TransferSyntaxUID))
    try:
        assert n_create(assoc, attributes, uid).Status == 0x0000
        assert assoc.send_c_store(path).Status == 0x0000
        assert n_set(assoc, completion(refs), uid).Status == 0x0000
    finally:
        assoc.release()
    for peer in (order_filler, report_manager):
        got = [peer.next(), peer.next()]
        assert [(r.operation, r.sop_uid) for r in got] == [("N-CREATE", uid), ("N-SET", uid)]
        assert peer.steps[uid] == mpps.get(app.archive, uid).dataset()  # the same final state everywhere
    found = study_find(app, str(image.StudyInstanceUID))
    assert (int(found.NumberOfStudyRelatedSeries), int(found.NumberOfStudyRelatedInstances)) == (1, 1)


def test_cath_one_order_several_modalities_and_mpps_make_one_study(alone: Pergamon, tmp_path: Path) -> None:
    """CATH (ihe-radiology.md 3.3): one procedure, two modalities each with its MPPS: one study, both steps done."""
    import hl7.client
    from order_messages import orm
    from samples import make_instance

    study_uid = generate_uid()
    order = orm("NW", "PL-CATH", accession="ACC-CATH", study_uid=study_uid, patient_id="P1", issuer="")
    with hl7.client.MLLPClient("127.0.0.1", alone.hl7.port, encoding="ascii") as client:
        assert b"MSA|AA|" in client.send_message(order)
    steps = []
    for station, sop_class, kind in (
        ("XA_ROOM1", "1.2.840.10008.5.1.4.1.1.12.1", "XA"),  # X-Ray Angiographic Image
        ("IVUS_CART", "1.2.840.10008.5.1.4.1.1.3.1", "IVUS"),  # Ultrasound Multi-frame Image
    ):
        ds = make_instance(sop_class, patient_id="P1", study_uid=study_uid, accession_number="ACC-CATH",
                           modality=kind, rows=8, cols=8)  # fmt: skip
        attributes = create_attributes()
        attributes.ScheduledStepAttributesSequence[0].StudyInstanceUID = study_uid
        attributes.ScheduledStepAttributesSequence[0].AccessionNumber = "ACC-CATH"
        attributes.PerformedStationAETitle = station
        attributes.Modality = ds.Modality
        uid = generate_uid()
        ae = AE(ae_title=station)
        ae.add_requested_context(mpps.MPPS_CLASS)
        ae.add_requested_context(sop_class, ds.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", alone.settings.dicom.port, ae_title=alone.settings.dicom.ae_title)
        assert assoc.is_established
        try:
            assert n_create(assoc, attributes, uid).Status == 0x0000
            assert assoc.send_c_store(ds).Status == 0x0000
            refs = [(str(ds.SeriesInstanceUID), sop_class, str(ds.SOPInstanceUID))]
            assert n_set(assoc, completion(refs), uid).Status == 0x0000
        finally:
            assoc.release()
        steps.append(uid)

    for uid in steps:
        shown = api(alone, f"/mpps/{uid}").json()
        assert (shown["status"], shown["study_instance_uid"]) == ("COMPLETED", study_uid)
    found = study_find(alone, study_uid)
    assert sorted(found.ModalitiesInStudy) == ["IVUS", "XA"]
    assert (int(found.NumberOfStudyRelatedSeries), int(found.NumberOfStudyRelatedInstances)) == (2, 2)
    (summary,) = [o for o in api(alone, "/orders").json()["orders"] if o["placer_order_number"] == "PL-CATH"]
    assert summary["linked_studies"] == 1
