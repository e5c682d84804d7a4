"""IHE CT Time Client (clock/): Pergamon's clock checked against a real chronyd and a shifted SNTP responder.

chronyd runs privately (`-x`: it never touches the system clock) on a free UDP port with
`local stratum 10`; the fake responder, written here from RFC 4330 section 5, answers with
the clock shifted by +5 s, which must raise the ClockOffsetExceeded alarm.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port, make_settings, require_tool

from pergamon.archive.events import ClockOffsetExceeded
from pergamon.clock import sntp
from pergamon.config import TimeSettings
from pergamon.runtime import Pergamon

pytestmark = pytest.mark.interop

NTP_UNIX_DELTA = 2_208_988_800


def free_udp_port() -> int:
    """A UDP port for chronyd, outside the ephemeral range (a bind(0) port could be taken by a client socket first)."""
    return free_port(socket.SOCK_DGRAM)


@pytest.fixture
def chronyd(tmp_path: Path) -> Iterator[int]:
    """A private chronyd serving NTP on 127.0.0.1:<port>; yields the port."""
    binary = require_tool("chronyd")
    port = free_udp_port()
    conf = tmp_path / "chrony.conf"
    conf.write_text(
        f"port {port}\nbindaddress 127.0.0.1\nallow 127.0.0.1\nlocal stratum 10\ncmdport 0\n"
        f"pidfile {tmp_path / 'chronyd.pid'}\n"
    )
    log = tmp_path / "chronyd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([binary, "-d", "-f", str(conf), "-x"], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                sntp.query("127.0.0.1", port, timeout=0.5)
                break
            except sntp.SntpError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"chronyd did not serve time: {log.read_text()}") from None
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


class ShiftedSntpServer:
    """An SNTP server (RFC 4330 section 5) whose clock runs `shift` seconds ahead of ours."""

    def __init__(self, shift: float) -> None:
        self.shift = shift
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = int(self.sock.getsockname()[1])
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @staticmethod
    def _timestamp(unix: float) -> int:
        seconds = int(unix) + NTP_UNIX_DELTA
        return seconds << 32 | int((unix - int(unix)) * 2**32)

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                data, peer = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            received = self._timestamp(time.time() + self.shift)
            if len(data) < 48 or data[0] & 0x7 != 3:
                continue
            version = (data[0] >> 3) & 0x7
            poll = data[2]
            client_transmit = data[40:48]
            header = struct.pack("!BBBb", 0 << 6 | version << 3 | 4, 1, poll, -20)
            header += struct.pack("!II4s", 0, 0, b"XFAK") + struct.pack("!Q", received)
            reply = header + client_transmit + struct.pack("!QQ", received, self._timestamp(time.time() + self.shift))
            self.sock.sendto(reply, peer)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(2)
        self.sock.close()


def start_pergamon(tmp_path: Path, database_url: str, servers: str) -> tuple[Pergamon, list[Any]]:
    settings = make_settings(tmp_path / "data", database_url)
    settings = dataclasses.replace(settings, time=TimeSettings(servers=servers, check_interval=3600, max_offset=1.0))
    app = Pergamon(settings)
    events: list[Any] = []
    app.archive.bus.subscribe(events.append)
    app.start()
    return app, events


def checked_health(app: Pergamon) -> dict[str, Any]:
    """/health once the first clock check is done."""
    url = f"http://127.0.0.1:{app.settings.http.port}/health"
    deadline = time.monotonic() + 20
    while True:
        body: dict[str, Any] = httpx.get(url).json()
        if body["clock"]["status"] != "pending" or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def metrics(app: Pergamon) -> list[str]:
    return httpx.get(f"http://127.0.0.1:{app.settings.http.port}/metrics").text.splitlines()


def test_offset_against_chronyd_is_near_zero(chronyd: int, tmp_path: Path, database_url: str) -> None:
    app, events = start_pergamon(tmp_path, database_url, f"127.0.0.1:{chronyd}")
    try:
        health = checked_health(app)
        lines = metrics(app)
    finally:
        app.stop()
    clock = health["clock"]
    assert health["status"] == "ok"
    assert clock["status"] == "ok", clock
    # chronyd -x serves this very clock: the true offset is 0 and the measurement is off by at
    # most delay / 2 (RFC 5905 section 8), which a loaded test machine can stretch
    tolerance = 0.05 + clock["servers"][0]["delay"] / 2
    assert abs(clock["offset"]) < tolerance, clock
    assert clock["server"] == f"127.0.0.1:{chronyd}"
    assert clock["last_check"].endswith("Z")
    assert clock["servers"][0]["reachable"] is True and clock["servers"][0]["stratum"] == 10
    assert app.clock.offset == clock["offset"]
    offset_line = next(line for line in lines if line.startswith("pergamon_clock_offset_seconds "))
    assert abs(float(offset_line.split()[1])) < tolerance
    assert any(line.startswith("pergamon_clock_last_check_timestamp_seconds ") for line in lines)
    assert not [e for e in events if isinstance(e, ClockOffsetExceeded)]


def test_shifted_server_raises_the_alarm_and_an_unreachable_one_is_reported(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake = ShiftedSntpServer(+5.0)
    silent = free_udp_port()  # nobody listens: ICMP port unreachable
    caplog.set_level(logging.WARNING, logger="pergamon.clock")
    try:
        app, events = start_pergamon(tmp_path, database_url, f"127.0.0.1:{fake.port}, 127.0.0.1:{silent}")
        try:
            health = checked_health(app)
            lines = metrics(app)
        finally:
            app.stop()
    finally:
        fake.close()
    clock = health["clock"]
    assert health["status"] == "ok"  # the index is fine; the clock problem is reported, not a 503
    assert clock["status"] == "offset exceeded"
    assert clock["offset"] == pytest.approx(5.0, abs=0.05)
    assert clock["max_offset"] == 1.0
    assert clock["server"] == f"127.0.0.1:{fake.port}"
    by_server = {s["server"]: s for s in clock["servers"]}
    assert by_server[f"127.0.0.1:{fake.port}"]["reachable"] is True
    assert by_server[f"127.0.0.1:{silent}"]["reachable"] is False
    assert by_server[f"127.0.0.1:{silent}"]["error"]
    alarms = [e for e in events if isinstance(e, ClockOffsetExceeded)]
    assert len(alarms) == 1
    assert alarms[0].offset == pytest.approx(5.0, abs=0.05)
    assert alarms[0].server == f"127.0.0.1:{fake.port}" and alarms[0].limit == 1.0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("exceeds 1.000 s" in m and f"127.0.0.1:{fake.port}" in m for m in warnings)
    assert any(f"127.0.0.1:{silent}" in m for m in warnings)
    assert f'pergamon_clock_server_reachable{{server="127.0.0.1:{silent}"}} 0' in lines


def test_only_unreachable_servers_is_not_fatal(tmp_path: Path, database_url: str) -> None:
    app, events = start_pergamon(tmp_path, database_url, f"127.0.0.1:{free_udp_port()}")
    try:
        health = checked_health(app)
    finally:
        app.stop()
    assert health["status"] == "ok"
    assert health["clock"]["status"] == "unreachable"
    assert health["clock"]["offset"] is None
    assert not [e for e in events if isinstance(e, ClockOffsetExceeded)]


def test_no_servers_means_no_checks(server: Any) -> None:
    health = httpx.get(f"http://127.0.0.1:{server.settings.http.port}/health").json()
    assert health["clock"] == {"status": "not configured"}
    assert server.clock.offset is None
    assert not any(line.startswith("pergamon_clock") for line in metrics(server))
