"""Retrieve SCP (C-MOVE, C-GET) against real peers: dcmtk movescu / getscu / storescp and pynetdicom.

What is checked: objects leave bit for bit when the receiver takes their stored transfer syntax
(dataset bytes after the File Meta group identical), are decompressed to Explicit or Implicit VR
Little Endian with identical pixels when it does not, and the sub-operation counts and statuses of
PS3.4 C.4.2.1.5 / C.4.3.1.4 are exact (read with pynetdicom as SCU): success, warning with the
Failed SOP Instance UID List, all failed, unknown destination, cancel; and a move needing more
than 128 presentation contexts is split over several associations.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import samples
from conftest import dcmtk_env, free_port, require_tool, wait_for_port
from pydicom import Dataset, dcmread
from pydicom.uid import (
    MPEG4HP41,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE, build_role, evt
from pynetdicom.dsutils import split_dataset
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from pergamon.archive.events import InstancesSent
from pergamon.archive.origin import Origin
from pergamon.config import RemoteAE
from pergamon.runtime import Pergamon

pytestmark = pytest.mark.interop

MR = "1.2.840.10008.5.1.4.1.1.4"
CT = "1.2.840.10008.5.1.4.1.1.2"
VIDEO = "1.2.840.10008.5.1.4.1.1.77.1.4.1"  # Video Photographic Image Storage


# --- peers ---------------------------------------------------------------------------------------


class StoreSCP:
    """A dcmtk storescp writing what it receives, bit-preserving (+B), into its own folder."""

    def __init__(self, root: Path, *options: str, ae_title: str = "DEST") -> None:
        self.ae_title = ae_title
        self.port = free_port()
        self.out = root / f"{ae_title}-{self.port}"
        self.out.mkdir(parents=True)
        self.log = root / f"{ae_title}-{self.port}.log"
        command = [require_tool("storescp"), "-v", "-aet", ae_title, "-od", str(self.out), "+B", *options]
        self._log_file = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*command, str(self.port)], env=dcmtk_env(), stdout=self._log_file, stderr=subprocess.STDOUT
        )
        wait_for_port(self.port)

    @property
    def remote(self) -> RemoteAE:
        return RemoteAE(self.ae_title, "127.0.0.1", self.port)

    def received(self) -> dict[str, Path]:
        """SOP Instance UID -> received file."""
        files = [p for p in self.out.iterdir() if p.is_file()]
        return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in files}

    def clear(self) -> None:
        for path in self.out.iterdir():
            path.unlink()

    def associations(self) -> int:
        return self.log.read_text(errors="replace").count("Association Acknowledged")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self._log_file.close()


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[Callable[..., StoreSCP]]:
    started: list[StoreSCP] = []

    def start(*options: str, ae_title: str = "DEST") -> StoreSCP:
        scp = StoreSCP(tmp_path / "peers", *options, ae_title=ae_title)
        started.append(scp)
        return scp

    yield start
    for scp in started:
        scp.stop()


@contextlib.contextmanager
def pynetdicom_destination(on_store: Callable[[Any], int]) -> Iterator[RemoteAE]:
    """A pynetdicom storage SCP "SLOW" taking every storage SOP class, answering with `on_store`."""
    port = free_port()
    dest_ae = AE(ae_title="SLOW")
    for cx in AllStoragePresentationContexts:
        dest_ae.add_supported_context(cx.abstract_syntax)
    server = dest_ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        yield RemoteAE("SLOW", "127.0.0.1", port)
    finally:
        server.shutdown()


@pytest.fixture
def pergamon(start_server: Callable[..., Pergamon]) -> Callable[..., Pergamon]:
    """Start a Pergamon (in this process) knowing the given remote AEs (conftest's `start_server`)."""
    return lambda *remotes: start_server(remotes=remotes)


# --- data ----------------------------------------------------------------------------------------


def put(app: Pergamon, folder: Path, sop_class: str, **kwargs: Any) -> samples.Sample:
    """Write one synthetic instance and store it in the archive (an exact copy of the file)."""
    ds = samples.make_instance(sop_class, **kwargs)
    sample = samples.write(ds, folder / f"{ds.SOPInstanceUID}.dcm")
    app.archive.store_file(sample.path, Origin.from_import(str(sample.path)))
    return sample


def dataset_bytes(path: Path) -> bytes:
    """The bytes of a Part-10 file after its File Meta group: what goes over the network."""
    _meta, offset = split_dataset(path)
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read()


def transfer_syntax(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def movescu(app: Pergamon, destination: str, *keys: str, root: str = "-S") -> subprocess.CompletedProcess[str]:
    args = [require_tool("movescu"), "-v", root, "-aec", "PERGAMON", "-aem", destination]
    for key in keys:
        args += ["-k", key]
    args += ["127.0.0.1", str(app.settings.dicom.port)]
    return subprocess.run(args, env=dcmtk_env(), capture_output=True, text=True, timeout=120)


def pynetdicom_move(
    app: Pergamon, identifier: Dataset, destination: str, model: str = StudyRootQueryRetrieveInformationModelMove
) -> list[tuple[Dataset, Dataset | None]]:
    """Every (status, identifier) response of one C-MOVE, read with pynetdicom as the SCU."""
    ae = AE(ae_title="PYNETSCU")
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", app.settings.dicom.port, ae_title="PERGAMON")
    assert assoc.is_established
    try:
        return list(assoc.send_c_move(identifier, destination, model))
    finally:
        assoc.release()


def failed_uids(identifier: Dataset | None) -> list[str]:
    """The Failed SOP Instance UID List of a final response (one value comes back as a str)."""
    assert identifier is not None and "FailedSOPInstanceUIDList" in identifier
    value = identifier.FailedSOPInstanceUIDList
    return [str(value)] if isinstance(value, str) else [str(v) for v in value]


def study_key(study_uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study_uid
    return ds


# --- C-MOVE --------------------------------------------------------------------------------------


def test_move_study_series_image_is_bit_exact(pergamon: Any, storescp: Any, tmp_path: Path) -> None:
    dest = storescp("+xa")
    app = pergamon(dest.remote)
    study = generate_uid()
    series_a, series_b = generate_uid(), generate_uid()
    stored = [
        put(app, tmp_path, MR, study_uid=study, series_uid=series_a, transfer_syntax=ExplicitVRLittleEndian),
        put(app, tmp_path, MR, study_uid=study, series_uid=series_a, transfer_syntax=ImplicitVRLittleEndian),
        put(app, tmp_path, MR, study_uid=study, series_uid=series_a, transfer_syntax=JPEGLSLossless),
        put(app, tmp_path, CT, study_uid=study, series_uid=series_b, transfer_syntax=RLELossless),
        put(app, tmp_path, CT, study_uid=study, series_uid=series_b, transfer_syntax=JPEG2000Lossless),
        put(
            app, tmp_path, "1.2.840.10008.5.1.4.1.1.7", study_uid=study, transfer_syntax=DeflatedExplicitVRLittleEndian
        ),
    ]
    put(app, tmp_path, MR)  # another study, never sent
    sent: list[InstancesSent] = []
    app.archive.bus.subscribe(lambda e: sent.append(e) if isinstance(e, InstancesSent) else None)

    result = movescu(app, "DEST", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}")
    assert result.returncode == 0, result.stdout + result.stderr
    received = dest.received()
    assert set(received) == {s.sop_instance_uid for s in stored}
    for sample in stored:
        path = received[sample.sop_instance_uid]
        assert transfer_syntax(path) == sample.transfer_syntax
        assert dataset_bytes(path) == dataset_bytes(sample.path), sample.description
    assert len(sent) == 1 and sent[0].destination == "DEST" and sent[0].failed == 0
    assert set(sent[0].sop_instance_uids) == {s.sop_instance_uid for s in stored}
    assert sent[0].origin.calling_ae == "MOVESCU"

    dest.clear()
    result = movescu(
        app, "DEST", "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={study}", f"SeriesInstanceUID={series_b}"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(dest.received()) == {s.sop_instance_uid for s in stored[3:5]}

    dest.clear()
    wanted = [stored[0].sop_instance_uid, stored[4].sop_instance_uid]
    result = movescu(
        app,
        "DEST",
        "QueryRetrieveLevel=IMAGE",
        f"StudyInstanceUID={study}",
        f"SeriesInstanceUID={series_a}\\{series_b}",
        f"SOPInstanceUID={wanted[0]}\\{wanted[1]}",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(dest.received()) == set(wanted)


def test_move_patient_root_at_patient_level(pergamon: Any, storescp: Any, tmp_path: Path) -> None:
    dest = storescp("+xa")
    app = pergamon(dest.remote)
    mine = [put(app, tmp_path, MR, patient_id="PAT-1"), put(app, tmp_path, CT, patient_id="PAT-1")]
    put(app, tmp_path, MR, patient_id="PAT-2")
    assert mine[0].study_uid != mine[1].study_uid

    result = movescu(app, "DEST", "QueryRetrieveLevel=PATIENT", "PatientID=PAT-1", root="-P")
    assert result.returncode == 0, result.stdout + result.stderr
    received = dest.received()
    assert set(received) == {s.sop_instance_uid for s in mine}
    for sample in mine:
        assert dataset_bytes(received[sample.sop_instance_uid]) == dataset_bytes(sample.path)

    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.PatientID = "PAT-1"
    identifier.StudyInstanceUID = mine[1].study_uid
    responses = pynetdicom_move(app, identifier, "DEST", PatientRootQueryRetrieveInformationModelMove)
    final = responses[-1][0]
    assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 1


def test_unknown_destination_is_a801(pergamon: Any, tmp_path: Path) -> None:
    app = pergamon()
    sample = put(app, tmp_path, MR)
    result = movescu(app, "NOWHERE", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={sample.study_uid}")
    assert "MoveDestinationUnknown" in result.stdout + result.stderr, result.stdout + result.stderr

    responses = pynetdicom_move(app, study_key(sample.study_uid), "NOWHERE")
    assert [status.Status for status, _ in responses] == [0xA801]


def test_move_refuses_identifiers_that_do_not_match_the_model(pergamon: Any, storescp: Any) -> None:
    dest = storescp()
    app = pergamon(dest.remote)
    no_uid = Dataset()
    no_uid.QueryRetrieveLevel = "STUDY"
    wildcard = study_key("1.2.*")
    patient_level = Dataset()
    patient_level.QueryRetrieveLevel = "PATIENT"
    patient_level.PatientID = "X"
    for identifier in (no_uid, wildcard, patient_level):
        responses = pynetdicom_move(app, identifier, "DEST")
        assert [status.Status for status, _ in responses] == [0xA900]
    assert pynetdicom_move(app, study_key("1.2.3.4"), "DEST")[-1][0].Status == 0x0000  # no match: success, 0


def test_move_transcodes_for_an_uncompressed_only_receiver(pergamon: Any, storescp: Any, tmp_path: Path) -> None:
    explicit = storescp(ae_title="EXPLICIT")  # storescp's default: uncompressed syntaxes only
    implicit = storescp("+xi", ae_title="IMPLICIT")
    app = pergamon(explicit.remote, implicit.remote)
    study = generate_uid()
    stored = [
        put(app, tmp_path, MR, study_uid=study, transfer_syntax=JPEGLSLossless),
        put(app, tmp_path, MR, study_uid=study, transfer_syntax=RLELossless),
        put(app, tmp_path, CT, study_uid=study, transfer_syntax=JPEG2000Lossless),
        put(app, tmp_path, CT, study_uid=study, transfer_syntax=ExplicitVRLittleEndian),
    ]
    for dest, expected_syntax in ((explicit, ExplicitVRLittleEndian), (implicit, ImplicitVRLittleEndian)):
        responses = pynetdicom_move(app, study_key(study), dest.ae_title)
        final = responses[-1][0]
        assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == len(stored)
        received = dest.received()
        for sample in stored:
            path = received[sample.sop_instance_uid]
            assert transfer_syntax(path) == expected_syntax
            original, arrived = dcmread(sample.path), dcmread(path)
            assert arrived.SOPInstanceUID == original.SOPInstanceUID
            assert (arrived.pixel_array == original.pixel_array).all(), sample.description
            assert arrived.PatientName == original.PatientName and arrived.Rows == original.Rows


def test_partial_failure_is_warning_with_exact_counts(pergamon: Any, storescp: Any, tmp_path: Path) -> None:
    dest = storescp()  # uncompressed only: the MPEG-4 video cannot reach it
    app = pergamon(dest.remote)
    study = generate_uid()
    images = [put(app, tmp_path, MR, study_uid=study) for _ in range(2)]
    video = put(app, tmp_path, VIDEO, study_uid=study, transfer_syntax=MPEG4HP41)
    images.append(put(app, tmp_path, CT, study_uid=study, transfer_syntax=RLELossless))

    responses = pynetdicom_move(app, study_key(study), "DEST")
    pending = [status for status, _ in responses[:-1]]
    assert all(s.Status == 0xFF00 for s in pending)
    assert [s.NumberOfRemainingSuboperations for s in pending] == [3, 2, 1]
    for s in pending:
        total = s.NumberOfCompletedSuboperations + s.NumberOfFailedSuboperations + s.NumberOfWarningSuboperations
        assert total + s.NumberOfRemainingSuboperations == 4
    final, identifier = responses[-1]
    assert final.Status == 0xB000
    assert final.NumberOfCompletedSuboperations == 3
    assert final.NumberOfFailedSuboperations == 1
    assert final.NumberOfWarningSuboperations == 0
    assert failed_uids(identifier) == [video.sop_instance_uid]
    assert set(dest.received()) == {s.sop_instance_uid for s in images}

    image_level = Dataset()
    image_level.QueryRetrieveLevel = "IMAGE"
    image_level.StudyInstanceUID = study
    image_level.SeriesInstanceUID = video.series_uid
    image_level.SOPInstanceUID = video.sop_instance_uid
    final, identifier = pynetdicom_move(app, image_level, "DEST")[-1]
    assert final.Status == 0xA702  # every sub-operation failed
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (0, 1)
    assert failed_uids(identifier) == [video.sop_instance_uid]


# pynetdicom 3.0.4 does not close the socket of a refused connection (AssociationSocket._shutdown_socket
# skips close() when shutdown() raises); the garbage collector does, with a ResourceWarning.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_unreachable_destination_fails_every_suboperation(pergamon: Any, tmp_path: Path) -> None:
    app = pergamon(RemoteAE("DOWN", "127.0.0.1", free_port()))
    study = generate_uid()
    stored = [put(app, tmp_path, MR, study_uid=study) for _ in range(2)]
    final, identifier = pynetdicom_move(app, study_key(study), "DOWN")[-1]
    assert final.Status == 0xA702
    assert final.NumberOfFailedSuboperations == 2 and final.NumberOfCompletedSuboperations == 0
    assert set(failed_uids(identifier)) == {s.sop_instance_uid for s in stored}


def test_more_than_128_contexts_are_split_over_associations(pergamon: Any, storescp: Any, tmp_path: Path) -> None:
    dest = storescp("-pm")  # promiscuous: accepts the unknown SOP classes below
    app = pergamon(dest.remote)
    study = generate_uid()
    # 70 SOP classes x ([Explicit VR LE], [Implicit VR LE]) = 140 contexts > 128
    stored = [
        put(app, tmp_path, CT, study_uid=study, rows=8, cols=8, extra={"SOPClassUID": generate_uid()})
        for _ in range(70)
    ]
    final = pynetdicom_move(app, study_key(study), "DEST")[-1][0]
    assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 70
    received = dest.received()
    assert set(received) == {s.sop_instance_uid for s in stored}
    assert dataset_bytes(received[stored[-1].sop_instance_uid]) == dataset_bytes(stored[-1].path)
    assert dest.associations() == 2


def test_cancel_during_move(pergamon: Any, tmp_path: Path) -> None:
    gate = threading.Event()
    arrived: list[str] = []

    def on_store(event: Any) -> int:
        arrived.append(str(event.request.AffectedSOPInstanceUID))
        if len(arrived) == 2:
            gate.wait(10)
        return 0x0000

    with contextlib.ExitStack() as stack:
        app = pergamon(stack.enter_context(pynetdicom_destination(on_store)))
        stack.callback(gate.set)  # first on the way out: the destination's handler must not wait
        study = generate_uid()
        for _ in range(10):
            put(app, tmp_path, MR, study_uid=study)
        model = StudyRootQueryRetrieveInformationModelMove
        ae = AE(ae_title="CANCELLER")
        ae.add_requested_context(model)
        assoc = ae.associate("127.0.0.1", app.settings.dicom.port, ae_title="PERGAMON")
        assert assoc.is_established
        responses = []
        try:
            for status, identifier in assoc.send_c_move(study_key(study), "SLOW", model, msg_id=7):
                responses.append((status, identifier))
                if status.Status == 0xFF00 and not gate.is_set():
                    assoc.send_c_cancel(7, query_model=model)
                    time.sleep(0.5)  # let the C-CANCEL arrive before sub-operation 2 ends
                    gate.set()
        finally:
            assoc.release()
    final, identifier = responses[-1]
    assert final.Status == 0xFE00
    completed = final.NumberOfCompletedSuboperations
    assert completed in (1, 2) and completed == len(arrived)
    assert final.NumberOfRemainingSuboperations == 10 - completed
    assert final.NumberOfFailedSuboperations == 0 and final.NumberOfWarningSuboperations == 0


def test_move_longer_than_the_network_timeout_keeps_the_association(start_server: Any, tmp_path: Path) -> None:
    """A move busy past `network_timeout` (the requestor silent meanwhile) is activity, not idleness.

    pynetdicom alone aborted the association right after such a move's final response, so movescu's
    next request met a closed connection (exit 67, "Association Abort Failed: Broken pipe").
    """

    def slow_store(event: Any) -> int:
        time.sleep(0.5)
        return 0x0000

    with pynetdicom_destination(slow_store) as destination:
        app = start_server(remotes=(destination,), network_timeout=1.5)
        study = generate_uid()
        for _ in range(5):  # 2.5 s of sub-operations per move
            put(app, tmp_path, MR, study_uid=study)
        queries = []
        for n in range(2):
            path = tmp_path / f"query{n}.dcm"
            study_key(study).save_as(path, implicit_vr=False, little_endian=True)
            queries.append(str(path))
        command = [require_tool("movescu"), "-v", "-S", "-aec", "PERGAMON", "-aem", "SLOW"]
        result = subprocess.run(
            [*command, "127.0.0.1", str(app.settings.dicom.port), *queries],
            env=dcmtk_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count("Received Final Move Response (Success)") == 2, output


# --- C-GET ---------------------------------------------------------------------------------------


def test_getscu_retrieves_a_study_bit_exact(pergamon: Any, tmp_path: Path) -> None:
    app = pergamon()
    study = generate_uid()
    stored = [put(app, tmp_path, MR, study_uid=study) for _ in range(3)]
    stored.append(put(app, tmp_path, CT, study_uid=study))
    out = tmp_path / "getscu"
    out.mkdir()
    args = [require_tool("getscu"), "-v", "-S", "-aec", "PERGAMON", "-od", str(out), "+B"]
    args += ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}"]
    result = subprocess.run(
        [*args, "127.0.0.1", str(app.settings.dicom.port)], env=dcmtk_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Release Failed" not in result.stdout + result.stderr
    received = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in out.iterdir()}
    assert set(received) == {s.sop_instance_uid for s in stored}
    for sample in stored:
        assert dataset_bytes(received[sample.sop_instance_uid]) == dataset_bytes(sample.path)


def test_pynetdicom_get_with_role_selection(pergamon: Any, tmp_path: Path) -> None:
    app = pergamon()
    study = generate_uid()
    jpeg_ls = put(app, tmp_path, MR, study_uid=study, transfer_syntax=JPEGLSLossless)
    rle = put(app, tmp_path, MR, study_uid=study, transfer_syntax=RLELossless)
    ct = put(app, tmp_path, CT, study_uid=study)  # CT storage is not offered below: that one fails
    got: dict[str, tuple[str, bytes, Any]] = {}

    def on_store(event: Any) -> int:
        ds = event.dataset
        raw = _received_bytes(event)
        got[str(ds.SOPInstanceUID)] = (str(event.context.transfer_syntax), raw, ds.pixel_array)
        return 0x0000

    model = StudyRootQueryRetrieveInformationModelGet
    ae = AE(ae_title="GETTER")
    ae.add_requested_context(model)
    ae.add_requested_context(MRImageStorage, [JPEGLSLossless])
    ae.add_requested_context(MRImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate(
        "127.0.0.1",
        app.settings.dicom.port,
        ae_title="PERGAMON",
        ext_neg=[build_role(MRImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    try:
        responses = list(assoc.send_c_get(study_key(study), model))
    finally:
        assoc.release()
    final, identifier = responses[-1]
    assert final.Status == 0xB000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (2, 1)
    assert failed_uids(identifier) == [ct.sop_instance_uid]
    assert set(got) == {jpeg_ls.sop_instance_uid, rle.sop_instance_uid}
    syntax, raw, _pixels = got[jpeg_ls.sop_instance_uid]
    assert syntax == JPEGLSLossless and raw == dataset_bytes(jpeg_ls.path)  # sent as stored
    syntax, _raw, pixels = got[rle.sop_instance_uid]
    assert syntax == ExplicitVRLittleEndian  # RLE not offered: decompressed
    assert (pixels == dcmread(rle.path).pixel_array).all()
    assert CTImageStorage not in {cx.abstract_syntax for cx in assoc.accepted_contexts}


def _received_bytes(event: Any) -> bytes:
    """The dataset bytes of a received C-STORE, as sent (the in-process server set STORE_RECV_CHUNKED_DATASET)."""
    path = getattr(event.request, "_dataset_path", None)
    return dataset_bytes(Path(path)) if path else bytes(event.request.DataSet.getvalue())
