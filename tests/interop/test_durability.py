"""Acknowledge only what is durable (ARCHITECTURE.md): SIGKILL `pergamon serve` in the middle of a send.

A pynetdicom SCU sends 500 CT slices (512x512, 16-bit, ~0.5 MB each) on one association while
another thread kills the server with SIGKILL after ~150 successes, at a random point of the next
transfer. After a restart on the same data folder and index, every instance that got 0x0000 must
be indexed with its data set bytes unchanged, and nothing that did not get a success may have left
a half-stored row. The restarted server must then take new stores.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import samples
from conftest import make_settings
from pydicom import dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE, _config
from store_checks import (
    ChildServer,
    assert_blobs_match_index,
    assert_counts_consistent,
    blob_files,
    close_socket,
    dataset_bytes,
    index_instances,
    keep_socket,
    temp_leftovers,
)

pytestmark = [pytest.mark.interop, pytest.mark.slow]

SLICES = 500
KILL_AFTER = 150
RESEND = 20


@pytest.fixture
def chunked_send(monkeypatch: pytest.MonkeyPatch) -> None:
    """Send data sets straight from the files, so the bytes on the wire are the files' bytes."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)


@pytest.fixture
def child_server(tmp_path: Path, database_url: str) -> Iterator[ChildServer]:
    settings = make_settings(tmp_path / "data", database_url, store_workers=2)
    server = ChildServer(settings, tmp_path)
    yield server
    server.kill()


def _associate(server: ChildServer) -> object:
    ae = AE(ae_title="DURABILITY")
    # pynetdicom keeps waiting for a C-STORE response after the connection is gone, until this
    # runs out (default 30 s): short enough for the in-flight store, ample for a healthy one.
    ae.dimse_timeout = 10
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", server.settings.dicom.port, ae_title=server.settings.dicom.ae_title)
    assert assoc.is_established, "association with pergamon serve refused"
    return keep_socket(assoc)


def _send_all(
    assoc: object, files: list[samples.Sample], statuses: dict[str, int | None], on_success: Callable[[int], None]
) -> None:
    """C-STORE each file in turn, recording its status (None: no response), until the association dies.

    `on_success` gets the number of successes so far after each one.
    """
    successes = 0
    for sample in files:
        if not assoc.is_established:  # type: ignore[attr-defined]
            return
        try:
            rsp = assoc.send_c_store(sample.path)  # type: ignore[attr-defined]
        except RuntimeError:  # association ended between the check and the send
            return
        status = rsp.get("Status") if rsp else None
        statuses[sample.sop_instance_uid] = status
        if status == 0x0000:
            successes += 1
            on_success(successes)


def test_sigkill_mid_send_loses_no_acknowledged_instance(
    tmp_path: Path, child_server: ChildServer, chunked_send: None
) -> None:
    settings = child_server.settings
    slices = samples.ct_series(tmp_path / "src", SLICES)
    by_uid = {s.sop_instance_uid: s for s in slices}
    child_server.start()
    proc = child_server.proc
    assert proc is not None

    seed = random.randrange(1 << 30)
    delay = random.Random(seed).uniform(0.0, 0.015)  # lands anywhere in the next ~0.5 MB transfer
    statuses: dict[str, int | None] = {}
    enough = threading.Event()

    def kill_when_enough() -> None:
        enough.wait(120)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)

    killer = threading.Thread(target=kill_when_enough, daemon=True)
    killer.start()

    assoc = _associate(child_server)
    _send_all(assoc, slices, statuses, lambda n: enough.set() if n >= KILL_AFTER else None)
    enough.set()
    killer.join(30)
    assert proc.wait(30) == -signal.SIGKILL, "the server was not killed (did the send finish first?)"
    if assoc.is_established:  # type: ignore[attr-defined]
        assoc.abort()  # type: ignore[attr-defined]
    close_socket(assoc)

    context = f"(kill delay {delay * 1000:.1f} ms, seed {seed})"
    acked = [uid for uid, status in statuses.items() if status == 0x0000]
    answered_otherwise = {uid: status for uid, status in statuses.items() if status not in (0x0000, None)}
    assert not answered_otherwise, f"stores answered with a failure before the kill: {answered_otherwise}"
    assert KILL_AFTER <= len(acked) < SLICES, f"{len(acked)} acknowledged {context}"
    # Sent in order on one association: the acknowledged ones are a prefix, at most one more was in flight.
    sent_order = [s.sop_instance_uid for s in slices]
    assert acked == sent_order[: len(acked)], "statuses arrived out of order"
    in_flight = set(sent_order[len(acked) : len(acked) + 1])

    # Before the restart: read the index and blobs the dead server left.
    rows = index_instances(settings)
    missing = [uid for uid in acked if uid not in rows]
    assert not missing, f"{len(missing)} acknowledged instance(s) not in the index {context}: {missing[:3]}"
    unexpected = set(rows) - set(acked) - in_flight
    assert not unexpected, f"index rows for instances never sent or never completed {context}: {unexpected}"
    # The in-flight instance may have been committed just before the kill; then it must be whole too.
    # Its blob may also have been moved in before the kill without a commit: one orphan is tolerated.
    assert_blobs_match_index(settings, max_orphans=1)
    for uid, row in rows.items():
        stored = settings.blob_path / row.blob_key
        assert dataset_bytes(stored) == dataset_bytes(by_uid[uid].path), f"{uid}: stored data set differs {context}"
        meta = dcmread(stored, stop_before_pixels=True).file_meta
        assert meta.MediaStorageSOPInstanceUID == uid
        assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
    counts = assert_counts_consistent(settings)
    assert counts["instances"] == len(rows)
    assert (counts["patients"], counts["studies"], counts["series"]) == (1, 1, 1)

    # Restart on the same folder and index: the unfinished transfer is cleaned away, nothing is lost.
    child_server.start()
    assert temp_leftovers(settings) == [], "the restart did not clear the temporary folder"
    assert index_instances(settings) == rows

    # The restarted server takes new stores: the modality retries the one without a success, and more.
    retry = slices[len(acked) : len(acked) + RESEND]
    again: dict[str, int | None] = {}
    assoc = _associate(child_server)
    _send_all(assoc, retry, again, lambda n: None)
    assoc.release()  # type: ignore[attr-defined]
    assert again == {s.sop_instance_uid: 0x0000 for s in retry}

    # The restart after the kill swept any blob moved in without a commit (archive/sweeper.py).
    deadline = time.monotonic() + 30
    while blob_files(settings) - {row.blob_key for row in index_instances(settings).values()}:
        assert time.monotonic() < deadline, "the orphan blob left by the kill was never swept"
        time.sleep(0.1)
    rows = assert_blobs_match_index(settings, max_orphans=0)
    assert set(rows) == set(acked) | set(again)
    for sample in retry:
        stored = settings.blob_path / rows[sample.sop_instance_uid].blob_key
        assert dataset_bytes(stored) == dataset_bytes(sample.path)
    counts = assert_counts_consistent(settings)
    assert (counts["patients"], counts["studies"], counts["series"]) == (1, 1, 1)
    assert counts["instances"] == len(acked) + RESEND
    assert child_server.stop() == 0
    assert temp_leftovers(settings) == []
