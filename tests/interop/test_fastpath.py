"""pynetdicom with Pergamon's receive-loop patches (`dimse.fastpath`): same results, nothing leaked.

The patched loops are exercised by every DIMSE test; these check what is particular to them: a
PDU read in one buffer (including a peer that closes mid-PDU), releases and aborts still end the
association, the wake-up pipe of each association is closed when it ends, and already encoded
P-DATA (`EncodedPData`) leave as they are.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import samples
from conftest import dcmtk_env, free_port, require_tool, wait_for_port
from pydicom import dcmread
from pynetdicom import AE, association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import CTImageStorage, Verification
from pynetdicom.timer import Timer
from pynetdicom.transport import AssociationSocket

from pergamon.archive.index.writer import find_instance
from pergamon.dimse import fastpath


def _open_pipes() -> int:
    """Pipes this process holds open (the wake-up pipes are the only ones pynetdicom's threads add)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:")
    return count


def _wait_until_idle(server: Any) -> None:
    deadline = time.monotonic() + 30
    while server.dicom.server.active_associations and time.monotonic() < deadline:
        time.sleep(0.02)


def test_recv_reads_a_whole_pdu_sent_in_pieces_and_stops_at_eof() -> None:
    left, right = socket.socketpair()
    payload = os.urandom(300_000)

    def send() -> None:
        for start in range(0, len(payload), 7_001):
            right.sendall(payload[start : start + 7_001])
        right.close()

    sender = threading.Thread(target=send)
    sender.start()
    transport: Any = SimpleNamespace(socket=left)
    assert fastpath._recv_whole(transport, 200_000) == payload[:200_000]
    rest = fastpath._recv_whole(transport, 200_000)  # the peer closes after 100,000 more bytes
    sender.join()
    left.close()
    assert bytes(rest) == payload[200_000:]
    assert isinstance(rest, bytearray)


def test_association_timers_ignore_wall_clock_steps(monkeypatch: Any) -> None:
    """A wall-clock step forward (NTP, a resumed VM) must not expire the ARTIM or network timers."""
    fastpath.install()
    idle = Timer(60)
    idle.start()
    wall = time.time
    monkeypatch.setattr(time, "time", lambda: wall() + 3600)
    assert not idle.expired
    assert 59 < idle.remaining <= 60


@pytest.mark.parametrize("state", ["Sta6", "Sta8"])  # established; release asked by the peer, not yet answered
def test_encoded_p_data_is_written_as_it_is_in_both_states_that_send_data(state: str) -> None:
    """The DUL's state machine writes an `EncodedPData` unchanged and stays in its state; other P-DATA still go."""
    fastpath.install()
    assoc = association.Association(AE(), mode="acceptor")
    ours, peer = socket.socketpair()
    peer.settimeout(5)  # bytes missing: fail, do not hang
    provider = assoc.dul
    provider.socket = AssociationSocket(assoc, client_socket=ours)
    provider.state_machine.current_state = state
    encoded = b"\x04\x00\x00\x00\x00\x08\x00\x00\x00\x04\x01\x02ab" * 3  # three P-DATA-TF PDUs
    plain = P_DATA()
    plain.presentation_data_value_list.append((1, b"\x03xy"))
    try:
        for primitive in (fastpath.EncodedPData(encoded), plain):
            provider.to_provider_queue.put(primitive)
            provider.state_machine.do_action("Evt9")
            assert provider.state_machine.current_state == state
        received = b""
        while len(received) < len(encoded) + 14:
            received += peer.recv(4096)
    finally:
        ours.close()
        peer.close()
    assert received == encoded + b"\x04\x00\x00\x00\x00\x08\x00\x00\x00\x04\x01\x03xy"


def test_associations_end_on_release_and_abort_and_close_their_wake_pipes(server: Any) -> None:
    assert fastpath.installed()
    settings = server.settings.dicom
    ae = AE(ae_title="FASTPATH")
    ae.add_requested_context(Verification)
    baseline = _open_pipes()
    for round_ in range(10):
        assoc = ae.associate("127.0.0.1", settings.port, ae_title=settings.ae_title)
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
        if round_ % 2:
            assoc.abort()
            assert assoc.is_aborted
        else:
            assoc.release()
            assert assoc.is_released
        assoc.dul.join(10)
        assert not assoc.dul.is_alive()
    _wait_until_idle(server)
    assert not server.dicom.server.active_associations
    assert _open_pipes() <= baseline


def test_many_small_pdus_store_bit_for_bit(server: Any, tmp_path: Path) -> None:
    """A 0.5 MB slice in 4 KiB PDUs (~130 reads through the patched loop) arrives whole."""
    [sample] = samples.ct_series(tmp_path / "ct", 1)
    settings = server.settings.dicom
    ae = AE(ae_title="FASTPATH")
    ae.add_requested_context(CTImageStorage, sample.transfer_syntax)
    ae.maximum_pdu_size = 4096
    assoc = ae.associate("127.0.0.1", settings.port, ae_title=settings.ae_title, max_pdu=4096)
    assert assoc.is_established
    assert assoc.send_c_store(sample.path).Status == 0x0000
    assoc.release()
    with server.archive.db.read() as conn:
        row = find_instance(conn, sample.sop_instance_uid)
    assert row is not None
    with server.archive.blobs.open(row.blob_key) as stored:
        assert dcmread(stored).PixelData == dcmread(sample.path).PixelData


def test_a_request_right_after_a_response_waits_for_the_reactor_to_pause(tmp_path: Path, monkeypatch: Any) -> None:
    """The C-STOREs of a C-MOVE, one right after another's response, each get their own response.

    A busy machine is imitated by holding the reactor back for 200 ms each time its checkpoint wait
    returns, and the sender for 400 ms before it takes its response off the queue (the response
    arrives in between: pynetdicom's requests meet Nagle's delay, ~40 ms); the sender pauses 10 ms
    between requests, as it does reading the next file. Before the fix
    the next request saw the reactor still marked paused, went ahead, and the reactor took its
    response: the request then failed after `dimse_timeout`.
    """
    fastpath.install()
    real_wait = fastpath._Checkpoint.wait

    def held_back_wait(self: Any, timeout: float | None = None) -> bool:
        woke = real_wait(self, timeout)
        if isinstance(threading.current_thread(), association.Association):
            time.sleep(0.2)
        return woke

    real_get_msg = DIMSEServiceProvider.get_msg

    def slow_sender_get_msg(self: Any, block: bool = False) -> Any:
        if block:  # the sender waiting for its response (the reactor polls without blocking)
            time.sleep(0.4)
        return real_get_msg(self, block)

    monkeypatch.setattr(fastpath._Checkpoint, "wait", held_back_wait)
    monkeypatch.setattr(DIMSEServiceProvider, "get_msg", slow_sender_get_msg)
    port = free_port()
    out = tmp_path / "received"
    out.mkdir()
    peer = subprocess.Popen(
        [require_tool("storescp"), "-aet", "DEST", "-od", str(out), "+B", str(port)],
        env=dcmtk_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, peer)
        slices = [dcmread(s.path) for s in samples.ct_series(tmp_path / "ct", 4, size=16)]
        ae = AE(ae_title="PERGAMON")
        ae.dimse_timeout = 5
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", port, ae_title="DEST")
        assert assoc.is_established
        statuses = []
        for ds in slices:
            statuses.append(assoc.send_c_store(ds).get("Status") if assoc.is_established else "aborted")
            time.sleep(0.01)  # reading the next file: the reactor wakes from its pause meanwhile
        assoc.release()
    finally:
        peer.terminate()
        peer.wait(timeout=10)
    assert statuses == [0x0000] * len(slices)
    assert len(list(out.iterdir())) == len(slices)
