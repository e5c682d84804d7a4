"""Bad input on the C-STORE path: refused with the right status, nothing half-stored, service goes on.

Every scenario ends with proof that the association (a further C-STORE on it succeeds) or the
server (echoscu succeeds) still works, that the index holds exactly what was acknowledged, that
every blob belongs to an index row, and that the temporary folder is empty once the association
is over. Crafted data sets are sent from Part-10 files with pynetdicom's chunked sending, which
puts the file's data set bytes on the wire verbatim and announces the File Meta UIDs in the
command, so the command and the data set can disagree on purpose.
"""

from __future__ import annotations

import functools
import random
import socket
import struct
import subprocess
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import samples
from conftest import dcmtk_env, make_settings, require_tool
from pydicom import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pynetdicom import AE, _config
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.pdu import P_DATA_TF
from store_checks import (
    ChildServer,
    assert_blobs_match_index,
    assert_counts_consistent,
    assert_no_temp_leftovers,
    close_socket,
    dataset_bytes,
    index_instances,
    keep_socket,
    pdata_tf,
    unfinished_transfers,
    wait_for,
    write_part10,
)

from pergamon.config import RemoteAE, Settings
from pergamon.runtime import Pergamon

pytestmark = pytest.mark.interop

SUCCESS = 0x0000
CALLING_AE = "BADINPUT"


@pytest.fixture
def start_server(start_server: Callable[..., Pergamon]) -> Callable[..., Pergamon]:
    """conftest's, with one store worker: refusals cross the process boundary as in production."""
    return functools.partial(start_server, store_workers=1)


@pytest.fixture
def chunked_send(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)


def associate(settings: Settings, calling_ae: str = CALLING_AE) -> Any:
    ae = AE(ae_title=calling_ae)
    for sop_class in (CTImageStorage, MRImageStorage):
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", settings.dicom.port, ae_title=settings.dicom.ae_title)
    assert assoc.is_established
    return keep_socket(assoc)


def ct(seed: int = 0, **kwargs: Any) -> Dataset:
    """A small CT instance (64x64) with File Meta, ready for send_c_store."""
    return samples.make_instance(CTImageStorage, seed=seed, **kwargs)


def status_of(rsp: Dataset) -> tuple[int, str]:
    assert "Status" in rsp, "no C-STORE response (association lost?)"
    return int(rsp.Status), str(rsp.get("ErrorComment", ""))


