"""Storage Commitment Push Model SCP (PS3.4 Annex J, IHE RAD-10) against real pynetdicom peers.

The requester is a pynetdicom AE playing a modality: it sends the N-ACTION, and a second AE of
the same title listens on its own port (configured in Pergamon as a `[[dicom.remote]]`) for
N-EVENT-REPORTs arriving on a new association. Objects are stored with dcmtk `storescu` or
straight through the archive core.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import dcmtk_env, free_port, make_settings, require_tool
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StorageCommitmentPushModel,
    StorageCommitmentPushModelInstance,
    Verification,
)
from sqlalchemy import select

from pergamon.archive.events import CommitmentReported
from pergamon.archive.index.schema import instance, job
from pergamon.archive.origin import Origin
from pergamon.config import RemoteAE, Settings
from pergamon.dimse.commitment import CHECK_JOB, REPORT_JOB
from pergamon.runtime import Pergamon

pytestmark = pytest.mark.interop

MODALITY = "MODALITY"
MR_CLASS = "1.2.840.10008.5.1.4.1.1.4"
FILES = ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm")

# pynetdicom 3.0.4 leaks the socket of a refused connection (AssociationSocket._shutdown_socket calls
# shutdown() on the unconnected socket, which raises before close()); CPython closes it when it is
# dropped, with a ResourceWarning that pytest reports as unraisable. Harmless; silenced where a
# peer is down on purpose.
peer_down = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)


@dataclass(frozen=True)
class Report:
    event_type: int
    info: Dataset
    calling_ae: str
    as_scu: bool  # the receiver's role on the report's presentation context
    as_scp: bool
    same_association: bool


class Receiver:
    """The modality's listening side: takes N-EVENT-REPORTs on new associations (PS3.4 J.3.3.1.3)."""

    def __init__(self, port: int, *, negotiate_roles: bool = True) -> None:
        self.port = port
        self.reports: queue.Queue[Report] = queue.Queue()
        self.ae = AE(ae_title=MODALITY)
        if negotiate_roles:
            # Accept the SCP role Pergamon proposes (scp_role=True), decline to have it act as SCU.
            self.ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
        else:  # ignore role selection: no reply item, default roles (many implementations do this)
            self.ae.add_supported_context(StorageCommitmentPushModel)
        self.server: Any = None

    def start(self) -> Receiver:
        handlers = [(evt.EVT_N_EVENT_REPORT, self._on_report)]
        self.server = self.ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)
        return self

    def _on_report(self, event: evt.Event) -> tuple[int, None]:
        cx = next(c for c in event.assoc.accepted_contexts if c.context_id == event.context.context_id)
        self.reports.put(
            Report(
                event.event_type,
                event.event_information,
                event.assoc.requestor.ae_title,
                bool(cx.as_scu),
                bool(cx.as_scp),
                same_association=False,
            )
        )
        return 0x0000, None

    def next(self, timeout: float = 8.0) -> Report:
        return self.reports.get(timeout=timeout)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None


@pytest.fixture
def receiver_port() -> int:
    return free_port()


@pytest.fixture
def commit_settings(tmp_path: Path, database_url: str, receiver_port: int) -> Settings:
    """Pergamon knowing MODALITY's report address; fast job retries."""
    base = make_settings(
        tmp_path / "data", database_url, remotes=(RemoteAE(ae_title=MODALITY, host="127.0.0.1", port=receiver_port),)
    )
    return dataclasses.replace(
        base, jobs=dataclasses.replace(base.jobs, retry_delay=0.2, retry_max_delay=0.5, poll_interval=0.1)
    )


@pytest.fixture
def pergamon(commit_settings: Settings) -> Iterator[Pergamon]:
    app = Pergamon(commit_settings)
    app.start()
    yield app
    app.stop()


@pytest.fixture
def receiver(receiver_port: int) -> Iterator[Receiver]:
    peer = Receiver(receiver_port).start()
    yield peer
    peer.stop()


def store(app: Pergamon, names: tuple[str, ...] = FILES) -> list[tuple[str, str]]:
    """Store pydicom test files through the core; their (SOP Class, SOP Instance) UIDs."""
    refs = []
    for name in names:
        path = Path(get_testdata_file(name))  # type: ignore[arg-type]
        result = app.archive.store_file(path, Origin.from_import(str(path)))
        refs.append((result.sop_class_uid, result.sop_instance_uid))
    return refs


def action_information(transaction_uid: str | None, refs: list[tuple[str, str]]) -> Dataset:
    ds = Dataset()
    if transaction_uid is not None:
        ds.TransactionUID = transaction_uid
    items = []
    for sop_class, sop_instance in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


