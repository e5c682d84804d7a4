"""Patches to pynetdicom 3.0.4's per-association threads: wake on events, not every 1 ms; sends count as activity.

pynetdicom runs two polling threads per association (python-stack.md 2.1): the DUL thread sleeps
1 ms whenever its socket and queues were idle, and the Association thread sleeps 1 ms before each
look at its DIMSE message queue. Every C-STORE pays both sleeps in latency, and every idle
millisecond costs two thread wake-ups (measured: ~6-7 % of a core per open, idle association on
the 2-core test machine, i.e. several ms of CPU per stored instance on one association). PDUs are
also read 4 KiB at a time. Each patch keeps pynetdicom's loop logic and only changes how a thread
waits or reads:

* DUL thread: its idle sleep becomes a `select` on the association's socket plus a wake-up pipe,
  for at most `IDLE_WAIT`. `send_pdu` (the only way other threads hand the DUL work) writes to the
  pipe, so a response goes out at once; a PDU arriving is read at once. Timers (ARTIM) and the
  kill flag are still seen within `IDLE_WAIT`. The pipe is closed when the reactor ends.
* Association thread (acceptor associations only): its 1 ms sleep becomes a wait on the DIMSE
  message queue, also woken by anything the DUL puts on its user queue (release, abort), for at
  most `IDLE_WAIT`. Requestor associations keep the 1 ms sleep: their sending thread waits for the
  reactor to pause before each request.
* Network timeout: pynetdicom restarts its idle timer only on PDUs received, and checks it between
  requests, so a C-MOVE or C-FIND longer than `network_timeout` ended with the association aborted
  right after its final response. `send_pdu` restarts the timer too: silence means neither side sent.
* Timers: pynetdicom's `Timer` (ARTIM, network timeout) reads the wall clock, so a clock step
  forward (NTP, a resumed VM) expired every association's idle timer at once. It reads
  `time.monotonic` instead.
* Reactor pause: a thread sending a request (the C-STOREs of a C-MOVE) clears the association's
  checkpoint and waits for the reactor's `_is_paused` flag, but the reactor sets that flag False
  only some steps after its checkpoint wait returns. A request that follows the previous one's
  response at once could see the stale True, go ahead, and have its response taken off the queue
  by the not yet paused reactor: the sender then waited `dimse_timeout` (60 s) for nothing and the
  sub-operation failed (seen as a rare C-MOVE warning under load). The checkpoint's `wait` now
  clears the flag itself, under the checkpoint's lock, before it returns.
* `AssociationSocket.recv`: one `recv_into` into a buffer of the PDU's size instead of 4 KiB
  `recv` calls appended to a growing bytearray (same result, including a short read at EOF).
* Encoded P-DATA: an `EncodedPData` handed to `send_pdu` carries P-DATA-TF PDUs already encoded
  (`find_responses` batches many C-FIND responses in one). The DUL thread takes it off its queue
  in the same state-machine step as any P-DATA (DT-1 in Sta6, AR-7 in Sta8) and writes its bytes
  with one socket send, so it stays the association's only writer and the queue keeps the order of
  everything sent. pynetdicom's EVT_PDU_SENT and EVT_DATA_SENT are not triggered for these bytes.

Other sleeps in those modules (the SCU-side waits) are passed through unchanged.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import socket
import ssl
import threading
import time
import weakref
from types import SimpleNamespace
from typing import Any

from pynetdicom import association, dul, fsm, timer
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import AssociationSocket

IDLE_WAIT = 0.01  # longest wait of an idle reactor before it re-checks timers and flags (pynetdicom: 0.001)
_REACTOR_DELAY = 0.001  # the sleep both reactors use in pynetdicom 3.0.4
_WAKE = "_pergamon_waker"  # the DUL attribute holding its `_Waker`
_installed = False


def install() -> None:
    """Apply the patches (idempotent)."""
    global _installed
    if _installed:
        return
    dul.time = SimpleNamespace(sleep=_dul_sleep)  # type: ignore[attr-defined]
    association.time = SimpleNamespace(sleep=_association_sleep)  # type: ignore[attr-defined]
    provider = dul.DULServiceProvider
    provider.__init__ = _wrap_init(provider.__init__)  # type: ignore[method-assign]
    provider.run_reactor = _wrap_run_reactor(provider.run_reactor)  # type: ignore[method-assign]
    provider.send_pdu = _wrap_send_pdu(provider.send_pdu)  # type: ignore[method-assign]
    AssociationSocket.recv = _recv_whole  # type: ignore[method-assign]
    association.Association.__init__ = _wrap_association_init(  # type: ignore[method-assign]
        association.Association.__init__
    )
    timer.time = SimpleNamespace(time=time.monotonic)  # type: ignore[attr-defined]
    for name in ("DT-1", "AR-7"):  # the two actions that send a queued P-DATA (Sta6, Sta8 + Evt9)
        description, action, state = fsm.ACTIONS[name]
        fsm.ACTIONS[name] = (description, _send_encoded_first(action, state), state)
    _installed = True


def installed() -> bool:
    """Whether `install` ran (for tests and diagnostics)."""
    return _installed


# -- DUL thread ----------------------------------------------------------------------------------


class _Waker:
    """A pipe that wakes a DUL thread out of `select`; writes after `close` are dropped, not misdirected."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        self._lock = threading.Lock()
        self.closed = False

    def wake(self) -> None:
        with self._lock:  # held so that the fd cannot be closed (and its number reused) mid-write
            if not self.closed:
                with contextlib.suppress(OSError):  # a full pipe is awake already
                    os.write(self.write_fd, b"\0")

    def drain(self) -> None:
        with self._lock:
            if not self.closed:
                with contextlib.suppress(OSError):
                    os.read(self.read_fd, 4096)

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self.closed = True
                os.close(self.read_fd)
                os.close(self.write_fd)


