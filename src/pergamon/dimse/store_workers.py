"""Store worker processes: storage-only associations received outside the main process.

Why: one Python process runs one thread at a time (the GIL), so several senders at once queue
behind each other in a single process however many cores the machine has (benchmarks/RESULTS.md:
4 parallel associations ran no faster than 1). Once pynetdicom has negotiated a storage-only
association in the main process, `direct_store` hands its connected socket to a worker process
(SCM_RIGHTS over a Unix socket pair), which runs `direct_store.Session` with its own index
connections and blob store. The worker sends back every event the core emitted, re-emitted on the
main process's bus (auditing, notifications and jobs stay in one place), and the association's end.

Workers start on first use (`dicom.store_workers` of them): the first storage association or
STOW-RS store waits for them, about a second, and they end again after
`dicom.store_workers_idle_stop` seconds without a store, giving their memory back. With that key at
0 they start in the background with the DICOM listener and keep running. An association goes to
the least busy worker, or stays in the main process while none can run. TLS
associations stay in the main process too (their TLS state cannot move). A worker ends when
asked (`stop`) or at once when the main process is gone (its channel closes): an object still in
flight is then never acknowledged, and whatever it committed stays committed. A worker that dies
is replaced (at most every RESTART_DELAY seconds); the associations it held end as aborted.

The channel carries pickled tuples, one per SEQPACKET message (both ends are this module):
main -> worker: ("settings", Settings), ("serve", id, StorageAssociation) + the socket, ("abort", id),
("store", id, path, origin, sop class, sop instance, study, move, digest, blob key),
("stop",);
worker -> main: ("ready",), ("event", event), ("ended", id, outcome), ("stored", id, result or error).

The pool is also the archive's `store_delegate`: every `Archive.store_file` of the main process
(STOW-RS, TLS and mixed DIMSE associations, imports of a running server) runs in a worker, so
concurrent stores of any door use several cores.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import pickle
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pergamon.archive import errors
from pergamon.archive.origin import Origin

if TYPE_CHECKING:
    from collections.abc import Callable

    from pergamon.archive.events import EventBus
    from pergamon.archive.ingest import Digest, StoreResult
    from pergamon.config import Settings
    from pergamon.dimse.direct_store import StorageAssociation

log = logging.getLogger(__name__)

MESSAGE_BYTES = 1 << 20  # largest channel message (settings, an event); far above what they take
START_TIMEOUT = 60.0  # seconds a new worker may take to import and open the archive
ABORT_POLL = 0.1  # how often a waiting association thread looks for a local abort
RESTART_DELAY = 5.0  # seconds between attempts to replace workers that died or could not start


class WorkerUnavailable(Exception):
    """No worker could take the association (it could not be started): receive it in this process."""


class _Pending:
    """An association (or a single store) given to a worker, waited for by the thread that handed it over."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.outcome: Any = "aborted"  # an association's end; a store's result or exception

    def finish(self, outcome: Any) -> None:
        self.outcome = outcome
        self.done.set()


class _Worker:
    """One worker process and its channel, seen from the main process."""

    def __init__(
        self,
        number: int,
        proc: subprocess.Popen[bytes],
        channel: socket.socket,
        bus: EventBus,
        on_death: Callable[[], None],
    ) -> None:
        self.number = number
        self.on_death = on_death
        self.proc = proc
        self.channel = channel
        self.bus = bus
        self.sessions: dict[int, _Pending] = {}
        self.lock = threading.Lock()
        self.alive = True
        self.stopping = False
        self.reader = threading.Thread(target=self._read, name=f"pergamon-store-worker-{number}", daemon=True)

    def send(self, message: tuple[Any, ...], fds: list[int] | None = None) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        with self.lock:
            if fds:
                socket.send_fds(self.channel, [data], fds)
            else:
                self.channel.sendmsg([data])

    def _read(self) -> None:
        """Events to the bus, ends to the waiting threads; on EOF every open association ends aborted."""
        try:
            while True:
                data = self.channel.recv(MESSAGE_BYTES)
                if not data:
                    break
                message = pickle.loads(data)
                if message[0] == "event":
                    self.bus.emit(message[1])
                elif message[0] in ("ended", "stored"):
                    pending = self.sessions.pop(message[1], None)
                    if pending is not None:
                        pending.finish(message[2])
        except OSError as exc:
            log.debug("store worker %d: channel error: %s", self.number, exc)
        self.alive = False
        if not self.stopping:  # `StoreWorkers._end` closes the channel of a worker it stops
            self.channel.close()
        try:  # reap it (it ended, or ends now that its channel is closed)
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if not self.stopping:
            log.error("store worker %d (pid %d) ended (exit %s)", self.number, self.proc.pid, self.proc.returncode)
            self.on_death()
        for pending in list(self.sessions.values()):
            pending.finish("aborted")  # a store waiting here turns this into an error (`store_file`)
        self.sessions.clear()


