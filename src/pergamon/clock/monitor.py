"""Consistent Time (IHE CT) Time Client: checking the local clock against the configured time servers.

IHE ITI TF-2 3.1 (Maintain Time [ITI-1]) asks a Time Client for a median error under one second,
with the time server configured by hand (3.1.4.1.2). The host's NTP daemon adjusts the system
clock; this monitor measures the result with SNTP (RFC 4330, see `pergamon.clock.sntp`) every
`time.check_interval` seconds against every server in `time.servers`, keeps the sample with the
lowest round-trip delay (RFC 5905 section 10 prefers it: its offset error is bounded by delay / 2),
and publishes the offset to `/health` and `/metrics`. When |offset| passes `time.max_offset` it
warns in the log and emits `ClockOffsetExceeded` on the archive bus (audited as a Security Alert)
once per excursion. A server that does not answer is logged and shown as unreachable; it never
stops Pergamon.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pergamon.archive.events import ClockOffsetExceeded
from pergamon.archive.service import Archive
from pergamon.clock import sntp

log = logging.getLogger(__name__)

QUERY_TIMEOUT = 2.0
Query = Callable[[str, int], sntp.Sample]


def parse_server(text: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6-address]:port`` or a bare IPv6 address as (host, port).

    Raises:
        ValueError: an empty host or a port that is not 1..65535.
    """
    text = text.strip()
    host, port = text, str(sntp.NTP_PORT)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r}: expected [address]:port")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not host or host:port")
    return host, int(port)


@dataclass(frozen=True)
class ServerStatus:
    """The last check of one configured server."""

    server: str
    reachable: bool
    offset: float | None = None
    delay: float | None = None
    stratum: int | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        if not self.reachable:
            return {"server": self.server, "reachable": False, "error": self.error}
        return {
            "server": self.server,
            "reachable": True,
            "offset": self.offset,
            "delay": self.delay,
            "stratum": self.stratum,
        }


@dataclass(frozen=True)
class ClockStatus:
    """What `/health` and `/metrics` report about the clock."""

    configured: bool
    max_offset: float = 1.0
    offset: float | None = None
    server: str | None = None
    last_check: float | None = None
    servers: tuple[ServerStatus, ...] = field(default=())

    @property
    def state(self) -> str:
        if not self.configured:
            return "not configured"
        if self.last_check is None:
            return "pending"
        if self.offset is None:
            return "unreachable"
        return "offset exceeded" if abs(self.offset) > self.max_offset else "ok"

    def as_json(self) -> dict[str, Any]:
        if not self.configured:
            return {"status": self.state}
        return {
            "status": self.state,
            "offset": self.offset,
            "max_offset": self.max_offset,
            "server": self.server,
            "last_check": (
                None if self.last_check is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.last_check))
            ),
            "servers": [s.as_json() for s in self.servers],
        }


_monitors: weakref.WeakKeyDictionary[Archive, ClockMonitor] = weakref.WeakKeyDictionary()


def status_for(archive: Archive) -> ClockStatus:
    """The clock status of the monitor running for `archive` (not checked yet if there is none)."""
    monitor = _monitors.get(archive)
    if monitor is not None:
        return monitor.status
    time_settings = archive.settings.time
    return ClockStatus(configured=bool(time_settings.servers.strip()), max_offset=time_settings.max_offset)


def _default_query(host: str, port: int) -> sntp.Sample:
    return sntp.query(host, port, timeout=QUERY_TIMEOUT)


class ClockMonitor:
    """Periodic SNTP checks of the local clock's offset, on a daemon thread."""

    def __init__(self, archive: Archive, query: Query = _default_query) -> None:
        self.archive = archive
        self.settings = archive.settings.time
        self.servers = [s.strip() for s in self.settings.servers.split(",") if s.strip()]
        self.offset: float | None = None
        self.status = ClockStatus(configured=bool(self.servers), max_offset=self.settings.max_offset)
        self._query = query
        self._exceeded = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        _monitors[archive] = self

    def start(self) -> None:
        if not self.servers:
            log.info("no time servers configured ([time] servers): the clock is not checked")
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="pergamon-clock", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(QUERY_TIMEOUT * len(self.servers) + 5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception:  # never let the monitor die silently
                log.exception("clock check failed")
            self._stop.wait(self.settings.check_interval)

    def check(self) -> ClockStatus:
        """Query every server once, keep the lowest-delay sample, publish and alarm as needed."""
        results: list[ServerStatus] = []
        samples: list[sntp.Sample] = []
        for entry in self.servers:
            try:
                host, port = parse_server(entry)
                sample = self._query(host, port)
            except (ValueError, sntp.SntpError) as exc:
                log.warning("time server %s: %s", entry, exc)
                results.append(ServerStatus(entry, reachable=False, error=str(exc)))
                continue
            samples.append(sample)
            results.append(ServerStatus(entry, True, sample.offset, sample.delay, sample.stratum))
        best = min(samples, key=lambda s: s.delay, default=None)
        self.offset = None if best is None else best.offset
        self.status = ClockStatus(
            configured=True,
            max_offset=self.settings.max_offset,
            offset=self.offset,
            server=None if best is None else best.server,
            last_check=time.time(),
            servers=tuple(results),
        )
        if best is None:
            log.warning("no time server answered: the clock offset is unknown")
        else:
            self._judge(best)
        return self.status

    def _judge(self, best: sntp.Sample) -> None:
        limit = self.settings.max_offset
        if abs(best.offset) <= limit:
            if self._exceeded:
                log.info("clock offset back within %.3f s: %+.3f s against %s", limit, best.offset, best.server)
            self._exceeded = False
            return
        log.warning(
            "clock offset %+.3f s against %s exceeds %.3f s (IHE CT requires under 1 s): check the host's NTP",
            best.offset,
            best.server,
            limit,
        )
        if not self._exceeded:
            self._exceeded = True
            self.archive.bus.emit(ClockOffsetExceeded(offset=best.offset, server=best.server, limit=limit))