def _wrap_init(original: Any) -> Any:
    def __init__(self: Any, assoc: Any) -> None:
        original(self, assoc)
        self.to_user_queue = _UserQueue(self)  # still empty: no thread runs yet
        waker = _Waker()
        setattr(self, _WAKE, waker)
        weakref.finalize(self, waker.close)  # a DUL whose reactor never ran

    __init__.__doc__ = original.__doc__
    return __init__


def _wrap_send_pdu(original: Any) -> Any:
    def send_pdu(self: Any, primitive: Any) -> None:
        original(self, primitive)
        self._idle_timer.restart()  # this side is talking: the association is not idle
        waker = getattr(self, _WAKE, None)
        if waker is not None:
            waker.wake()

    send_pdu.__doc__ = original.__doc__
    return send_pdu


def _wrap_run_reactor(original: Any) -> Any:
    def run_reactor(self: Any) -> None:
        try:
            original(self)
        finally:
            waker = getattr(self, _WAKE, None)
            if waker is not None:
                waker.close()

    run_reactor.__doc__ = original.__doc__
    return run_reactor


def waker_fd(provider: Any) -> int | None:
    """The file descriptor that becomes readable when `send_pdu` queues work for `provider`."""
    waker: _Waker | None = getattr(provider, _WAKE, None)
    return None if waker is None or waker.closed else waker.read_fd


def drain_waker(provider: Any) -> None:
    """Consume `provider`'s pending wake-ups (after its queue was looked at)."""
    waker: _Waker | None = getattr(provider, _WAKE, None)
    if waker is not None:
        waker.drain()


def _dul_sleep(seconds: float) -> None:
    """The DUL reactor's idle sleep: until data arrives, a primitive is queued, or `IDLE_WAIT`."""
    provider = threading.current_thread()
    if not isinstance(provider, dul.DULServiceProvider):
        time.sleep(seconds)  # stop_dul() waiting for the DUL thread from another thread
        return
    transport = provider.socket
    sock = getattr(transport, "socket", None)
    waker: _Waker | None = getattr(provider, _WAKE, None)
    if waker is None or waker.closed or sock is None or not getattr(transport, "_is_connected", False):
        time.sleep(seconds)  # not connected: nothing to wait on (and an EOF would wake select at once)
        return
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return  # decrypted bytes already buffered: select would not see them
    try:
        ready, _, _ = select.select([sock, waker.read_fd], [], [], IDLE_WAIT)
    except (OSError, ValueError):  # the socket was closed under us: the reactor's own check reports it
        time.sleep(seconds)
        return
    if waker.read_fd in ready:
        waker.drain()