class StoreWorkers:
    """The pool, in the main process: `serve` blocks the negotiating thread until the association ends."""

    def __init__(self, settings: Settings, bus: EventBus, count: int) -> None:
        self.settings = settings
        self.bus = bus
        self.count = count
        self.idle_stop = settings.dicom.store_workers_idle_stop
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._numbers = itertools.count(1)
        self._stopped = False
        self._filling = False
        self._last_fill = 0.0
        self._cold = self.idle_stop > 0  # none runs on purpose: the next store starts them and waits
        self._last_used = time.monotonic()
        self._wake_watch = threading.Event()

    def serve(self, sock: socket.socket, described: StorageAssociation, local: Any) -> str:
        """Run the association in a worker; its outcome once it ended. Raises WorkerUnavailable."""
        sid = next(self._ids)
        pending = _Pending()
        worker = self._pick(sid, pending)  # may wait for workers to start
        local.activity()
        try:
            worker.send(("serve", sid, described), [sock.fileno()])
        except OSError as exc:
            worker.sessions.pop(sid, None)
            raise WorkerUnavailable(f"store worker {worker.number}: {exc}") from exc
        abort_sent = False
        while not pending.done.is_set():
            local.activity()
            if abort_sent or local.fd is None:
                pending.done.wait(ABORT_POLL)
                continue
            ready = select.select([local.fd], [], [], ABORT_POLL)[0]
            if ready and local.requested():  # a graceful stop or pynetdicom's timeout: the worker aborts
                with contextlib.suppress(OSError):
                    worker.send(("abort", sid))
                abort_sent = True
        pending.done.wait()
        self._last_used = time.monotonic()
        with contextlib.suppress(OSError):  # the worker closed its copy; this is the main process's
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()
        return pending.outcome

    def start(self) -> None:
        """Start the workers in the background, or with `idle_stop` only the watch that ends idle ones."""
        if self.idle_stop > 0:
            threading.Thread(target=self._stop_when_idle, name="pergamon-store-worker-idle", daemon=True).start()
        else:
            self._fill_soon()

    @property
    def on_demand(self) -> bool:
        """Whether workers start on first use (and end when idle) rather than with the listener."""
        return self.idle_stop > 0

    def wait_started(self, timeout: float = START_TIMEOUT) -> bool:
        """Block until the round of starts under way is over (True when all `count` workers run)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._filling:
                    return len([w for w in self._workers if w.alive]) >= self.count
            time.sleep(0.02)
        return False

    def _fill_soon(self) -> None:
        with self._lock:
            claimed = self._claim_fill()
        if claimed:
            self._start_filling()

    def _claim_fill(self) -> bool:
        """Under `_lock`: mark a round of starts as under way; False when one is, or when stopping."""
        if self._filling or self._stopped:
            return False
        self._filling = True
        return True

    def _start_filling(self) -> None:
        threading.Thread(target=self._fill, name="pergamon-store-worker-start", daemon=True).start()

    def _fill(self) -> None:
        """Start the missing workers side by side; one that cannot start is retried later (`_pick`)."""
        try:
            with self._lock:
                self._workers = [w for w in self._workers if w.alive]
                missing = 0 if self._stopped else self.count - len(self._workers)
            launched = []
            for _ in range(missing):
                with contextlib.suppress(WorkerUnavailable):
                    launched.append(self._launch())
            for worker in launched:
                try:
                    self._await_ready(worker)
                except WorkerUnavailable:
                    continue
                with self._lock:
                    if not self._stopped:
                        self._workers.append(worker)
                        continue
                worker.stopping = True
                self._end(worker, 5.0)
        finally:
            with self._lock:
                self._filling = False
                self._last_fill = time.monotonic()
                # New workers count as just used: the idle watch must not end them before the
                # stores that waited for them were handed over.
                self._last_used = self._last_fill

    def _stop_when_idle(self) -> None:
        """End the workers once none served anything for `idle_stop` seconds (the next store restarts them)."""
        while not self._wake_watch.wait(min(self.idle_stop / 2, 30.0)):
            with self._lock:
                idle = time.monotonic() - self._last_used
                if self._stopped or self._filling or not self._workers or idle < self.idle_stop:
                    continue
                if any(w.sessions for w in self._workers):
                    continue
                workers, self._workers = self._workers, []
                self._cold = True
            for worker in workers:
                worker.stopping = True
            for worker in workers:
                self._end(worker, 10.0)
            log.info("store workers stopped after %.0f s without a store; the next one starts them", idle)

    def _replace_later(self) -> None:
        """A worker died: start a new one after RESTART_DELAY (a worker that keeps dying cannot spin)."""
        timer = threading.Timer(RESTART_DELAY, self._fill_soon)
        timer.daemon = True
        timer.start()

    def store_file(
        self,
        path: Path,
        origin: Origin,
        expected_sop_class: str | None,
        expected_sop_instance: str | None,
        expected_study: str | None,
        move: bool,
        digest: Digest | None = None,
        blob_key: str | None = None,
    ) -> StoreResult | None:
        """`Archive.store_delegate`: the store done by a worker; None when none runs (store here then).

        Raises what the core raised in the worker, or `errors.Unavailable` when the worker ended
        during the store (whether it was kept is then unknown; it was not acknowledged).
        """
        rid = next(self._ids)
        pending = _Pending()
        try:
            worker = self._pick(rid, pending)
        except WorkerUnavailable:
            return None
        try:
            worker.send(
                (
                    "store",
                    rid,
                    str(path),
                    origin,
                    expected_sop_class,
                    expected_sop_instance,
                    expected_study,
                    move,
                    digest,
                    blob_key,
                )
            )
        except OSError:
            worker.sessions.pop(rid, None)
            return None
        pending.done.wait()
        self._last_used = time.monotonic()
        outcome = pending.outcome
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome == "aborted":
            raise errors.Unavailable("the store worker ended during the store; send the object again")
        return outcome  # type: ignore[no-any-return]

    def _pick(self, sid: int, pending: _Pending) -> _Worker:
        """The least busy live worker, with `pending` registered as its session `sid`.

        Workers stopped for idleness are started first, and waited for; a worker that died is
        replaced in the background, without making this store wait.
        """
        with self._lock:  # one section: a second store cannot look between the claim and the check
            cold, self._cold = self._cold, False
            claimed = cold and self._claim_fill()
            starting = self._filling and not any(w.alive for w in self._workers)
        if claimed:
            self._start_filling()
        if starting:  # also the stores that arrive while the first one waits
            self.wait_started()
        with self._lock:
            if self._stopped:
                raise WorkerUnavailable("stopping")
            live = [w for w in self._workers if w.alive]
            if live:
                worker = min(live, key=lambda w: len(w.sessions))
                worker.sessions[sid] = pending  # under the lock: the idle watch sees it as busy
                self._last_used = time.monotonic()
        if len(live) < self.count and time.monotonic() - self._last_fill > RESTART_DELAY:
            self._fill_soon()
        if not live:
            raise WorkerUnavailable("no store worker is running yet")
        return worker

    def _launch(self) -> _Worker:
        """A new worker process, told the settings; not yet known to be ready."""
        number = next(self._numbers)
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except (OSError, AttributeError) as exc:  # no SEQPACKET Unix sockets here (e.g. macOS)
            log.error("cannot start a store worker: no channel to it (%s)", exc)
            raise WorkerUnavailable(f"no channel to a store worker: {exc}") from exc
        for end in (ours, theirs):
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MESSAGE_BYTES)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, MESSAGE_BYTES)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pergamon.dimse.store_workers", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            ours.close()
            log.error("cannot start a store worker: %s", exc)
            raise WorkerUnavailable(f"cannot start a store worker: {exc}") from exc
        finally:
            theirs.close()
        worker = _Worker(number, proc, ours, self.bus, self._replace_later)
        with contextlib.suppress(OSError):  # a worker that died at once fails in `_await_ready`
            worker.send(("settings", self.settings))
        return worker

    def _await_ready(self, worker: _Worker) -> None:
        """Wait for the worker's ("ready",), then start reading its channel."""
        try:
            worker.channel.settimeout(START_TIMEOUT)
            ready = worker.channel.recv(MESSAGE_BYTES)
            worker.channel.settimeout(None)
            if not ready or pickle.loads(ready) != ("ready",):
                raise OSError("it ended before it was ready")
        except OSError as exc:
            worker.stopping = True
            worker.proc.kill()
            worker.proc.wait()
            worker.channel.close()
            log.error("store worker %d could not start (%s); storing in the main process", worker.number, exc)
            raise WorkerUnavailable(str(exc)) from exc
        worker.reader.start()
        log.info("store worker %d started (pid %d)", worker.number, worker.proc.pid)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask every worker to end (their associations are aborted), then wait; kill what lingers."""
        with self._lock:
            self._stopped = True
            workers, self._workers = self._workers, []
        self._wake_watch.set()
        for worker in workers:
            worker.stopping = True
        deadline = time.monotonic() + timeout
        for worker in workers:
            self._end(worker, deadline - time.monotonic())

    @staticmethod
    def _end(worker: _Worker, timeout: float) -> None:
        with contextlib.suppress(OSError):
            worker.send(("stop",))
        try:
            worker.proc.wait(max(0.1, timeout))
        except subprocess.TimeoutExpired:
            log.warning("store worker %d did not stop; killing it", worker.number)
            worker.proc.kill()
            worker.proc.wait()
        if worker.reader.is_alive() or worker.reader.ident is not None:
            worker.reader.join(5)
        worker.channel.close()

    def pids(self) -> list[int]:
        """Process ids of the running workers (metrics, tests)."""
        with self._lock:
            return [w.proc.pid for w in self._workers if w.alive]


# -- the worker process --------------------------------------------------------------------------


class _WorkerAbort:
    """`direct_store.Session`'s view of aborts requested by the main process: a pipe per session."""

    def __init__(self) -> None:
        self.fd, self._write = os.pipe()

    def request(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._write, b"\0")

    def requested(self) -> bool:
        with contextlib.suppress(OSError):
            os.read(self.fd, 64)
        return True

    def activity(self) -> None:
        """The worker's session enforces the network timeout itself; nothing to tell."""

    def close(self) -> None:
        for fd in (self.fd, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)


