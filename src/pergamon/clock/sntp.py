"""A Simple Network Time Protocol (SNTP v4) client: RFC 4330, on the NTPv4 wire format of RFC 5905.

IHE ITI TF-2 3.1 (Maintain Time [ITI-1]) permits SNTP for a Time Client that is not grouped with
a Time Server and needs one-second accuracy (Table 3.1.4-1), which is Pergamon's case: the host's
own NTP daemon keeps the system clock, and Pergamon checks that clock against the configured
servers, reporting the offset and raising an alarm when it passes the configured limit.

Why not a library: one request and one 48-byte reply is all SNTP needs, and the candidates
(``ntplib``) decode replies without the checks RFC 4330 section 5 requires of a client (the
origin timestamp must echo our transmit timestamp, mode 4, leap indicator not 3, stratum
1..15, non-zero transmit timestamp) and handle era rollover (2036) loosely. Sixty lines of
stdlib ``struct`` and ``socket`` make the checks explicit and testable.

Timestamps are kept as the raw 64-bit NTP values (32 bits of seconds since 1900, 32 bits of
fraction) so that the origin check compares exactly what was sent.
"""

from __future__ import annotations

import secrets
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

NTP_PORT = 123
PACKET_SIZE = 48
#: Seconds from the NTP prime epoch (1900-01-01) to the Unix epoch (1970-01-01), RFC 5905 figure 4.
NTP_UNIX_DELTA = 2_208_988_800
#: Seconds in one NTP era (2**32); era 1 starts 2036-02-07 06:28:16 UTC (RFC 4330 section 3).
ERA = 1 << 32
MODE_CLIENT = 3
MODE_SERVER = 4
LEAP_UNSYNCHRONIZED = 3
VERSION = 4
_FORMAT = "!BBbbII4sQQQQ"  # RFC 5905 figure 8: LI/VN/Mode, Stratum, Poll, Precision, ... Transmit


class SntpError(Exception):
    """The server did not give a usable time (no answer, or a reply that fails RFC 4330 checks)."""


class InvalidReply(SntpError):
    """A reply that RFC 4330 section 5 says the client must discard."""


@dataclass(frozen=True)
class NtpPacket:
    """The 48-byte NTP header (RFC 5905 section 7.3), without extension fields or MAC."""

    leap: int = 0
    version: int = VERSION
    mode: int = MODE_CLIENT
    stratum: int = 0
    poll: int = 0
    precision: int = 0
    root_delay: int = 0  # NTP short format (16.16), raw
    root_dispersion: int = 0
    reference_id: bytes = b"\0\0\0\0"
    reference_ts: int = 0  # NTP timestamp format (32.32), raw
    origin_ts: int = 0
    receive_ts: int = 0
    transmit_ts: int = 0

    def encode(self) -> bytes:
        first = (self.leap & 0x3) << 6 | (self.version & 0x7) << 3 | (self.mode & 0x7)
        return struct.pack(
            _FORMAT,
            first,
            self.stratum,
            self.poll,
            self.precision,
            self.root_delay,
            self.root_dispersion,
            self.reference_id,
            self.reference_ts,
            self.origin_ts,
            self.receive_ts,
            self.transmit_ts,
        )

    @classmethod
    def decode(cls, data: bytes) -> NtpPacket:
        """Parse the header; extension fields and a MAC after byte 48 are ignored (RFC 5905 7.5)."""
        if len(data) < PACKET_SIZE:
            raise InvalidReply(f"reply of {len(data)} bytes, an NTP header has {PACKET_SIZE}")
        first, stratum, poll, precision, rdelay, rdisp, refid, ref, org, rec, xmt = struct.unpack(
            _FORMAT, data[:PACKET_SIZE]
        )
        return cls(
            first >> 6,
            (first >> 3) & 0x7,
            first & 0x7,
            stratum,
            poll,
            precision,
            rdelay,
            rdisp,
            refid,
            ref,
            org,
            rec,
            xmt,
        )