def echoscu(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    exe = require_tool("echoscu")
    return subprocess.run(
        [exe, *args, "127.0.0.1", str(settings.dicom.port)],
        env=dcmtk_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )


def assert_clean(settings: Settings, stored: set[str]) -> None:
    """Exactly `stored` is indexed, every blob is indexed, counts agree, the temp folder is empty."""
    assert set(index_instances(settings)) == stored
    assert_blobs_match_index(settings)
    assert_counts_consistent(settings)
    assert_no_temp_leftovers(settings)


def check_still_stores(assoc: Any, settings: Settings, seed: int = 99) -> str:
    """A valid C-STORE on the same association succeeds; returns its SOP Instance UID."""
    good = ct(seed=seed)
    assert status_of(assoc.send_c_store(good)) == (SUCCESS, "")
    return str(good.SOPInstanceUID)


# -- malformed data sets ------------------------------------------------------------------------


def _random_bytes(ds: Dataset) -> bytes:
    return random.Random(7).randbytes(4096)


def _pixel_data_cut_short(ds: Dataset) -> bytes:
    return encode(ds, False, True)[:-1000]  # Pixel Data declares 1000 bytes more than sent


def _element_header_cut(ds: Dataset) -> bytes:
    del ds.PixelData
    return encode(ds, False, True) + b"\xe0\x7f\x10"  # three bytes of the next element's tag


def _sequence_never_closed(ds: Dataset) -> bytes:
    del ds.PixelData
    body = encode(ds, False, True)
    # (0040,0275) SQ of undefined length, one item opened, no delimiters: the data set just ends.
    return body + struct.pack("<HH2sHI", 0x0040, 0x0275, b"SQ", 0, 0xFFFFFFFF) + struct.pack("<HHI", 0xFFFE, 0xE000, 40)


@pytest.mark.parametrize(
    "make_body",
    [_random_bytes, _pixel_data_cut_short, _element_header_cut, _sequence_never_closed],
    ids=["random-bytes", "pixel-data-cut-short", "element-header-cut", "sequence-never-closed"],
)
def test_malformed_data_set_is_refused_and_association_goes_on(
    start_server: Callable[..., Pergamon], chunked_send: None, tmp_path: Path, make_body: Callable[[Dataset], bytes]
) -> None:
    app = start_server()
    ds = ct()
    bad = write_part10(tmp_path / "bad.dcm", make_body(ds), sop_class=CTImageStorage, sop_instance=ds.SOPInstanceUID)
    assoc = associate(app.settings)
    status, comment = status_of(assoc.send_c_store(bad))
    assert 0xC000 <= status <= 0xCFFF, f"status 0x{status:04X} ({comment})"
    assert comment, "a refusal needs an Error Comment"
    good = check_still_stores(assoc, app.settings)
    assoc.release()
    assert_clean(app.settings, {good})


def test_sop_class_mismatch_is_refused_with_a900(
    start_server: Callable[..., Pergamon], chunked_send: None, tmp_path: Path
) -> None:
    app = start_server()
    mr = samples.make_instance(MRImageStorage, seed=1)
    # The command announces CT Image Storage, the data set is an MR image.
    path = write_part10(
        tmp_path / "mr.dcm", encode(mr, False, True), sop_class=CTImageStorage, sop_instance=mr.SOPInstanceUID
    )
    assoc = associate(app.settings)
    status, comment = status_of(assoc.send_c_store(path))
    assert status == 0xA900, f"status 0x{status:04X} ({comment})"
    assert "SOP Class" in comment
    good = check_still_stores(assoc, app.settings)
    assoc.release()
    assert_clean(app.settings, {good})


def test_sop_instance_mismatch_is_refused(
    start_server: Callable[..., Pergamon], chunked_send: None, tmp_path: Path
) -> None:
    app = start_server()
    ds = ct()
    announced = generate_uid()
    path = write_part10(tmp_path / "ct.dcm", encode(ds, False, True), sop_class=CTImageStorage, sop_instance=announced)
    assoc = associate(app.settings)
    status, comment = status_of(assoc.send_c_store(path))
    assert status == 0xC000, f"status 0x{status:04X} ({comment})"
    assert "SOP Instance UID" in comment
    good = check_still_stores(assoc, app.settings)
    assoc.release()
    assert_clean(app.settings, {good})
    assert announced not in index_instances(app.settings)


@pytest.mark.parametrize("missing", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
def test_missing_required_uid_is_refused_naming_it(
    start_server: Callable[..., Pergamon], chunked_send: None, tmp_path: Path, missing: str
) -> None:
    app = start_server()
    ds = ct()
    uid = ds.SOPInstanceUID
    delattr(ds, missing)
    path = write_part10(tmp_path / "ct.dcm", encode(ds, False, True), sop_class=CTImageStorage, sop_instance=uid)
    assoc = associate(app.settings)
    status, comment = status_of(assoc.send_c_store(path))
    assert 0xC000 <= status <= 0xCFFF, f"status 0x{status:04X} ({comment})"
    assert missing in comment
    good = check_still_stores(assoc, app.settings)
    assoc.release()
    assert_clean(app.settings, {good})


# -- a connection dropped in the middle of a C-STORE --------------------------------------------


def _c_store_stream(context_id: int, ds: Dataset, pdu_size: int = 16384) -> tuple[bytes, bytes]:
    """(command PDUs, data set PDUs) of a C-STORE-RQ, encoded by hand."""
    req = C_STORE()
    req.MessageID = 1
    req.AffectedSOPClassUID = ds.SOPClassUID
    req.AffectedSOPInstanceUID = ds.SOPInstanceUID
    req.Priority = 2
    req.DataSet = BytesIO(b"placeholder")  # makes the command announce a data set
    message = C_STORE_RQ()
    message.primitive_to_message(req)
    assert message.command_set.CommandDataSetType != 0x0101
    message.data_set = BytesIO()  # the data set PDUs are built below
    command = b""
    for primitive in message.encode_msg(context_id, pdu_size):
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        command += pdu.encode()
    body = encode(ds, False, True)
    step = pdu_size - 6
    pieces = [body[i : i + step] for i in range(0, len(body), step)]
    data = b"".join(pdata_tf(context_id, 0x02 if i == len(pieces) - 1 else 0x00, p) for i, p in enumerate(pieces))
    return command, data


@pytest.mark.parametrize(
    ("cut", "reset"),
    [("mid-data-set-pdu", True), ("after-command", False)],
    ids=["mid-data-set-pdu-reset", "after-command-close"],
)
def test_dropped_connection_mid_store_leaves_nothing(tmp_path: Path, database_url: str, cut: str, reset: bool) -> None:
    server = ChildServer(make_settings(tmp_path / "data", database_url, store_workers=1), tmp_path)
    server.start()
    settings = server.settings
    try:
        big = samples.make_instance(
            CTImageStorage, rows=1024, cols=1024, pixels=np.ones((1, 1024, 1024), np.uint16), seed=3
        )
        assoc = associate(settings)
        context_id = assoc.accepted_contexts[0].context_id
        command, data = _c_store_stream(context_id, big)
        raw: socket.socket = assoc.dul.socket.socket
        if cut == "mid-data-set-pdu":
            raw.sendall(command + data[: len(data) // 2 + 7])  # 7 bytes into a P-DATA-TF PDU
        else:
            raw.sendall(command + data[:6])  # a PDU header announcing data that never comes
        wait_for(lambda: unfinished_transfers(settings), 10, "the server to start receiving the data set")
        if reset:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()
        wait_for(lambda: not assoc.is_alive(), 10, "the association to end")
        close_socket(assoc)

        assert_no_temp_leftovers(settings, timeout=10)
        assert server.proc is not None and server.proc.poll() is None, "the server died"
        assert index_instances(settings) == {}
        assert_blobs_match_index(settings)
        result = echoscu(settings, "-aec", settings.dicom.ae_title)
        assert result.returncode == 0, result.stderr
        assoc = associate(settings)
        good = check_still_stores(assoc, settings)
        assoc.release()
        assert_clean(settings, {good})
        assert server.stop() == 0
    finally:
        server.kill()


# -- duplicate SOP Instance UIDs ----------------------------------------------------------------


def _two_versions(**first: Any) -> tuple[Dataset, Dataset]:
    """Two different objects with the same SOP Instance UID (different pixels and description)."""
    v1 = ct(seed=1, study_description="first version", **first)
    v2 = ct(seed=2, study_description="second version", sop_instance_uid=str(v1.SOPInstanceUID))
    v2.StudyInstanceUID, v2.SeriesInstanceUID = v1.StudyInstanceUID, v1.SeriesInstanceUID
    assert encode(v1, False, True) != encode(v2, False, True)
    return v1, v2


def _stored_body(settings: Settings, uid: str) -> bytes:
    return dataset_bytes(settings.blob_path / index_instances(settings)[uid].blob_key)


def test_duplicate_replace_serves_the_new_bytes(start_server: Callable[..., Pergamon]) -> None:
    app = start_server()  # replace is the default
    assert app.settings.dicom.duplicate_policy == "replace"
    v1, v2 = _two_versions()
    uid = str(v1.SOPInstanceUID)
    assoc = associate(app.settings)
    assert status_of(assoc.send_c_store(v1)) == (SUCCESS, "")
    counts = assert_counts_consistent(app.settings)
    assert status_of(assoc.send_c_store(v2)) == (SUCCESS, "")
    assert assert_counts_consistent(app.settings) == counts
    assert _stored_body(app.settings, uid) == encode(v2, False, True)

    # Replaced by a version filed in another series: the emptied series goes, counters follow.
    v3 = ct(seed=3, sop_instance_uid=uid)
    v3.StudyInstanceUID = v1.StudyInstanceUID
    assert status_of(assoc.send_c_store(v3)) == (SUCCESS, "")
    assoc.release()
    assert index_instances(app.settings)[uid].series_uid == str(v3.SeriesInstanceUID)
    assert assert_counts_consistent(app.settings) == counts
    assert _stored_body(app.settings, uid) == encode(v3, False, True)
    assert_clean(app.settings, {uid})  # the replaced blobs are gone


def test_duplicate_ignore_keeps_the_first(start_server: Callable[..., Pergamon]) -> None:
    app = start_server(duplicate_policy="ignore")
    v1, v2 = _two_versions()
    uid = str(v1.SOPInstanceUID)
    assoc = associate(app.settings)
    assert status_of(assoc.send_c_store(v1)) == (SUCCESS, "")
    assert status_of(assoc.send_c_store(v2)) == (SUCCESS, "")
    assoc.release()
    assert _stored_body(app.settings, uid) == encode(v1, False, True)
    assert_clean(app.settings, {uid})


def test_duplicate_reject_answers_0111(start_server: Callable[..., Pergamon]) -> None:
    app = start_server(duplicate_policy="reject")
    v1, v2 = _two_versions()
    uid = str(v1.SOPInstanceUID)
    assoc = associate(app.settings)
    assert status_of(assoc.send_c_store(v1)) == (SUCCESS, "")
    status, comment = status_of(assoc.send_c_store(v2))
    assert status == 0x0111, f"status 0x{status:04X} ({comment})"
    assert "already stored" in comment
    good = check_still_stores(assoc, app.settings)
    assoc.release()
    assert _stored_body(app.settings, uid) == encode(v1, False, True)
    assert_clean(app.settings, {uid, good})


# -- association policy -------------------------------------------------------------------------


def test_wrong_called_ae_title_is_rejected(start_server: Callable[..., Pergamon]) -> None:
    app = start_server()
    assert app.settings.dicom.check_called_ae
    wrong = echoscu(app.settings, "-aec", "WRONG")
    assert wrong.returncode != 0
    assert "Called AE Title Not Recognized" in wrong.stderr + wrong.stdout
    right = echoscu(app.settings, "-aec", app.settings.dicom.ae_title)
    assert right.returncode == 0, right.stderr


def test_called_ae_title_not_checked_when_disabled(start_server: Callable[..., Pergamon]) -> None:
    app = start_server(check_called_ae=False)
    result = echoscu(app.settings, "-aec", "ANYTHING")
    assert result.returncode == 0, result.stderr


def test_unknown_calling_ae_is_rejected_unless_listed(start_server: Callable[..., Pergamon]) -> None:
    app = start_server(accept_unknown_callers=False, remotes=(RemoteAE(ae_title="KNOWN", port=104),))
    aec = app.settings.dicom.ae_title
    stranger = echoscu(app.settings, "-aet", "STRANGER", "-aec", aec)
    assert stranger.returncode != 0
    assert "Calling AE Title Not Recognized" in stranger.stderr + stranger.stdout
    known = echoscu(app.settings, "-aet", "KNOWN", "-aec", aec)
    assert known.returncode == 0, known.stderr


def test_unknown_calling_ae_is_accepted_by_default(start_server: Callable[..., Pergamon]) -> None:
    app = start_server()
    assert app.settings.dicom.accept_unknown_callers
    result = echoscu(app.settings, "-aet", "STRANGER", "-aec", app.settings.dicom.ae_title)
    assert result.returncode == 0, result.stderr