# -- encoded P-DATA ------------------------------------------------------------------------------


class EncodedPData(P_DATA):
    """P-DATA-TF PDUs already encoded by the sender, written by the DUL thread as they are."""

    def __init__(self, encoded: bytes) -> None:
        super().__init__()
        self.encoded = encoded


def _send_encoded_first(action: Any, next_state: str) -> Any:
    """Wrap a P-DATA sending action so that an `EncodedPData` at the queue's head is written as it is."""

    def send(provider: Any) -> str:
        queued = provider.to_provider_queue.queue
        if queued and isinstance(queued[0], EncodedPData):
            primitive = provider.to_provider_queue.get(False)
            if provider.socket is not None:
                provider.socket.send(primitive.encoded)
            return next_state
        return str(action(provider))

    send.__doc__ = action.__doc__
    return send


# -- Association thread --------------------------------------------------------------------------


class _UserQueue(queue.Queue):  # type: ignore[type-arg]
    """The DUL's to-user queue, which also wakes the association's reactor (see `_association_sleep`)."""

    def __init__(self, provider: Any) -> None:
        super().__init__()
        self._provider = provider

    def _put(self, item: Any) -> None:
        super()._put(item)
        messages = getattr(getattr(self._provider.assoc, "dimse", None), "msg_queue", None)
        if messages is not None:
            with messages.not_empty:
                messages.not_empty.notify_all()


def _association_sleep(seconds: float) -> None:
    """An acceptor's reactor sleep: until a DIMSE message or an ACSE primitive arrives, or `IDLE_WAIT`."""
    assoc = threading.current_thread()
    if seconds != _REACTOR_DELAY or not isinstance(assoc, association.Association) or not assoc.is_acceptor:
        time.sleep(seconds)
        return
    if not isinstance(assoc.dul.to_user_queue, _UserQueue):
        time.sleep(seconds)
        return
    messages = assoc.dimse.msg_queue
    with messages.not_empty:
        if not messages.queue:  # a wake-up missed while the reactor was busy costs at most IDLE_WAIT
            messages.not_empty.wait(IDLE_WAIT)


class _Checkpoint(threading.Event):
    """An association's reactor checkpoint whose `wait` marks the reactor unpaused before returning.

    The flag changes under the event's lock: a sender's `clear()` then either comes first (the
    reactor blocks, paused, in this `wait`) or sees the reactor already marked as running.
    """

    def __init__(self, assoc: Any) -> None:
        super().__init__()
        self._assoc = weakref.ref(assoc)

    def wait(self, timeout: float | None = None) -> bool:
        with self._cond:  # type: ignore[attr-defined]
            signaled = self._flag or self._cond.wait_for(lambda: self._flag, timeout)  # type: ignore[attr-defined]
            assoc = self._assoc()
            if signaled and assoc is not None and threading.current_thread() is assoc:
                assoc._is_paused = False
            return bool(signaled)


def _wrap_association_init(original: Any) -> Any:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        checkpoint = _Checkpoint(self)
        if self._reactor_checkpoint.is_set():
            checkpoint.set()
        self._reactor_checkpoint = checkpoint

    __init__.__doc__ = original.__doc__
    return __init__


# -- socket reads --------------------------------------------------------------------------------


def _recv_whole(self: AssociationSocket, nr_bytes: int) -> bytearray:
    """Read `nr_bytes` (fewer only if the peer closed the connection), filling one buffer."""
    sock: socket.socket = self.socket  # type: ignore[assignment]
    buffer = bytearray(nr_bytes)
    view = memoryview(buffer)
    read = 0
    while read < nr_bytes:
        count = sock.recv_into(view[read:], nr_bytes - read)
        if not count:
            return buffer[:read]
        read += count
    return buffer
