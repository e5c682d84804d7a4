"""The SNTP client (clock/sntp.py): RFC 4330 / RFC 5905 packet format, offset math, reply checks."""

from __future__ import annotations

import dataclasses
import socket
import struct
import threading

import pytest

from pergamon.clock import sntp
from pergamon.clock.monitor import parse_server
from pergamon.clock.sntp import InvalidReply, NtpPacket

SENT = sntp.unix_to_ntp(1_700_000_000.25)


def good_reply(**changes: object) -> NtpPacket:
    reply = NtpPacket(
        leap=0,
        version=4,
        mode=sntp.MODE_SERVER,
        stratum=2,
        reference_id=b"GPS\0",
        origin_ts=SENT,
        receive_ts=sntp.unix_to_ntp(1_700_000_000.30),
        transmit_ts=sntp.unix_to_ntp(1_700_000_000.31),
    )
    return dataclasses.replace(reply, **changes)  # type: ignore[arg-type]


def test_request_is_48_bytes_li0_vn4_mode3_with_only_the_transmit_timestamp() -> None:
    data = sntp.make_request(SENT)
    assert len(data) == 48
    assert data[0] == 0b00_100_011  # LI 0, VN 4, mode 3 (RFC 4330 section 5)
    assert data[1:40] == bytes(39)
    assert struct.unpack("!Q", data[40:48])[0] == SENT


def test_encode_decode_round_trip_and_field_positions() -> None:
    packet = good_reply(poll=6, precision=-20, root_delay=0x00010000, root_dispersion=0x8000, leap=1)
    data = packet.encode()
    assert NtpPacket.decode(data) == packet
    assert data[0] >> 6 == 1 and data[1] == 2 and data[2] == 6 and struct.unpack("!b", data[3:4])[0] == -20
    assert data[12:16] == b"GPS\0"
    assert struct.unpack("!Q", data[24:32])[0] == SENT  # origin
    # extension fields / MAC after the header are ignored
    assert NtpPacket.decode(data + bytes(20)) == packet


def test_short_reply_is_invalid() -> None:
    with pytest.raises(InvalidReply, match="47 bytes"):
        NtpPacket.decode(bytes(47))


def test_timestamp_conversions_and_eras() -> None:
    assert sntp.unix_to_ntp(0) == sntp.NTP_UNIX_DELTA << 32
    assert sntp.ntp_to_unix(sntp.NTP_UNIX_DELTA << 32) == 0
    assert sntp.ntp_to_unix(sntp.unix_to_ntp(1_700_000_000.5)) == pytest.approx(1_700_000_000.5, abs=1e-9)
    # RFC 4330 section 3: MSB clear means era 1 (from 2036-02-07 06:28:16 UTC)
    era1_start = (1 << 32) - sntp.NTP_UNIX_DELTA
    assert sntp.ntp_to_unix(0) == era1_start == 2_085_978_496
    later = era1_start + 1000.75
    assert sntp.unix_to_ntp(later) >> 32 == 1000
    assert sntp.ntp_to_unix(sntp.unix_to_ntp(later)) == pytest.approx(later)


def test_offset_and_delay() -> None:
    # server 5 s ahead, 10 ms each way, 1 ms of server processing
    t1 = 100.000
    t2 = t1 + 0.010 + 5
    t3 = t2 + 0.001
    t4 = t1 + 0.021
    offset, delay = sntp.offset_and_delay(t1, t2, t3, t4)
    assert offset == pytest.approx(5.0)
    assert delay == pytest.approx(0.020)
    # asymmetric path: the error is at most delay / 2
    offset, delay = sntp.offset_and_delay(0.0, 0.030, 0.030, 0.040)
    assert offset == pytest.approx(0.010) and delay == pytest.approx(0.040)
    assert sntp.offset_and_delay(10.0, 7.0, 7.0, 10.0) == (-3.0, 0.0)


def test_a_good_reply_validates() -> None:
    sntp.validate_reply(good_reply(), SENT)
    sntp.validate_reply(good_reply(version=3), SENT)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mode": 3}, "mode 3"),
        ({"mode": 5}, "mode 5"),
        ({"leap": 3}, "leap indicator 3"),
        ({"stratum": 0, "reference_id": b"RATE"}, "kiss-o'-death RATE"),
        ({"stratum": 16}, "stratum 16"),
        ({"origin_ts": SENT + 1}, "origin timestamp"),
        ({"origin_ts": 0}, "origin timestamp"),
        ({"transmit_ts": 0}, "transmit timestamp is zero"),
        ({"version": 1}, "version 1"),
    ],
)
def test_malformed_replies_are_rejected(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidReply, match=message):
        sntp.validate_reply(good_reply(**changes), SENT)


def _responder(handler: object) -> tuple[socket.socket, threading.Thread]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))

    def serve() -> None:
        try:
            data, peer = sock.recvfrom(1024)
        except OSError:
            return
        for reply in handler(NtpPacket.decode(data)):  # type: ignore[operator]
            sock.sendto(reply, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return sock, thread


def test_query_skips_a_bad_reply_and_uses_the_good_one() -> None:
    def handler(request: NtpPacket) -> list[bytes]:
        now = sntp.unix_to_ntp(sntp.ntp_to_unix(request.transmit_ts) + 0.2)
        good = good_reply(origin_ts=request.transmit_ts, receive_ts=now, transmit_ts=now)
        return [good_reply(origin_ts=1).encode(), b"short", good.encode()]

    sock, thread = _responder(handler)
    port = sock.getsockname()[1]
    with sock:
        sample = sntp.query("127.0.0.1", port, timeout=2)
    thread.join(2)
    assert sample.server == f"127.0.0.1:{port}"
    assert sample.stratum == 2
    assert sample.offset == pytest.approx(0.2, abs=0.05)
    assert 0 <= sample.delay < 0.5


def test_query_times_out_naming_the_last_problem() -> None:
    sock, thread = _responder(lambda request: [good_reply(leap=3, origin_ts=request.transmit_ts).encode()])
    expected = r"no valid reply within 0.3 s \(last reply discarded: leap indicator 3"
    with sock, pytest.raises(sntp.SntpError, match=expected):
        sntp.query("127.0.0.1", sock.getsockname()[1], timeout=0.3)
    thread.join(2)


def test_query_to_a_closed_port_fails_fast_or_times_out() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(sntp.SntpError):
        sntp.query("127.0.0.1", port, timeout=0.5)


def test_unknown_host() -> None:
    with pytest.raises(sntp.SntpError, match=r"no-such-host\.invalid"):
        sntp.query("no-such-host.invalid", timeout=0.5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ntp.example", ("ntp.example", 123)),
        (" 127.0.0.1:1123 ", ("127.0.0.1", 1123)),
        ("[::1]:1123", ("::1", 1123)),
        ("[::1]", ("::1", 123)),
        ("fe80::1", ("fe80::1", 123)),
    ],
)
def test_parse_server(text: str, expected: tuple[str, int]) -> None:
    assert parse_server(text) == expected


@pytest.mark.parametrize("text", ["", "host:", "host:0", "host:70000", "host:x", "[::1]x", ":123"])
def test_parse_server_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_server(text)