def unix_to_ntp(seconds: float) -> int:
    """A Unix time as a raw 64-bit NTP timestamp (wrapping into era 1 after 2036)."""
    whole = int(seconds // 1)
    fraction = int((seconds - whole) * ERA) & 0xFFFFFFFF
    return ((whole + NTP_UNIX_DELTA) % ERA) << 32 | fraction


def ntp_to_unix(timestamp: int) -> float:
    """A raw NTP timestamp as Unix time, with the RFC 4330 section 3 era rule.

    If the most significant bit of the seconds is set the time is in 1968-2036 (era 0);
    if it is clear the time is in 2036-2104 (era 1), counted from 2036-02-07 06:28:16 UTC.
    """
    seconds = timestamp >> 32
    if not seconds & 0x80000000:
        seconds += ERA
    return seconds - NTP_UNIX_DELTA + (timestamp & 0xFFFFFFFF) / ERA


def offset_and_delay(t1: float, t2: float, t3: float, t4: float) -> tuple[float, float]:
    """Clock offset and round-trip delay from the four timestamps (RFC 4330 section 5, RFC 5905 8).

    t1: client transmit, t2: server receive, t3: server transmit, t4: client receive.
    offset = ((t2 - t1) + (t3 - t4)) / 2 (positive: the server is ahead of us);
    delay = (t4 - t1) - (t3 - t2).
    """
    return ((t2 - t1) + (t3 - t4)) / 2, (t4 - t1) - (t3 - t2)


def make_request(transmit_ts: int) -> bytes:
    """A client request: LI 0, VN 4, mode 3, all fields zero except the transmit timestamp (RFC 4330 5)."""
    return NtpPacket(transmit_ts=transmit_ts).encode()


def validate_reply(reply: NtpPacket, sent_transmit_ts: int) -> None:
    """Raise `InvalidReply` for a reply RFC 4330 section 5 tells the client to discard."""
    if reply.mode != MODE_SERVER:
        raise InvalidReply(f"mode {reply.mode}, a server reply has mode {MODE_SERVER}")
    if reply.version not in (3, 4):
        raise InvalidReply(f"NTP version {reply.version}")
    if reply.stratum == 0:
        code = reply.reference_id.decode("ascii", "replace").strip("\0")
        raise InvalidReply(f"kiss-o'-death {code or '?'} (stratum 0)")
    if reply.stratum > 15:
        raise InvalidReply(f"stratum {reply.stratum}: the server is not synchronized")
    if reply.leap == LEAP_UNSYNCHRONIZED:
        raise InvalidReply("leap indicator 3: the server clock is not synchronized")
    if reply.origin_ts != sent_transmit_ts:
        raise InvalidReply("origin timestamp does not echo our transmit timestamp (stale or forged reply)")
    if reply.transmit_ts == 0:
        raise InvalidReply("transmit timestamp is zero")


@dataclass(frozen=True)
class Sample:
    """One measurement against one server."""

    server: str
    offset: float
    delay: float
    stratum: int
    measured_at: float  # local Unix time of the reply


def query(
    host: str,
    port: int = NTP_PORT,
    timeout: float = 2.0,
    clock: Callable[[], float] = time.time,
) -> Sample:
    """Ask one server for the time and measure our clock's offset (RFC 4330 section 5).

    Replies that fail validation (a stale duplicate, say) are skipped until the timeout.

    Raises:
        SntpError: no valid reply within `timeout` seconds, or the name does not resolve.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    except socket.gaierror as exc:
        raise SntpError(f"{host}: {exc.strerror}") from None
    with socket.socket(family, kind, proto) as sock:
        sock.connect(address)  # only replies from the server's address reach us
        t1 = clock()
        started = time.monotonic()
        # The low 20 bits (under 0.25 ms) of our transmit timestamp are random, so a blind forger
        # cannot guess the origin timestamp a reply must echo; t1 itself is kept locally.
        sent = (unix_to_ntp(t1) & ~0xFFFFF) | secrets.randbits(20)
        sock.send(make_request(sent))
        problem = "nothing received"
        while (remaining := timeout - (time.monotonic() - started)) > 0:
            sock.settimeout(remaining)
            try:
                data = sock.recv(1024)
            except TimeoutError:
                break
            except OSError as exc:  # ICMP port unreachable, for one
                raise SntpError(f"{host}:{port}: {exc.strerror or exc}") from None
            t4 = t1 + (time.monotonic() - started)
            try:
                reply = NtpPacket.decode(data)
                validate_reply(reply, sent)
            except InvalidReply as exc:
                problem = f"last reply discarded: {exc}"
                continue
            offset, delay = offset_and_delay(t1, ntp_to_unix(reply.receive_ts), ntp_to_unix(reply.transmit_ts), t4)
            return Sample(f"{host}:{port}", offset, max(delay, 0.0), reply.stratum, t4)
    raise SntpError(f"{host}:{port}: no valid reply within {timeout:g} s ({problem})")
