"""Pergamon's Audit Record Repository: syslog receivers over UDP and TLS, storing every message.

IHE ATNA Audit Record Repository, options "ATX: UDP Syslog" and "ATX: TLS Syslog" (ITI TF-2 3.20,
Record Audit Event [ITI-20]; ITI-20 3.20.4.1.2.1 requires both transports):

* UDP (RFC 5426): one RFC 5424 message per datagram, on `audit_repository.udp_port`.
* TLS (RFC 5425): on `audit_repository.tls_port` when `tls.certificate` is set; frames are
  octet-counted (`MSG-LEN SP SYSLOG-MSG`, RFC 5425 4.3). Since real senders (rsyslog's default,
  many appliances) use non-transparent framing (LF-terminated, RFC 6587 3.4.2), a frame that does
  not start with a digit is read up to LF instead.

Nothing received is dropped (ITI TF-2 3.20.4.1.3): messages longer than `max_message_bytes` are kept
truncated and flagged, malformed ones are kept raw and flagged (see `audit.records`), a frame cut off
by a closing or stalled connection is kept flagged `incomplete-frame`. The listeners run on their own
thread and asyncio loop, so a slow or stalled TLS peer (handshake or idle timeout) never holds up
another one; parsing and storage happen on a writer thread, in batches through `archive.db.write()`.
The stored records are searched through ITI-81 (`web/fhir.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pergamon.archive.events import NodeAuthenticationFailed
from pergamon.archive.index.schema import audit_record, audit_record_key
from pergamon.archive.service import Archive
from pergamon.audit import records, syslog
from pergamon.security import tls

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Received:
    """One message as it came off the wire (possibly truncated to `max_message_bytes`)."""

    data: bytes
    transport: str
    peer: str
    received_at: float
    size: int
    oversize: bool = False
    incomplete: bool = False


class _UdpProtocol(asyncio.DatagramProtocol):
    """RFC 5426 3.1: each datagram carries exactly one syslog message."""

    def __init__(self, repository: AuditRepository) -> None:
        self.repository = repository

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        limit = self.repository.max_bytes
        self.repository.submit(
            Received(
                data=data[:limit],
                transport="udp",
                peer=f"{addr[0]}:{addr[1]}",
                received_at=time.time(),
                size=len(data),
                oversize=len(data) > limit,
            )
        )

    def error_received(self, exc: Exception) -> None:
        log.warning("audit repository UDP receive error: %s", exc)


class AuditRepository:
    """Syslog listeners (UDP, TLS) that store every received audit message in `audit_record`."""

    idle_timeout = 120.0  # seconds a TLS peer may stay silent (mid-frame or between frames)
    handshake_timeout = tls.HANDSHAKE_TIMEOUT
    batch_size = 200
    batch_wait = 0.05  # seconds the writer waits to fill a batch

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.settings = archive.settings.audit_repository
        self.max_bytes = max(1, self.settings.max_message_bytes)
        self._queue: queue.Queue[Received | None] = queue.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._listener: threading.Thread | None = None
        self._writer: threading.Thread | None = None
        self._clients: set[asyncio.Task[Any]] = set()
        self._context: ssl.SSLContext | None = None
        self.udp_address: tuple[str, int] | None = None
        self.tls_address: tuple[str, int] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the listeners (OSError when a port is taken) and start the writer."""
        if not self.settings.enabled or self._listener is not None:
            return
        self._writer = threading.Thread(target=self._write_loop, name="pergamon-audit-writer", daemon=True)
        self._writer.start()
        ready = threading.Event()
        failure: list[BaseException] = []
        self._listener = threading.Thread(
            target=self._run_loop, args=(ready, failure), name="pergamon-audit-repository", daemon=True
        )
        self._listener.start()
        ready.wait()
        if failure:
            self._listener.join()
            self._listener = None
            self._queue.put(None)
            self._writer.join()
            self._writer = None
            raise failure[0]
        log.info(
            "audit record repository listening: UDP %s%s",
            self.udp_address,
            f", TLS {self.tls_address}" if self.tls_address else " (no TLS: tls.certificate is not set)",
        )

    def stop(self) -> None:
        """Close the listeners, then store everything received so far."""
        if self._listener is None:
            return
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._listener.join(timeout=30)
        self._listener = None
        self._queue.put(None)
        if self._writer is not None:
            self._writer.join(timeout=60)
            self._writer = None

    def submit(self, item: Received) -> None:
        """Queue one received message for storage (thread-safe)."""
        self._queue.put(item)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every message submitted so far is stored; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    # -- listeners (own thread, own loop) --------------------------------------------------------

    def _run_loop(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(ready, failure))
        except BaseException as exc:
            if not ready.is_set():
                failure.append(exc)
            else:
                log.exception("audit record repository listener failed")
        finally:
            ready.set()
            loop.close()
            self._loop = None

    async def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        host = self.settings.host
        try:
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(host, self.settings.udp_port)
            )
        except OSError as exc:
            raise OSError(exc.errno, f"audit repository UDP port {host}:{self.settings.udp_port}: {exc}") from exc
        sock = udp.get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.udp_address = sock.getsockname()[:2]
        server: asyncio.Server | None = None
        try:
            self._context = tls.server_context(self.archive.settings)
            if self._context is not None:
                try:
                    server = await asyncio.start_server(self._tls_client, host, self.settings.tls_port)
                except OSError as exc:
                    raise OSError(
                        exc.errno, f"audit repository TLS port {host}:{self.settings.tls_port}: {exc}"
                    ) from exc
                self.tls_address = server.sockets[0].getsockname()[:2]
            ready.set()
            await self._stop.wait()
        finally:
            udp.close()
            if server is not None:
                server.close()
            for task in list(self._clients):
                task.cancel()
            if self._clients:
                await asyncio.wait(self._clients, timeout=5)

    async def _tls_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One RFC 5425 connection: TLS handshake (bounded), then frames until EOF, error or silence."""
        task = asyncio.current_task()
        assert task is not None and self._context is not None
        self._clients.add(task)
        peer = tls.peer_name(writer.get_extra_info("peername"))
        decoder = syslog.FrameDecoder(self.max_bytes)
        try:
            try:
                await writer.start_tls(self._context, ssl_handshake_timeout=self.handshake_timeout)
            except (OSError, TimeoutError) as exc:
                log.info("audit repository: TLS handshake with %s failed: %s", peer, tls.describe_failure(exc))
                if tls.is_authentication_failure(exc):
                    event = NodeAuthenticationFailed(peer, tls.describe_failure(exc), "syslog")
                    asyncio.get_running_loop().run_in_executor(None, self.archive.bus.emit, event)
                return
            while True:
                data = await asyncio.wait_for(reader.read(65536), self.idle_timeout)
                if not data:
                    break
                now = time.time()
                for frame in decoder.feed(data):
                    self.submit(Received(frame.data, "tls", peer, now, len(frame.data), oversize=frame.truncated))
        except TimeoutError:
            log.info("audit repository: TLS peer %s silent for %.0f s, closing", peer, self.idle_timeout)
        except asyncio.CancelledError:
            pass
        except OSError as exc:
            log.info("audit repository: TLS peer %s: %s", peer, exc)
        finally:
            rest = decoder.pending.strip(b"\r\n\x00 ")
            counted = re.match(rb"[1-9][0-9]{0,9} ", rest)
            rest = rest[counted.end() :] if counted else rest  # keep the message, not its MSG-LEN
            if rest:
                self.submit(Received(rest, "tls", peer, time.time(), len(rest), incomplete=True))
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)
            self._clients.discard(task)

    # -- storage (writer thread) -----------------------------------------------------------------

    def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            batch: list[Received] = []
            item = self._queue.get()
            taken = 1
            if item is None:
                stopping = True
            else:
                batch.append(item)
            deadline = time.monotonic() + self.batch_wait
            while not stopping and len(batch) < self.batch_size:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                taken += 1
                if item is None:
                    stopping = True
                else:
                    batch.append(item)
            try:
                if batch:
                    self._store_with_retry(batch, stopping)
            finally:
                for _ in range(taken):
                    self._queue.task_done()

    def _store_with_retry(self, batch: list[Received], stopping: bool) -> None:
        rows = [row(item) for item in batch]
        delay = 0.5
        for attempt in range(1, 1_000_000):
            try:
                store(self.archive, rows)
                return
            except Exception:
                if stopping and attempt >= 5:
                    log.exception("audit repository: %d messages could not be stored, giving up", len(rows))
                    return
                log.exception("audit repository: storing %d messages failed; retrying", len(rows))
                time.sleep(delay)
                delay = min(delay * 2, 30.0)


Row = tuple[dict[str, Any], list[tuple[str, str, str]]]


def row(item: Received) -> Row:
    """The `audit_record` columns and `audit_record_key` rows of one received message."""
    try:
        parsed = records.parse(item.data, oversize=item.oversize, incomplete=item.incomplete)
    except Exception as exc:  # a bug must not cost the message: keep it raw
        log.exception("audit repository: cannot parse a message from %s", item.peer)
        parsed = records.ParsedRecord(header=None, audit=None)
        parsed.flag("parse-error", f"{type(exc).__name__}: {exc}")
    header, audit = parsed.header, parsed.audit
    recorded: datetime | None = None
    if audit is not None:
        recorded = records.parse_time(audit.date_time)
    if recorded is None and header is not None and header.timestamp:
        recorded = records.parse_time(header.timestamp)
    event = audit.event_id if audit is not None else None
    columns: dict[str, Any] = {
        "received_at": item.received_at,
        "transport": item.transport,
        "peer": item.peer[:128],
        "flag": ",".join(parsed.flags)[:256] or None,
        "detail": "; ".join(dict.fromkeys(parsed.problems))[:4000] or None,
        "hostname": header.hostname if header else None,
        "app_name": header.app_name if header else None,
        "msgid": header.msgid if header else None,
        "recorded": recorded.timestamp() if recorded else item.received_at,
        "event_system": ((event.system or event.system_name)[:255] if event else None),
        "event_id": event.code[:64] if event else None,
        "action": audit.action[:4] if audit else None,
        "outcome": audit.outcome[:4] if audit else None,
        "source_id": audit.source_id[:255] if audit else None,
        "size": item.size,
        "raw": item.data,
    }
    keys = [(kind, system[:255], value[:512]) for kind, system, value in records.index_keys(parsed)]
    return columns, keys


_INSERT_RECORDS = audit_record.insert().returning(audit_record.c.pk, sort_by_parameter_order=True)
"""One statement for a batch of records (SQLAlchemy's insertmanyvalues), their keys in the rows' order."""


def store(archive: Archive, rows: list[Row]) -> list[int]:
    """Insert records with their search keys in one transaction; their primary keys, in the rows' order.

    Two statements per batch, not two per record: a busy repository (each stored instance of an
    out-of-order migration is a message of its own) spent more on statements than on parsing.
    """
    if not rows:
        return []
    with archive.db.write() as conn:
        pks = [int(pk) for pk in conn.execute(_INSERT_RECORDS, [columns for columns, _ in rows]).scalars()]
        keys = [
            {"record_fk": pk, "kind": k, "system": s, "value": v}
            for pk, (_, record_keys) in zip(pks, rows, strict=True)
            for k, s, v in record_keys
        ]
        if keys:
            conn.execute(audit_record_key.insert(), keys)
    return pks


def iso_instant(epoch: float) -> str:
    """An epoch time as a FHIR instant in UTC (millisecond precision)."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
