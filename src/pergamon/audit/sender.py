"""Record Audit Event [ITI-20] as sender: audit messages to every configured repository over syslog.

ATX options of ITI TF-1 9.2.7: "TLS Syslog" (RFC 5424 messages over RFC 5425, octet counting) and
"UDP Syslog" (RFC 5424 over RFC 5426, one message per datagram), one or both per
`audit.repositories` (``tls://host:port`` / ``udp://host:port``, comma separated).

ITI TF-2 3.20.4.1.1 wants messages sent as soon as possible and kept locally while a repository
cannot be reached. `AuditSender.send` formats the message (`pergamon.audit.syslog`) and appends it
to one durable spool per repository (`pergamon.audit.spool`, under ``<data_dir>/audit-spool/``);
it never waits for the network or for a disk flush. A thread fsyncs the spools every 50 ms, so a
power loss can lose the audit messages of at most the last 50 ms (a crash of Pergamon alone
loses none: they are already written to the OS). One delivery thread per repository reads the
spool from its persisted offset, sends, and advances the offset only after the send succeeded;
it reconnects with exponential backoff while the repository is down, so "nothing is lost while
a repository is down: messages wait and are delivered when it is back".

What "sent" means, per transport:

* TLS: the framed message was written to the connection. RFC 5425 has no application-level
  acknowledgement; before each batch the connection is checked for a close by the repository
  (a syslog receiver never sends data), so messages are not written into a connection the
  repository already closed. A repository that dies while data is in flight can still lose
  it. After a clean `stop` the offset is exact, so a restart sends nothing twice; after a crash
  the messages of the last batch may be sent again (at-least-once).
* UDP: the datagram was handed to the kernel (`sendto`); delivery cannot be confirmed, and a
  repository that is down loses what is sent meanwhile (RFC 5426 4.1: unreliable transport).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pergamon.archive.service import Archive
from pergamon.audit.spool import Spool, SpoolBusy
from pergamon.audit.syslog import datagram, default_hostname, format_message, frame_octet_counted
from pergamon.config import ConfigError, Settings, TlsSettings
from pergamon.security import tls as tls_policy

log = logging.getLogger(__name__)

FSYNC_INTERVAL = 0.05
"""Seconds between spool fsyncs: the most audit messages a power loss can take (see module doc)."""
CONNECT_TIMEOUT = 10.0
SEND_TIMEOUT = 30.0


@dataclass(frozen=True)
class Destination:
    """One Audit Record Repository: ``udp://host:port`` (RFC 5426) or ``tls://host:port`` (RFC 5425)."""

    transport: Literal["udp", "tls"]
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}://{host}:{self.port}"

    @property
    def folder(self) -> str:
        """Spool folder name of this repository."""
        return re.sub(r"[^A-Za-z0-9.-]", "_", f"{self.transport}_{self.host}_{self.port}")


def parse_repositories(text: str) -> list[Destination]:
    """The repositories of `audit.repositories`; ConfigError naming the key for a bad entry."""
    result: list[Destination] = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        match = re.fullmatch(r"(udp|tls)://(\[[0-9A-Fa-f:.]+\]|[^:/\[\]]+):(\d{1,5})/?", entry)
        if not match or not 0 < int(match.group(3)) < 65536:
            raise ConfigError(f"audit.repositories: {entry!r} is not udp://host:port or tls://host:port")
        transport: Literal["udp", "tls"] = "udp" if match.group(1) == "udp" else "tls"
        destination = Destination(transport, match.group(2).strip("[]"), int(match.group(3)))
        if destination not in result:
            result.append(destination)
    return result


def client_context(settings: Settings) -> ssl.SSLContext:
    """The TLS client context for ``tls://`` repositories: Pergamon's one TLS policy
    (`pergamon.security.tls.client_context`), or, when no certificate nor CA is configured,
    `_fallback_client_context` (the system's CAs)."""
    return tls_policy.client_context(settings) or _fallback_client_context(settings.tls)


