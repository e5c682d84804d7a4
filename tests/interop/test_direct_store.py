"""The direct receive loop for storage-only associations (`dimse.direct_store`).

Every C-STORE test already runs through it (their associations propose storage contexts only);
these check what is particular to it: which associations it takes, that what it stores is byte
for byte what pynetdicom's own path stores, and that everything off its narrow path (another
command, a PDU out of place, a malformed PDU, silence, a server stop) ends the association with an
A-ABORT while the server goes on.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import samples
from conftest import dcmtk_env, make_settings, require_tool
from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, MRImageStorage
from pynetdicom import AE
from pynetdicom.dsutils import create_file_meta, decode, encode
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification
from store_checks import (
    ChildServer,
    assert_blobs_match_index,
    assert_no_temp_leftovers,
    close_socket,
    index_instances,
    keep_socket,
    pdata_tf,
    temp_leftovers,
    unfinished_transfers,
    wait_for,
)

from pergamon.dimse import direct_store
from pergamon.runtime import Pergamon

pytestmark = pytest.mark.interop

TAKEN = {0: "received by the direct loop", 1: "handed to a store worker"}


def associate(app: Any, *extra: str) -> Any:
    """An association from a pynetdicom SCU proposing CT storage, Verification and `extra` (app or child server)."""
    ae = AE(ae_title="DIRECT")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    for sop_class in extra:
        ae.add_requested_context(sop_class)
    settings = app.settings.dicom
    assoc = ae.associate("127.0.0.1", settings.port, ae_title=settings.ae_title)
    assert assoc.is_established
    return keep_socket(assoc)


def save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def wait_ended(assoc: Any) -> None:
    wait_for(lambda: not assoc.is_alive(), 15, "the association to end")
    close_socket(assoc)


@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "store-worker"])
def test_storage_only_associations_take_the_direct_loop_and_others_do_not(
    start_server: Callable[..., Pergamon], caplog: pytest.LogCaptureFixture, workers: int
) -> None:
    app = start_server(store_workers=workers)
    caplog.set_level(logging.DEBUG, logger=direct_store.__name__)
    if workers:
        wait_for(lambda: app.dicom.workers.pids(), 60, "the store worker to start")  # type: ignore[union-attr]

    assoc = associate(app)
    assert assoc.send_c_echo().Status == 0x0000
    first = samples.make_instance(CTImageStorage, seed=1)
    assert assoc.send_c_store(first).Status == 0x0000
    assoc.release()
    assert assoc.is_released
    assert caplog.text.count(TAKEN[workers]) == 1

    caplog.clear()
    mixed = associate(app, StudyRootQueryRetrieveInformationModelFind)
    second = samples.make_instance(CTImageStorage, seed=2)
    assert mixed.send_c_store(second).Status == 0x0000
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = first.StudyInstanceUID
    answers = [status.Status for status, _ in mixed.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)]
    assert answers == [0xFF00, 0x0000]
    mixed.release()
    assert not any(text in caplog.text for text in TAKEN.values())  # a query context keeps pynetdicom

    assert set(index_instances(app.settings)) == {str(first.SOPInstanceUID), str(second.SOPInstanceUID)}


def test_a_worker_stores_without_pixel_codecs_loaded(start_server: Callable[..., Pergamon], tmp_path: Path) -> None:
    """Workers refuse pydicom's optional codecs (`store_workers.NOT_IN_WORKERS`); test_corpus stores every kind.

    Nor do they import Alembic, which only the main process needs (to migrate): its Mako brings
    MarkupSafe's compiled speedups, the one trace of it in a worker's memory map.
    """
    app = start_server(store_workers=1)
    workers = app.dicom.workers  # type: ignore[union-attr]
    wait_for(lambda: workers.pids(), 60, "the store worker to start")
    corpus = samples.ct_series(tmp_path / "ct", 2, size=64)
    result = subprocess.run(
        [require_tool("storescu"), "-aec", app.settings.dicom.ae_title, "127.0.0.1", str(app.settings.dicom.port),
         *[str(s.path) for s in corpus]],
        env=dcmtk_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert set(index_instances(app.settings)) == {s.sop_instance_uid for s in corpus}
    [pid] = workers.pids()
    mapped = Path(f"/proc/{pid}/maps").read_text()
    loaded = [name for name in ("numpy", "gdcm", "openjpeg", "PIL", "markupsafe") if name in mapped]
    assert loaded == [], f"the store worker loaded {loaded}"


def test_direct_loop_stores_the_same_bytes_as_pynetdicom(start_server: Callable[..., Pergamon], tmp_path: Path) -> None:
    """dcmtk storescu with 4 KiB PDUs (many PDUs and fragments per object) into both paths."""
    storescu = require_tool("storescu")
    files = [
        save(samples.make_instance(CTImageStorage, rows=512, cols=512, seed=seed), tmp_path / f"ct{seed}.dcm")
        for seed in range(3)
    ]
    files.append(save(samples.make_instance(MRImageStorage, seed=7), tmp_path / "mr.dcm"))
    direct = start_server("direct")
    generic = start_server("generic", direct_store=False)
    for app in (direct, generic):
        result = subprocess.run(
            [storescu, "-pdu", "4096", "-aec", app.settings.dicom.ae_title, "127.0.0.1", str(app.settings.dicom.port)]
            + [str(f) for f in files],
            env=dcmtk_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
    stored = [index_instances(app.settings) for app in (direct, generic)]
    assert len(stored[0]) == len(files) and set(stored[0]) == set(stored[1])
    for uid, row in stored[0].items():
        other = stored[1][uid]
        blob = (direct.settings.blob_path / row.blob_key).read_bytes()
        assert blob == (generic.settings.blob_path / other.blob_key).read_bytes(), uid
        assert (row.size, row.sha256, row.transfer_syntax) == (other.size, other.sha256, other.transfer_syntax)
    assert_blobs_match_index(direct.settings)
    assert_no_temp_leftovers(direct.settings)


def test_failure_status_carries_the_error_comment(start_server: Callable[..., Pergamon], tmp_path: Path) -> None:
    app = start_server()
    assoc = associate(app)
    bad = samples.make_instance(CTImageStorage, seed=4)
    del bad.StudyInstanceUID
    rsp = assoc.send_c_store(bad)
    assert rsp.Status == 0xC000
    assert "StudyInstanceUID" in str(rsp.ErrorComment)
    good = samples.make_instance(CTImageStorage, seed=5)
    assert assoc.send_c_store(good).Status == 0x0000
    assoc.release()
    assert set(index_instances(app.settings)) == {str(good.SOPInstanceUID)}


def _raw_after_command(assoc: Any, payload: bytes) -> None:
    assoc.dul.socket.socket.sendall(payload)


def _command(elements: dict[int, bytes]) -> bytes:
    return direct_store.encode_command(sorted(elements.items()))


def _ui(uid: str) -> bytes:
    data = uid.encode()
    return data + b"\0" if len(data) % 2 else data


@pytest.mark.parametrize(
    "pdu",
    [
        pytest.param(
            lambda cx: pdata_tf(
                cx,
                0x03,
                _command(
                    {
                        0x0002: _ui(str(CTImageStorage)),
                        0x0100: struct.pack("<H", 0x0020),  # C-FIND-RQ
                        0x0110: struct.pack("<H", 1),
                        0x0800: struct.pack("<H", 0x0000),
                    }
                ),
            ),
            id="c-find-on-a-storage-context",
        ),
        pytest.param(lambda cx: pdata_tf(cx, 0x00, b"\x08\x00\x18\x00"), id="data-set-without-a-command"),
        pytest.param(lambda cx: pdata_tf(cx + 2, 0x03, b"\x00" * 12), id="unaccepted-context"),
        pytest.param(lambda cx: b"\x04\x00\x00\x00\x00\x0a\x00\x00\x01\x00\x01\x03abcd", id="pdv-longer-than-its-pdu"),
        pytest.param(lambda cx: b"\x09\x00\x00\x00\x00\x04\x00\x00\x00\x00", id="unknown-pdu-type"),
        pytest.param(lambda cx: b"\x01\x00\x00\x00\x00\x04\x00\x00\x00\x00", id="a-associate-rq-again"),
    ],
)
def test_off_path_traffic_is_aborted_and_the_server_goes_on(
    start_server: Callable[..., Pergamon], pdu: Callable[[int], bytes]
) -> None:
    app = start_server()
    assoc = associate(app)
    context_id = next(cx.context_id for cx in assoc.accepted_contexts if cx.abstract_syntax == CTImageStorage)
    _raw_after_command(assoc, pdu(context_id))
    wait_ended(assoc)
    assert assoc.is_aborted
    again = associate(app)
    good = samples.make_instance(CTImageStorage, seed=6)
    assert again.send_c_store(good).Status == 0x0000
    again.release()
    assert set(index_instances(app.settings)) == {str(good.SOPInstanceUID)}
    assert_no_temp_leftovers(app.settings)


def test_release_in_the_middle_of_a_data_set_aborts_and_keeps_nothing(start_server: Callable[..., Pergamon]) -> None:
    app = start_server()
    assoc = associate(app)
    context_id = next(cx.context_id for cx in assoc.accepted_contexts if cx.abstract_syntax == CTImageStorage)
    ds = samples.make_instance(CTImageStorage, rows=256, cols=256, pixels=np.ones((1, 256, 256), np.uint16), seed=8)
    command = _command(
        {
            0x0002: _ui(str(ds.SOPClassUID)),
            0x0100: struct.pack("<H", 0x0001),
            0x0110: struct.pack("<H", 1),
            0x0700: struct.pack("<H", 0),
            0x0800: struct.pack("<H", 0x0000),
            0x1000: _ui(str(ds.SOPInstanceUID)),
        }
    )
    body = encode(ds, False, True)
    _raw_after_command(assoc, pdata_tf(context_id, 0x03, command) + pdata_tf(context_id, 0x00, body[:1000]))
    wait_for(lambda: unfinished_transfers(app.settings), 10, "the data set to start arriving")
    assert temp_leftovers(app.settings) == [], "the data set is written straight into its blob"
    _raw_after_command(assoc, b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00")  # A-RELEASE-RQ
    wait_ended(assoc)
    assert assoc.is_aborted
    assert index_instances(app.settings) == {}
    assert_no_temp_leftovers(app.settings)


def test_silence_beyond_the_network_timeout_aborts(start_server: Callable[..., Pergamon]) -> None:
    app = start_server(network_timeout=1.0)
    assoc = associate(app)
    assert assoc.send_c_echo().Status == 0x0000
    started = time.monotonic()
    wait_ended(assoc)
    assert assoc.is_aborted
    assert 0.9 < time.monotonic() - started < 10


def test_stop_aborts_a_storage_association_left_open(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path / "data", database_url)
    app = Pergamon(settings)
    app.start()
    try:
        assoc = associate(app)
        assert assoc.send_c_echo().Status == 0x0000
        started = time.monotonic()
        app.dicom.stop(0.5)  # type: ignore[union-attr]
        assert time.monotonic() - started < 5
        wait_ended(assoc)
        assert assoc.is_aborted
        assert "(local abort)" in caplog.text  # ended as an abort on this side too, not as a release
    finally:
        app.stop()


def test_command_set_encoding_round_trips_through_pydicom() -> None:
    command = _command(
        {
            0x0002: _ui("1.2.840.10008.5.1.4.1.1.2"),
            0x0100: struct.pack("<H", 0x8001),
            0x0120: struct.pack("<H", 7),
            0x0800: struct.pack("<H", 0x0101),
            0x0900: struct.pack("<H", 0xC000),
            0x0902: b"bad data set",
            0x1000: _ui("1.2.3.4.5"),
        }
    )
    ds = decode(BytesIO(command), True, True)
    assert ds.CommandGroupLength == len(command) - 12
    assert (ds.AffectedSOPClassUID, ds.CommandField, ds.MessageIDBeingRespondedTo) == (
        "1.2.840.10008.5.1.4.1.1.2",
        0x8001,
        7,
    )
    assert (ds.Status, ds.ErrorComment, ds.AffectedSOPInstanceUID) == (0xC000, "bad data set", "1.2.3.4.5")
    assert direct_store.parse_command(command)[0x0120] == struct.pack("<H", 7)
    with pytest.raises(direct_store._Abort):
        direct_store.parse_command(command[:-3])


@pytest.mark.parametrize(
    ("sop_class", "sop_instance", "transfer_syntax"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5", "1.2.840.10008.1.2.1"),  # odd UIDs, padded with NUL
        ("1.2.840.10008.5.1.4.1.1.4", "1.2.826.0.1.3680043.8.498.12", "1.2.840.10008.1.2"),  # even
        ("1.2.840.10008.5.1.4.1.1.7", "2.25." + "9" * 59, "1.2.840.10008.1.2.4.50"),  # 64 characters
    ],
)
def test_file_meta_is_the_one_pydicom_writes_for_pynetdicom(
    sop_class: str, sop_instance: str, transfer_syntax: str
) -> None:
    expected = DicomBytesIO()
    expected.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(
        expected,
        create_file_meta(
            sop_class_uid=UID(sop_class), sop_instance_uid=UID(sop_instance), transfer_syntax=UID(transfer_syntax)
        ),
    )
    assert direct_store._file_header(sop_class, sop_instance, transfer_syntax) == expected.getvalue()


# -- store workers ---------------------------------------------------------------------------------


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(child) for child in (task / "children").read_text().split())
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has ended; whoever adopted it may not have reaped it yet


def test_workers_start_on_the_first_store_and_end_when_idle(
    start_server: Callable[..., Pergamon], caplog: pytest.LogCaptureFixture
) -> None:
    """The default: no worker while nothing is stored; the first stores wait for them, not run here."""
    app = start_server(store_workers=2, store_workers_idle_stop=1.0)
    caplog.set_level(logging.DEBUG, logger=direct_store.__name__)
    workers = app.dicom.workers  # type: ignore[union-attr]
    assert workers is not None and workers.pids() == []
    time.sleep(0.5)
    assert workers.pids() == [], "workers started before anything was stored"

    first_two = [associate(app), associate(app)]  # both arrive while no worker runs
    stored = [samples.make_instance(CTImageStorage, seed=20 + n) for n in range(2)]
    for assoc, ds in zip(first_two, stored, strict=True):
        assert assoc.send_c_store(ds).Status == 0x0000
    started = workers.pids()
    assert len(started) == 2
    for assoc in first_two:
        assoc.release()
    assert caplog.text.count(TAKEN[1]) == 2 and TAKEN[0] not in caplog.text

    wait_for(lambda: workers.pids() == [], 10, "the idle workers to end")
    wait_for(lambda: not any(_running(pid) for pid in started), 10, "the idle worker processes to exit")

    again = associate(app)
    later = samples.make_instance(CTImageStorage, seed=22)
    assert again.send_c_store(later).Status == 0x0000
    again.release()
    assert workers.pids() and not set(workers.pids()) & set(started)
    assert caplog.text.count(TAKEN[1]) == 3 and TAKEN[0] not in caplog.text
    expected = {str(ds.SOPInstanceUID) for ds in [*stored, later]}
    assert set(index_instances(app.settings)) == expected


def test_workers_started_after_a_quiet_spell_are_not_ended_as_idle_at_once(
    start_server: Callable[..., Pergamon],
) -> None:
    """The stores waiting for a start take a moment to be handed over; the idle watch must not win it.

    (It once measured idleness from the last store before the quiet spell, ended the new workers
    within its next look, and the waiting stores fell back to the main process.)
    """
    app = start_server(store_workers=1, store_workers_idle_stop=1.0)
    workers = app.dicom.workers  # type: ignore[union-attr]
    assert workers is not None
    time.sleep(1.5)  # longer than idle_stop since anything was used
    workers._fill_soon()  # what the first store after the quiet spell does, without the hand-over
    assert workers.wait_started()
    started = time.monotonic()
    while time.monotonic() - started < 0.8:  # the watch looks every idle_stop / 2
        assert workers.pids(), "the new workers were ended before anything could use them"
        time.sleep(0.02)
    wait_for(lambda: workers.pids() == [], 10, "the unused workers to end once idle")


def test_a_dead_worker_aborts_its_associations_and_is_replaced(start_server: Callable[..., Pergamon]) -> None:
    app = start_server(store_workers=1)
    workers = app.dicom.workers  # type: ignore[union-attr]
    assert workers is not None
    [first] = workers.pids()
    assoc = associate(app)
    assert assoc.send_c_echo().Status == 0x0000
    os.kill(first, signal.SIGKILL)
    wait_ended(assoc)
    assert assoc.is_aborted

    again = associate(app)  # received in the main process until the replacement runs
    stored = samples.make_instance(CTImageStorage, seed=11)
    assert again.send_c_store(stored).Status == 0x0000
    again.release()
    wait_for(lambda: workers.pids() and workers.pids() != [first], 30, "a replacement worker")
    last = associate(app)
    other = samples.make_instance(CTImageStorage, seed=12)
    assert last.send_c_store(other).Status == 0x0000
    last.release()
    assert set(index_instances(app.settings)) == {str(stored.SOPInstanceUID), str(other.SOPInstanceUID)}
    assert_no_temp_leftovers(app.settings)


def test_workers_end_with_the_main_process(tmp_path: Path, database_url: str) -> None:
    server = ChildServer(make_settings(tmp_path / "data", database_url, store_workers=2), tmp_path)
    server.start()
    try:
        assert server.proc is not None
        wait_for(lambda: len(_children(server.proc.pid)) == 2, 60, "two store workers")  # type: ignore[union-attr]
        workers = _children(server.proc.pid)
        assoc = associate(server)
        good = samples.make_instance(CTImageStorage, seed=13)
        assert assoc.send_c_store(good).Status == 0x0000
        assoc.release()
        server.proc.kill()
        server.proc.wait(10)
        wait_for(lambda: not any(_running(pid) for pid in workers), 10, "the store workers to end")
    finally:
        server.kill()


def test_without_a_channel_to_workers_storage_stays_in_the_main_process(
    start_server: Callable[..., Pergamon], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delattr(socket, "SOCK_SEQPACKET")  # as on a system without SEQPACKET Unix sockets
    app = start_server(store_workers=1)
    assert app.dicom.workers is not None and app.dicom.workers.pids() == []  # type: ignore[union-attr]
    assert "no channel to it" in caplog.text
    assoc = associate(app)
    good = samples.make_instance(CTImageStorage, seed=14)
    assert assoc.send_c_store(good).Status == 0x0000
    assoc.release()
    assert set(index_instances(app.settings)) == {str(good.SOPInstanceUID)}
