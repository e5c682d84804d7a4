"""The HL7 v2 listener: MLLP over TCP on `hl7.port` and, when `tls.hl7_port` is set, over TLS.

The listeners run on their own thread and asyncio loop (like the audit repository's), so a slow
peer never holds up another. Each connection reads MLLP blocks (`hl7.mllp`) and hands them, one
at a time and in order, to `Hl7Receiver.receive` on a bounded thread pool (`hl7.workers`), since
the archive core is synchronous; the ACK it returns is written back before the next block of
that connection is processed. Several messages may follow each other on one connection.

The TLS listener uses `security.tls.server_context` (ITI-19 Authenticate Node; ATNA "STX: TLS
1.2 Floor using BCP195"); the handshake runs on the connection's task, bounded by
`tls.HANDSHAKE_TIMEOUT`, and a refused peer is reported as `NodeAuthenticationFailed` (door
"hl7"). A connection silent for `hl7.idle_timeout` seconds is closed.

Stopping closes the listening sockets, lets messages being processed finish and send their ACK
(within the given timeout), then closes every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from pergamon.archive.events import NodeAuthenticationFailed
from pergamon.archive.service import Archive
from pergamon.hl7.dispatch import Hl7Router
from pergamon.hl7.mllp import Block, BlockDecoder, frame
from pergamon.hl7.receiver import Hl7Receiver, Receipt
from pergamon.security import tls

log = logging.getLogger(__name__)


class Hl7Server:
    """The MLLP listeners (plain and, when configured, TLS) with a graceful stop."""

    handshake_timeout = tls.HANDSHAKE_TIMEOUT

    def __init__(self, archive: Archive, router: Hl7Router) -> None:
        self.archive = archive
        self.settings = archive.settings.hl7
        self.receiver = Hl7Receiver(archive, router)
        self.address: tuple[str, int] | None = None
        self.tls_address: tuple[str, int] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stop_timeout = 0.0
        self._context: ssl.SSLContext | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._busy: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self.address is not None
        return self.address[1]

    def start(self) -> None:
        """Bind the listeners (OSError naming the port when one is taken) and start serving."""
        if self._thread is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=self.settings.workers, thread_name_prefix="pergamon-hl7")
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(ready, failure), name="pergamon-hl7", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            self._executor.shutdown(wait=False)
            self._executor = None
            raise failure[0]
        assert self.address is not None
        log.info("HL7 listener on %s:%d", *self.address)
        if self.tls_address is not None:
            log.info(
                "HL7 TLS listener on %s:%d (%s)",
                *self.tls_address,
                "mutual TLS" if self.archive.settings.tls.verify_peers else "no client certificate required",
            )

    def stop(self, timeout: float = 30.0) -> None:
        """Stop accepting; messages in progress get `timeout` seconds to finish; close connections."""
        if self._thread is None:
            return
        self._stop_timeout = timeout
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=timeout + 10)
        self._thread = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self.address = self.tls_address = None

    # -- the loop (own thread) -------------------------------------------------------------------

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(ready))
        except BaseException as exc:
            if not ready.is_set():
                failure.append(exc)
            else:
                log.exception("HL7 listener failed")
        finally:
            ready.set()
            loop.close()
            self._loop = None

    async def _serve(self, ready: threading.Event) -> None:
        self._stop = asyncio.Event()
        host, port = self.settings.host, self.settings.port
        servers: list[asyncio.Server] = []
        try:
            try:
                plain = await asyncio.start_server(self._plain_connection, host, port)
            except OSError as exc:
                raise OSError(exc.errno, f"HL7 port {host}:{port}: {exc.strerror or exc}") from exc
            servers.append(plain)
            self.address = plain.sockets[0].getsockname()[:2]
            tls_port = self.archive.settings.tls.hl7_port
            self._context = tls.server_context(self.archive.settings) if tls_port else None
            if self._context is not None:
                try:
                    secure = await asyncio.start_server(self._tls_connection, host, tls_port)
                except OSError as exc:
                    raise OSError(exc.errno, f"HL7 TLS port {host}:{tls_port}: {exc.strerror or exc}") from exc
                servers.append(secure)
                self.tls_address = secure.sockets[0].getsockname()[:2]
            ready.set()
            await self._stop.wait()
        finally:
            await _accepts_settled()
            for server in servers:  # in the same step as the check above: no accept starts in between
                server.close()
            await self._close_connections()
            await self._finish_late_connections()

    async def _close_connections(self) -> None:
        """Cancel idle connections, give busy ones the stop timeout, then cancel the rest."""
        for task in self._connections - self._busy:
            task.cancel()
        busy = set(self._busy)
        if busy:
            log.info("HL7: waiting up to %.0f s for %d message(s) in progress", self._stop_timeout, len(busy))
            await asyncio.wait(busy, timeout=self._stop_timeout)
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(self._connections, timeout=5)

    async def _finish_late_connections(self) -> None:
        """Let connections accepted just before the listening sockets closed see the stop and close.

        Their tasks are scheduled by the accept but may not have started yet; a task cancelled before
        it starts never runs its cleanup, and its transport would be left open when the loop closes.
        """
        await asyncio.sleep(0)
        late = asyncio.all_tasks() - {asyncio.current_task()}
        if late:
            await asyncio.wait(late, timeout=5)
        for task in late:
            task.cancel()

    # -- connections -----------------------------------------------------------------------------

    async def _plain_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._connection(reader, writer, "mllp")

    async def _tls_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._context is not None
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)  # cancelled on stop even while its handshake runs
        peer = tls.peer_name(writer.get_extra_info("peername"))
        try:
            await writer.start_tls(self._context, ssl_handshake_timeout=self.handshake_timeout)
        except asyncio.CancelledError:
            writer.close()
            self._connections.discard(task)
            return
        except (OSError, TimeoutError) as exc:
            self._connections.discard(task)
            reason = tls.describe_failure(exc)
            writer.close()
            if not tls.is_authentication_failure(exc):
                log.debug("HL7 TLS: %s left during the handshake (%s)", peer, reason)
                return
            log.warning("HL7 TLS: refused %s: %s", peer, reason)
            event = NodeAuthenticationFailed(peer, reason, "hl7")
            await asyncio.get_running_loop().run_in_executor(self._executor, self.archive.bus.emit, event)
            return
        await self._connection(reader, writer, "mllp-tls")

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, transport: str) -> None:
        """Read blocks until EOF, silence or stop; answer each with its ACK, in order."""
        task = asyncio.current_task()
        assert task is not None and self._stop is not None
        self._connections.add(task)
        peer = tls.peer_name(writer.get_extra_info("peername"))
        decoder = BlockDecoder(self.settings.max_message_bytes)
        reported_skips = 0
        try:
            while not self._stop.is_set():
                data = await asyncio.wait_for(reader.read(65536), self.settings.idle_timeout)
                if not data:
                    break
                for block in decoder.feed(data):
                    receipt = await self._receive(task, block, peer, transport)
                    if receipt.ack is not None:
                        writer.write(frame(receipt.ack))
                        await writer.drain()
                if decoder.skipped > reported_skips:
                    log.info("HL7: %s sent %d byte(s) outside MLLP blocks; skipped", peer, decoder.skipped)
                    reported_skips = decoder.skipped
        except TimeoutError:
            log.info("HL7: %s silent for %.0f s, closing", peer, self.settings.idle_timeout)
        except asyncio.CancelledError:
            pass
        except OSError as exc:
            log.info("HL7: connection from %s: %s", peer, exc)
        finally:
            pending = decoder.pending()
            if pending is not None and not self._stop.is_set():
                log.info("HL7: %s closed the connection in the middle of a message (%d bytes)", peer, pending.size)
                with contextlib.suppress(Exception):
                    await self._receive(task, pending, peer, transport)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)
            self._connections.discard(task)

    async def _receive(self, task: asyncio.Task[None], block: Block, peer: str, transport: str) -> Receipt:
        """Run one message on the worker pool; the connection counts as busy meanwhile."""
        self._busy.add(task)
        started = time.monotonic()
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, self._receive_sync, block, peer, transport)
        finally:
            self._busy.discard(task)
            log.debug("HL7: message from %s processed in %.3f s", peer, time.monotonic() - started)

    def _receive_sync(self, block: Block, peer: str, transport: str) -> Receipt:
        return self.receiver.receive(block, peer=peer, transport=transport)


async def _accepts_settled() -> None:
    """Wait (a few loop passes at most) until no connection is half-way through asyncio's accept.

    CPython 3.11: an accept still under way when `Server.close()` runs fails inside the transport's
    constructor (`Server._attach` asserts the server is open); asyncio swallows the error and the
    socket stays open until the garbage collector closes it with a ResourceWarning. Accepts that
    finish first get their handler, which sees the stop and closes the connection.
    """
    for _ in range(100):
        if not any(_is_accept(task) for task in asyncio.all_tasks()):
            return
        await asyncio.sleep(0)


def _is_accept(task: asyncio.Task[object]) -> bool:
    return getattr(task.get_coro(), "__qualname__", "").endswith("_accept_connection2")