def _fallback_client_context(tls: TlsSettings) -> ssl.SSLContext:
    """TLS >= 1.2 with AEAD (EC)DHE suites (ITI TF-2 3.19.6.2.3, BCP 195), the server verified
    against the system's CAs without host name check (FQDN validation is not claimed)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("ECDHE+AESGCM:DHE+AESGCM:ECDHE+CHACHA20:DHE+CHACHA20")
    context.check_hostname = False
    if tls.verify_peers:
        context.verify_mode = ssl.CERT_REQUIRED
        if tls.ca_certificates:
            context.load_verify_locations(cafile=tls.ca_certificates)
        else:
            context.load_default_certs()
    else:
        context.verify_mode = ssl.CERT_NONE
    if tls.certificate:
        context.load_cert_chain(tls.certificate, tls.private_key or None)
    return context


class _Transport:
    """A connection to one repository; `send` raises OSError when the message did not go out."""

    def __init__(self, destination: Destination, context: ssl.SSLContext | None) -> None:
        self.destination = destination
        self.context = context
        self.sock: socket.socket | None = None
        self._address: tuple[object, ...] | None = None

    def connect(self) -> None:
        """Open the connection unless open; for TLS, reopen it when the repository closed it."""
        if self.sock is not None and self.destination.transport == "tls" and self._peer_closed():
            log.info("audit repository %s closed the connection; reconnecting", self.destination)
            self.close()
        if self.sock is not None:
            return
        host, port = self.destination.host, self.destination.port
        if self.destination.transport == "udp":
            family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
            self.sock = socket.socket(family, kind, proto)
            self._address = address
            return
        assert self.context is not None
        raw = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
        try:
            raw.settimeout(SEND_TIMEOUT)
            self.sock = self.context.wrap_socket(raw, server_hostname=None if _is_address(host) else host)
        except BaseException:
            raw.close()
            raise
        # TLS 1.3: the server checks our certificate after the client's handshake is done; a refusal
        # arrives as an alert, so wait briefly for one rather than write into a refused connection
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.version() == "TLSv1.3" and self._peer_closed(0.2):
            self.close()
            raise ConnectionRefusedError("the repository closed the connection after the TLS handshake")

    def _peer_closed(self, wait: float = 0.0) -> bool:
        """Whether the repository closed the connection (waiting up to `wait` s for it to do so).

        A syslog receiver sends no data: a readable socket means a close, a reset, a TLS alert,
        or only TLS 1.3 post-handshake records (session tickets), which are read and ignored.
        """
        assert self.sock is not None
        deadline = time.monotonic() + wait
        while True:
            try:
                readable, _, _ = select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))
                if not readable:
                    return False
                self.sock.setblocking(False)
                try:
                    data = self.sock.recv(4096)
                finally:
                    self.sock.settimeout(SEND_TIMEOUT)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                continue
            except (OSError, ValueError):
                return True
            if not data:
                return True

    def send(self, message: bytes) -> None:
        assert self.sock is not None
        if self.destination.transport == "udp":
            assert self._address is not None
            self.sock.sendto(datagram(message), self._address)
        else:
            self.sock.sendall(frame_octet_counted(message))

    def close(self) -> None:
        if self.sock is not None:
            sock, self.sock = self.sock, None
            try:
                if isinstance(sock, ssl.SSLSocket):
                    sock.settimeout(1.0)
                    sock.unwrap()
            except (OSError, ValueError):
                pass
            finally:
                sock.close()


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _Delivery:
    """The delivery thread of one repository: spool -> transport, offset advanced after each send."""

    def __init__(
        self,
        destination: Destination,
        spool: Spool,
        context: ssl.SSLContext | None,
        retry_delay: float,
        retry_max_delay: float,
    ) -> None:
        self.destination = destination
        self.spool = spool
        self.transport = _Transport(destination, context)
        self.retry_delay = retry_delay
        self.retry_max_delay = retry_max_delay
        self.wakeup = threading.Condition()
        self.stopping = threading.Event()
        self.caught_up = threading.Event()
        self.failing = False
        self.thread = threading.Thread(target=self._run, name=f"pergamon-audit-{destination.folder}", daemon=True)

    def notify(self) -> None:
        with self.wakeup:
            self.wakeup.notify()

    def _run(self) -> None:
        delay = self.retry_delay
        while not self.stopping.is_set():
            records, end = self.spool.read()
            if not records:
                self.caught_up.set()
                with self.wakeup:
                    if not self.stopping.is_set():  # pending but unreadable: a record being written
                        self.wakeup.wait(0.05 if self.spool.pending() else 1.0)
                continue
            self.caught_up.clear()
            try:
                self._deliver(records, end)
            except (OSError, ssl.SSLError) as exc:
                self.transport.close()
                if not self.failing:
                    log.warning(
                        "audit repository %s unreachable (%s); messages wait in %s",
                        self.destination,
                        exc,
                        self.spool.folder,
                    )
                self.failing = True
                self.stopping.wait(delay)
                delay = min(delay * 2, self.retry_max_delay)
                continue
            if self.failing:
                log.info("audit repository %s reachable again; delivering the spooled messages", self.destination)
                self.failing = False
            delay = self.retry_delay
        self.transport.close()

    def _deliver(self, records: list[bytes], end: tuple[int, int]) -> None:
        seq, offset = end[0], end[1] - sum(8 + len(r) for r in records)
        try:
            self.transport.connect()
            for record in records:
                self.transport.send(record)
                offset += 8 + len(record)
                self.spool.commit((seq, offset))
        finally:
            self.spool.persist()


class AuditSender:
    """Durable queue of audit messages and the syslog clients that empty it (see module doc)."""

    def __init__(
        self, archive: Archive, *, retry_delay: float = 0.5, retry_max_delay: float = 30.0, drain_timeout: float = 2.0
    ) -> None:
        self.archive = archive
        self.settings = archive.settings
        self.destinations = parse_repositories(self.settings.audit.repositories)
        self.retry_delay = retry_delay
        self.retry_max_delay = retry_max_delay
        self.drain_timeout = drain_timeout
        self.hostname = default_hostname()
        self._lock = threading.Lock()
        self._deliveries: list[_Delivery] = []
        self._spools: list[Spool] = []
        self._dirty = threading.Event()
        self._stopping = threading.Event()
        self._flusher: threading.Thread | None = None

    @property
    def spool_dir(self) -> Path:
        return Path(self.settings.server.data_dir) / "audit-spool"

    def _open(self) -> list[Spool]:
        with self._lock:
            if not self._spools and self.destinations:
                self._spools = [self._open_spool(d) for d in self.destinations]
            return self._spools

    def _open_spool(self, destination: Destination) -> Spool:
        """The repository's spool; ``<name>.<n>`` when another process (``pergamon import`` while
        ``pergamon serve`` runs) holds it. A later sender adopts such spools (see `start`)."""
        for n in range(64):
            folder = self.spool_dir / (destination.folder if n == 0 else f"{destination.folder}.{n}")
            try:
                return Spool(folder)
            except SpoolBusy:
                continue
        raise RuntimeError(f"no free audit spool for {destination} in {self.spool_dir}")

    def _adopt(self, destination: Destination, own: set[Path]) -> list[Spool]:
        """Spools of `destination` left with pending messages by other processes and free now."""
        adopted: list[Spool] = []
        for folder in sorted(self.spool_dir.glob(f"{destination.folder}.*")):
            if folder in own or not folder.is_dir():
                continue
            try:
                spool = Spool(folder)
            except SpoolBusy:
                continue
            if spool.pending():
                adopted.append(spool)
            else:
                spool.close()
        return adopted

    def send(self, message: bytes) -> None:
        """Queue one audit message (DICOM PS3.15 A.5 XML, UTF-8) for every repository; any thread.

        Returns once the message is written to the spools (not yet fsynced: see FSYNC_INTERVAL).
        """
        spools = self._open()
        if not spools:
            return
        record = format_message(message, hostname=self.hostname, app_name="pergamon")
        for spool in spools[: len(self.destinations)]:
            spool.append(record)
        self._dirty.set()
        for delivery in self._deliveries:
            delivery.notify()

    def start(self) -> None:
        """Open the spools and start the fsync thread and one delivery thread per repository."""
        spools = self._open()
        if not spools or self._deliveries:
            return
        context = client_context(self.settings) if any(d.transport == "tls" for d in self.destinations) else None
        self._stopping.clear()
        own = {spool.folder for spool in spools}
        pairs = list(zip(self.destinations, spools, strict=True))
        for destination in self.destinations:
            pairs += [(destination, spool) for spool in self._adopt(destination, own)]
        with self._lock:
            self._spools = [spool for _, spool in pairs]  # send() appends to the first len(destinations)
        self._deliveries = [
            _Delivery(d, s, context if d.transport == "tls" else None, self.retry_delay, self.retry_max_delay)
            for d, s in pairs
        ]
        self._flusher = threading.Thread(target=self._flush_loop, name="pergamon-audit-fsync", daemon=True)
        self._flusher.start()
        for delivery in self._deliveries:
            delivery.thread.start()

    def _flush_loop(self) -> None:
        while not self._stopping.is_set():
            if not self._dirty.wait(1.0):
                continue
            self._stopping.wait(FSYNC_INTERVAL)  # gather the messages of the next 50 ms into one fsync
            self._dirty.clear()
            for spool in list(self._spools):
                spool.sync()

    def pending(self) -> int:
        """Repositories with messages not yet delivered."""
        return sum(1 for spool in self._spools if spool.pending())

    def stop(self) -> None:
        """Give reachable repositories up to `drain_timeout` s to take the waiting messages, then
        stop the threads, fsync the spools and persist the offsets (a new sender resumes there)."""
        deadline = time.monotonic() + self.drain_timeout
        for delivery in self._deliveries:
            delivery.notify()
            while not delivery.failing and delivery.spool.pending() and time.monotonic() < deadline:
                delivery.caught_up.wait(0.02)
        self._stopping.set()
        for delivery in self._deliveries:
            delivery.stopping.set()
            delivery.notify()
        for delivery in self._deliveries:
            delivery.thread.join(SEND_TIMEOUT + 5)
        if self._flusher is not None:
            self._flusher.join(5)
        with self._lock:
            for spool in self._spools:
                spool.close()
            self._spools = []
            self._deliveries = []
            self._flusher = None