def associate(app: Pergamon, on_report: Callable[[evt.Event], Any] | None = None) -> Association:
    ae = AE(ae_title=MODALITY)
    ae.add_requested_context(StorageCommitmentPushModel)
    ae.add_requested_context(Verification)
    handlers = [(evt.EVT_N_EVENT_REPORT, on_report)] if on_report else []
    assoc = ae.associate(
        "127.0.0.1", app.settings.dicom.port, ae_title=app.settings.dicom.ae_title, evt_handlers=handlers
    )
    assert assoc.is_established
    return assoc


def request_commitment(app: Pergamon, info: Dataset | None, action_type: int = 1) -> int:
    """Send the N-ACTION and release at once, as `naction` and most modalities do; the status."""
    assoc = associate(app)
    try:
        status, _reply = assoc.send_n_action(
            info, action_type, StorageCommitmentPushModel, StorageCommitmentPushModelInstance
        )
    finally:
        assoc.release()
    return int(status.Status)


def refs_of(seq: Any) -> list[tuple[str, str]]:
    return [(str(item.ReferencedSOPClassUID), str(item.ReferencedSOPInstanceUID)) for item in seq or []]


def report_jobs(app: Pergamon) -> list[Any]:
    with app.archive.db.read() as conn:
        return list(conn.execute(select(job).where(job.c.kind == REPORT_JOB)))


def wait_for(condition: Callable[[], Any], timeout: float = 8.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout} s")


def test_all_stored_report_on_new_association(
    pergamon: Pergamon, receiver: Receiver, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """storescu stores; the SCU releases right after N-ACTION-RSP; Event Type 1 on a new association."""
    storescu = require_tool("storescu")
    paths = [get_testdata_file(name) for name in FILES]
    subprocess.run(
        [storescu, "-aec", "PERGAMON", "-aet", MODALITY, "127.0.0.1", str(pergamon.settings.dicom.port), *paths],
        check=True,
        env=dcmtk_env(),
        capture_output=True,
        timeout=30,
    )
    refs = [(str(ds.SOPClassUID), str(ds.SOPInstanceUID)) for ds in (dcmread(p) for p in paths)]
    events: list[CommitmentReported] = []
    pergamon.archive.bus.subscribe(lambda e: events.append(e) if isinstance(e, CommitmentReported) else None)
    transaction_uid = generate_uid()

    with caplog.at_level(logging.INFO, logger="pergamon.dimse.commitment"):
        assert request_commitment(pergamon, action_information(transaction_uid, refs)) == 0x0000
        report = receiver.next()
        wait_for(lambda: events)

    assert report.event_type == 1
    assert report.info.TransactionUID == transaction_uid
    assert sorted(refs_of(report.info.ReferencedSOPSequence)) == sorted(refs)
    assert "FailedSOPSequence" not in report.info
    assert report.info.RetrieveAETitle == "PERGAMON"
    assert report.calling_ae == "PERGAMON"
    # Pergamon proposed the SCP role and the receiver accepted it (PS3.4 J.3.3.1.2 Note, PS3.7 D.3.3.4).
    assert (report.as_scu, report.as_scp) == (True, False)
    assert events == [CommitmentReported(transaction_uid, committed=3, failed=0, destination=MODALITY)]
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"request {transaction_uid} received: 3 reference(s) from {MODALITY}" in m for m in messages)
    assert any(f"report {transaction_uid} sent" in m and "a new association to MODALITY@" in m for m in messages)


def test_unknown_and_wrong_class_fail(pergamon: Pergamon, receiver: Receiver) -> None:
    """Event Type 2: 0x0112 for an unknown instance, 0x0119 for a wrong SOP class, the rest committed."""
    refs = store(pergamon)
    unknown = (refs[0][0], generate_uid())
    wrong_class = (MR_CLASS, refs[0][1])  # CT_small.dcm referenced as an MR image
    transaction_uid = generate_uid()
    info = action_information(transaction_uid, [*refs[1:], unknown, wrong_class])

    assert request_commitment(pergamon, info) == 0x0000
    report = receiver.next()

    assert report.event_type == 2
    assert report.info.TransactionUID == transaction_uid
    assert sorted(refs_of(report.info.ReferencedSOPSequence)) == sorted(refs[1:])
    failed = {
        (str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID)): i.FailureReason
        for i in report.info.FailedSOPSequence
    }
    assert failed == {unknown: 0x0112, wrong_class: 0x0119}