def worker_main(channel_fd: int) -> None:
    """Serve associations handed over on the channel until told to stop or the main process is gone."""
    from pergamon.archive.service import Archive
    from pergamon.cli import setup_logging
    from pergamon.dimse import direct_store
    from pergamon.process import collect_young_less_often, freeze_startup_objects

    channel = socket.socket(fileno=channel_fd)
    first = pickle.loads(channel.recv(MESSAGE_BYTES))
    settings: Settings = first[1]
    setup_logging(settings)
    archive = Archive.attach(settings)
    send_lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        with send_lock:
            channel.sendmsg([data])

    archive.bus.subscribe(lambda event: send(("event", event)))
    sessions: dict[int, _WorkerAbort] = {}
    threads: list[threading.Thread] = []

    def run(sid: int, fd: int, described: StorageAssociation, local: _WorkerAbort) -> None:
        outcome = "aborted"
        try:
            outcome = direct_store.Session(socket.socket(fileno=fd), described, archive, local).run()
        except Exception:
            log.exception("store worker: association %d failed", sid)
        finally:
            sessions.pop(sid, None)
            local.close()
            with contextlib.suppress(OSError):
                send(("ended", sid, outcome))

    def store(
        rid: int,
        path: str,
        origin: Origin,
        sop_class: str | None,
        sop_instance: str | None,
        study: str | None,
        move: bool,
        digest: Digest | None,
        blob_key: str | None,
    ) -> None:
        try:
            reply: Any = archive.store_file(
                Path(path),
                origin,
                expected_sop_class=sop_class,
                expected_sop_instance=sop_instance,
                expected_study=study,
                move=move,
                digest=digest,
                blob_key=blob_key,
            )
        except errors.PergamonError as exc:
            reply = exc
        except Exception as exc:
            log.exception("store worker: storing %s failed", path)
            reply = errors.PergamonError(f"internal error: {type(exc).__name__}")
        try:
            send(("stored", rid, reply))
        except (OSError, pickle.PicklingError, TypeError):
            send(("stored", rid, errors.PergamonError(str(reply))))

    freeze_startup_objects()
    collect_young_less_often()
    send(("ready",))
    while True:
        data, fds, _flags, _address = socket.recv_fds(channel, MESSAGE_BYTES, 1)
        if not data:
            os._exit(0)  # the main process is gone: nothing in flight may be acknowledged any more
        message = pickle.loads(data)
        if message[0] == "serve":
            sid, described = message[1], message[2]
            local = sessions[sid] = _WorkerAbort()
            thread = threading.Thread(target=run, args=(sid, fds[0], described, local), daemon=True)
            threads = [t for t in threads if t.is_alive()] + [thread]
            thread.start()
        elif message[0] == "store":
            thread = threading.Thread(target=store, args=message[1:], daemon=True)
            threads = [t for t in threads if t.is_alive()] + [thread]
            thread.start()
        elif message[0] == "abort":
            if message[1] in sessions:
                sessions[message[1]].request()
        elif message[0] == "stop":
            for local in list(sessions.values()):
                local.request()
            for thread in threads:
                thread.join(10)
            archive.close()
            return


NOT_IN_WORKERS = ("numpy", "PIL", "gdcm", "openjpeg", "rle", "pylibjpeg", "requests", "tqdm")
"""Libraries pydicom loads at import when present (pixel codecs; test-data downloads) that a worker,
which reads headers only, never calls: ~35 MiB of a worker's RSS (~105 MiB with them, ~69 without)."""


def leave_out_unused_libraries() -> None:
    """Make importing `NOT_IN_WORKERS` fail in this process, so pydicom treats them as absent.

    A None entry in `sys.modules` is Python's documented way to refuse an import; it must run
    before pydicom is first imported. Only the worker process does this: the main process
    decodes pixel data (rendering, frames).
    """
    for name in NOT_IN_WORKERS:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


if __name__ == "__main__":
    leave_out_unused_libraries()
    worker_main(int(sys.argv[1]))