def test_report_on_same_association_when_kept_open(pergamon: Pergamon, receiver: Receiver) -> None:
    """An SCU that keeps the association open and handles N-EVENT-REPORT gets the report there."""
    refs = store(pergamon)
    transaction_uid = generate_uid()
    on_same: queue.Queue[Report] = queue.Queue()

    def on_report(event: evt.Event) -> tuple[int, None]:
        on_same.put(Report(event.event_type, event.event_information, "", False, False, same_association=True))
        return 0x0000, None

    assoc = associate(pergamon, on_report)
    try:
        status, _ = assoc.send_n_action(
            action_information(transaction_uid, refs), 1, StorageCommitmentPushModel, StorageCommitmentPushModelInstance
        )
        assert status.Status == 0x0000
        report = on_same.get(timeout=8)
        # The handler runs before our answer to the report is sent: wait until Pergamon has it
        # (its job is done) so that releasing cannot overtake the answer.
        wait_for(lambda: [row for row in report_jobs(pergamon) if row.state == "done"])
        assert assoc.is_established
    finally:
        assoc.release()

    assert report.event_type == 1
    assert report.info.TransactionUID == transaction_uid
    assert sorted(refs_of(report.info.ReferencedSOPSequence)) == sorted(refs)
    assert receiver.reports.empty(), "the report must not also arrive on a new association"


def test_request_crossing_the_report_on_the_same_association_is_served(pergamon: Pergamon, receiver: Receiver) -> None:
    """The SCU sends a C-ECHO before answering the N-EVENT-REPORT: Pergamon serves it, then gets its answer."""
    refs = store(pergamon)
    echoes: list[int] = []
    reports: queue.Queue[int] = queue.Queue()

    def on_report(event: evt.Event) -> tuple[int, None]:
        echoes.append(int(event.assoc.send_c_echo().Status))  # crosses our report on the wire
        reports.put(int(event.event_type))
        return 0x0000, None

    assoc = associate(pergamon, on_report)
    try:
        status, _ = assoc.send_n_action(
            action_information(generate_uid(), refs), 1, StorageCommitmentPushModel, StorageCommitmentPushModelInstance
        )
        assert status.Status == 0x0000
        assert reports.get(timeout=8) == 1
        wait_for(lambda: [row for row in report_jobs(pergamon) if row.state == "done"])
        assert assoc.is_established
        assert int(assoc.send_c_echo().Status) == 0x0000  # the association is still usable
    finally:
        assoc.release()
    assert echoes == [0x0000]
    assert receiver.reports.empty()


def test_release_crossing_the_report_falls_back_to_new_association(pergamon: Pergamon, receiver: Receiver) -> None:
    """The SCU releases while Pergamon's report is on the wire unanswered: Pergamon stops waiting, uses a new one."""
    refs = store(pergamon)
    transaction_uid = generate_uid()
    report_arrived = threading.Event()
    released = threading.Event()

    def on_report(event: evt.Event) -> tuple[int, None]:
        report_arrived.set()
        released.wait(5)  # answer only after the release: too late
        return 0x0000, None

    assoc = associate(pergamon, on_report)
    status, _ = assoc.send_n_action(
        action_information(transaction_uid, refs), 1, StorageCommitmentPushModel, StorageCommitmentPushModelInstance
    )
    assert status.Status == 0x0000
    assert report_arrived.wait(8)
    started = time.monotonic()
    assoc.release()
    released.set()
    report = receiver.next()
    assert report.info.TransactionUID == transaction_uid
    assert time.monotonic() - started < 3  # not the DIMSE timeout


def test_busy_association_gets_report_on_new_association(pergamon: Pergamon, receiver: Receiver) -> None:
    """An SCU that keeps its association busy (C-ECHO every 50 ms) is never interrupted: new association."""
    refs = store(pergamon)
    transaction_uid = generate_uid()
    assoc = associate(pergamon, lambda event: (0x0000, None))
    try:
        status, _ = assoc.send_n_action(
            action_information(transaction_uid, refs), 1, StorageCommitmentPushModel, StorageCommitmentPushModelInstance
        )
        assert status.Status == 0x0000
        deadline = time.monotonic() + 8
        while receiver.reports.empty() and time.monotonic() < deadline:
            assert int(assoc.send_c_echo().Status) == 0x0000
            time.sleep(0.05)
    finally:
        assoc.release()
    report = receiver.next(timeout=0.5)
    assert report.info.TransactionUID == transaction_uid


def test_kept_open_without_report_handler_falls_back_to_new_association(pergamon: Pergamon, receiver_port: int) -> None:
    """The SCU keeps its association but answers the N-EVENT-REPORT with a failure: a new association is used.

    The receiver here also ignores role selection (default roles, no reply item); it still gets the report.
    """
    receiver = Receiver(receiver_port, negotiate_roles=False).start()
    refs = store(pergamon)
    transaction_uid = generate_uid()
    assoc = associate(pergamon)  # no EVT_N_EVENT_REPORT handler: pynetdicom answers 0x0110
    try:
        status, _ = assoc.send_n_action(
            action_information(transaction_uid, refs), 1, StorageCommitmentPushModel, StorageCommitmentPushModelInstance
        )
        assert status.Status == 0x0000
        report = receiver.next()
        assert assoc.is_established
    finally:
        assoc.release()
        receiver.stop()
    assert report.event_type == 1
    assert report.info.TransactionUID == transaction_uid
    assert (report.as_scu, report.as_scp) == (False, True)  # pynetdicom's default roles for an acceptor


@peer_down
def test_receiver_down_then_up_gets_report_after_retries(pergamon: Pergamon, receiver_port: int) -> None:
    """No one listens at the requester's address: the job retries with its error visible, then delivers."""
    refs = store(pergamon)
    transaction_uid = generate_uid()
    assert request_commitment(pergamon, action_information(transaction_uid, refs)) == 0x0000

    row = wait_for(lambda: next((r for r in report_jobs(pergamon) if r.last_error), None))
    assert row.state in ("pending", "running")
    assert f"MODALITY@127.0.0.1:{receiver_port}" in row.last_error

    receiver = Receiver(receiver_port).start()
    try:
        report = receiver.next()
    finally:
        receiver.stop()
    assert report.event_type == 1
    assert report.info.TransactionUID == transaction_uid
    state, attempts, last_error = pergamon.archive.jobs.state(row.pk)
    assert (state, last_error) == ("done", None)
    assert attempts >= 2


@peer_down
def test_pending_report_survives_restart(commit_settings: Settings, receiver_port: int) -> None:
    """Stopped while the report is undeliverable; a new Pergamon on the same data delivers it."""
    first = Pergamon(commit_settings)
    first.start()
    try:
        refs = store(first)
        transaction_uid = generate_uid()
        assert request_commitment(first, action_information(transaction_uid, refs)) == 0x0000
        wait_for(lambda: next((r for r in report_jobs(first) if r.last_error), None))
    finally:
        first.stop()

    second = Pergamon(commit_settings)
    second.start()
    receiver = Receiver(receiver_port).start()
    try:
        report = receiver.next()
        wait_for(lambda: all(r.state == "done" for r in report_jobs(second)))
        with second.archive.db.read() as conn:
            kinds = [r.kind for r in conn.execute(select(job.c.kind).where(job.c.kind.in_([CHECK_JOB, REPORT_JOB])))]
    finally:
        receiver.stop()
        second.stop()
    assert report.event_type == 1
    assert report.info.TransactionUID == transaction_uid
    assert sorted(refs_of(report.info.ReferencedSOPSequence)) == sorted(refs)
    assert sorted(kinds) == [CHECK_JOB, REPORT_JOB]  # checked once, reported once


def test_corrupted_blob_fails_with_processing_failure(pergamon: Pergamon, receiver: Receiver) -> None:
    """A stored object whose bytes no longer match their SHA-256 is not committed (0x0110)."""
    refs = store(pergamon)
    damaged = refs[1]
    with pergamon.archive.db.read() as conn:
        key = conn.execute(select(instance.c.blob_key).where(instance.c.sop_uid == damaged[1])).scalar_one()
    blob = pergamon.settings.blob_path / key
    with open(blob, "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 0xFF]))
    transaction_uid = generate_uid()

    assert request_commitment(pergamon, action_information(transaction_uid, refs)) == 0x0000
    report = receiver.next()

    assert report.event_type == 2
    assert sorted(refs_of(report.info.ReferencedSOPSequence)) == sorted([refs[0], refs[2]])
    assert [
        (*r, f.FailureReason)
        for r, f in zip(refs_of(report.info.FailedSOPSequence), report.info.FailedSOPSequence, strict=True)
    ] == [(*damaged, 0x0110)]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no-transaction-uid", 0x0115),
        ("empty-sequence", 0x0115),
        ("item-without-instance", 0x0115),
        ("unknown-action-type", 0x0123),
        ("no-action-information", 0x0115),
    ],
)
def test_invalid_n_action_is_refused(pergamon: Pergamon, case: str, expected: int) -> None:
    """A malformed request gets a failure status and queues nothing (PS3.4 J.3.2.1.3, PS3.7 C)."""
    refs = store(pergamon, ("CT_small.dcm",))
    action_type = 1
    if case == "no-transaction-uid":
        info = action_information(None, refs)
    elif case == "empty-sequence":
        info = action_information(generate_uid(), [])
    elif case == "item-without-instance":
        info = action_information(generate_uid(), refs)
        del info.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    elif case == "unknown-action-type":
        info = action_information(generate_uid(), refs)
        action_type = 2
    else:
        info = None

    assert request_commitment(pergamon, info, action_type) == expected
    with pergamon.archive.db.read() as conn:
        assert conn.execute(select(job.c.pk)).first() is None
