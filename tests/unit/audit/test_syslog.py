"""RFC 5424 formatting and tolerant parsing, RFC 5425 framing, RFC 5426 datagrams, the audit spool.

The ITI-20 wire format (ITI TF-2 3.20.4.1.2): ``<85>1 TIMESTAMP HOST APP PROCID IHE+RFC-3881 - XML``.
The robustness inputs (old, non-conforming senders collected by IHE-WUSTL) are read from
``../shared/schemas/atna/arr-robustness-inputs`` (or ``PERGAMON_ATNA_ROBUSTNESS_INPUTS``) when
present; the synthetic cases below reproduce each of their defects so CI checks them anyway.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

import pytest

from pergamon.audit import syslog
from pergamon.audit.sender import Destination, parse_repositories
from pergamon.audit.spool import Spool
from pergamon.audit.syslog import FrameDecoder, format_message, frame_octet_counted, parse_frames, parse_message
from pergamon.config import ConfigError

XML = '<?xml version="1.0" encoding="UTF-8"?><AuditMessage><EventIdentification EventActionCode="E"/>' + (
    "<Patient name='Müller^Jürgen'/>\n\t</AuditMessage>"
)
ROBUSTNESS = Path(
    os.environ.get(
        "PERGAMON_ATNA_ROBUSTNESS_INPUTS",
        Path(__file__).resolve().parents[4] / "shared" / "schemas" / "atna" / "arr-robustness-inputs",
    )
)

# the header rules of syslog5424.abnf, as one expression
HEADER_ABNF = re.compile(
    rb"^<(?P<prival>\d{1,3})>(?P<version>[1-9]\d{0,2}) "
    rb"(?P<timestamp>-|\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})) "
    rb"(?P<hostname>-|[!-~]{1,255}) (?P<app>-|[!-~]{1,48}) (?P<procid>-|[!-~]{1,128}) "
    rb"(?P<msgid>-|[!-~]{1,32}) (?P<sd>-|\[[^\]]*\]) "
)


def test_format_follows_iti20_and_the_abnf() -> None:
    message = format_message(XML.encode(), hostname="pacs.example.org", procid="42")
    match = HEADER_ABNF.match(message)
    assert match, message[:120]
    assert match["prival"] == b"85"  # facility 10 authpriv * 8 + severity 5 notice
    assert match["version"] == b"1"
    assert match["msgid"] == b"IHE+RFC-3881"
    assert match["sd"] == b"-"
    assert match["hostname"] == b"pacs.example.org" and match["app"] == b"pergamon" and match["procid"] == b"42"
    stamp = dt.datetime.fromisoformat(match["timestamp"].decode().replace("Z", "+00:00"))
    assert stamp.tzinfo is not None and abs((dt.datetime.now(dt.UTC) - stamp).total_seconds()) < 60
    assert message[match.end() :] == XML.encode()  # no BOM: ITI TF-2 3.20.4.1.2 discourages it


def test_format_options() -> None:
    warning = format_message(
        b"<x/>", severity=syslog.SEVERITY_WARNING, timestamp="2024-01-02T03:04:05.5+01:00", bom=True
    )
    assert warning.startswith(b"<84>1 2024-01-02T03:04:05.5+01:00 ")
    assert b" IHE+RFC-3881 - \xef\xbb\xbf<x/>" in warning
    utc = format_message(b"", timestamp=dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC), hostname="h")
    parsed = parse_message(utc)
    assert parsed.datetime() == dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)
    assert syslog.default_hostname() and " " not in syslog.default_hostname()
    for bad in ({"hostname": "two words"}, {"msgid": "x" * 33}, {"timestamp": "yesterday"}, {"severity": 8}):
        with pytest.raises(syslog.SyslogError):
            format_message(b"", **bad)


def test_round_trip() -> None:
    raw = format_message(XML.encode(), hostname="h", procid="7", app_name="app")
    parsed = parse_message(raw)
    assert parsed.valid, parsed.problems
    assert (parsed.pri, parsed.facility, parsed.severity, parsed.version) == (85, 10, 5, 1)
    assert (parsed.hostname, parsed.app_name, parsed.procid, parsed.msgid) == ("h", "app", "7", "IHE+RFC-3881")
    assert parsed.structured_data == "-" and parsed.is_ihe_audit
    assert parsed.msg == XML.encode() and not parsed.bom
    with_bom = parse_message(format_message(XML.encode(), bom=True))
    assert with_bom.valid and with_bom.bom and with_bom.msg == XML.encode()


def test_structured_data_and_empty_msg() -> None:
    parsed = parse_message(b'<13>1 - - - - - [ex@32473 a="x\\"y]z" b="2"][second] hello')
    assert parsed.valid, parsed.problems
    assert parsed.structured_data == '[ex@32473 a="x\\"y]z" b="2"][second]'
    assert parsed.msg == b"hello"
    assert parse_message(b"<13>1 - - - - - -").valid
    assert parse_message(b"<13>1 - - - - - -").msg == b""
    unclosed = parse_message(b'<13>1 - - - - - [ex a="1" rest')
    assert not unclosed.valid and unclosed.msg == b'[ex a="1" rest'


@pytest.mark.parametrize(
    ("data", "problem", "msg"),
    [
        (b"\xef\xbb\xbf<85>1 2011-11-09T16:19:28Z h a - - - <x/>", "BOM before PRI", b"<x/>"),  # msg.txt
        (b"<?xml version='1.0'?>\n<AuditMessage/>", "no PRI", b"<?xml version='1.0'?>\n<AuditMessage/>"),  # msg.xml
        (b"\n<AuditMessage>\n</AuditMessage>", "no PRI", b"\n<AuditMessage>\n</AuditMessage>"),  # test.xml
        (b"<85>Nov 29 13:22:12 host app: <x/>", "no VERSION", b"Nov 29 13:22:12 host app: <x/>"),  # RFC 3164
        (b"<85>1 2011-11-29T13:22:12.555-05:00 host OHT 30 IHEA <x/>", "STRUCTURED-DATA missing", b"<x/>"),
        (b"<85>1 2011-11-29T13:22:12.555-05:00 host OHT 30 <x/>", "MSGID missing", b"<x/>"),
        (b"<85>1 2011-11-29 13:22 host a - - - <x/>", "TIMESTAMP", b"- <x/>"),  # fields shift, nothing lost
        (b"<999>1 - - - - - - <x/>", "no PRI", b"<999>1 - - - - - - <x/>"),
        (b"<85>1 - - - - - - \xff\xfe<x/>", "not UTF-8", b"\xff\xfe<x/>"),
        (b"", "no PRI", b""),
        (b"<85>1 - " + b"h" * 300 + b" a - - - x", "HOSTNAME", b"x"),
    ],
)
def test_malformed_messages_are_kept_and_flagged(data: bytes, problem: str, msg: bytes) -> None:
    parsed = parse_message(data)
    assert not parsed.valid
    assert any(problem in p for p in parsed.problems), parsed.problems
    assert parsed.msg == msg
    assert parsed.raw == data


def robustness_inputs() -> list[Path]:
    return sorted(ROBUSTNESS.glob("*")) if ROBUSTNESS.is_dir() else []


@pytest.mark.skipif(not robustness_inputs(), reason=f"no ATNA robustness inputs at {ROBUSTNESS}")
@pytest.mark.parametrize("path", robustness_inputs(), ids=lambda p: p.name)
def test_arr_robustness_inputs_are_tolerated(path: Path) -> None:
    data = path.read_bytes()
    parsed = parse_message(data)
    assert b"</AuditMessage>" in parsed.msg  # the audit XML is never lost
    if data.lstrip(syslog.BOM).startswith(b"<85>1 "):
        assert parsed.pri == 85 and parsed.version == 1 and parsed.hostname and parsed.app_name
        assert parsed.msg.lstrip().startswith(b"<?xml")
        assert parsed.datetime() is not None
    else:
        assert parsed.pri is None and parsed.msg == data
    # and the same bytes through an RFC 5425 stream, split anywhere
    stream = frame_octet_counted(data) + frame_octet_counted(b"<85>1 - - - - - - next")
    decoder = FrameDecoder()
    frames = [f.data for chunk in (stream[:7], stream[7:500], stream[500:]) for f in decoder.feed(chunk)]
    assert frames == [data, b"<85>1 - - - - - - next"]


def test_octet_counting() -> None:
    one = format_message(XML.encode(), hostname="h")
    framed = frame_octet_counted(one)
    assert framed == str(len(one)).encode() + b" " + one  # RFC 5425 4.3: MSG-LEN SP SYSLOG-MSG
    stream = framed + frame_octet_counted(b"<85>1 - - - - - - 2") + framed[:20]
    messages, rest = parse_frames(stream)
    assert messages == [one, b"<85>1 - - - - - - 2"]
    assert rest == framed[:20]
    for cut in range(len(framed) + 1):  # any split of the stream gives the same messages
        first, rest = parse_frames(framed[:cut])
        second, rest = parse_frames(rest + framed[cut:])
        assert first + second == [one] and rest == b""


def test_non_transparent_and_garbage_frames_make_progress() -> None:
    stream = b"<13>1 - - - - - - lf framed\n" + b"11 <13>1 - - -garbage no digits\r\n" + b"0 x\n" + b"3 abc"
    messages, rest = parse_frames(stream)
    assert messages == [b"<13>1 - - - - - - lf framed", b"<13>1 - - -", b"garbage no digits", b"0 x", b"abc"]
    assert rest == b""
    assert parse_frames(b"12345678901234 x") == ([], b"12345678901234 x")  # waits for an LF
    assert parse_frames(b"12345678901234 x\n")[0] == [b"12345678901234 x"]


def test_frame_decoder_bounds_oversize_messages() -> None:
    decoder = FrameDecoder(max_message=100)
    big = b"<85>1 - - - - - - " + b"x" * 1000
    out = decoder.feed(frame_octet_counted(big)[:300])
    assert len(out) == 1 and out[0].truncated and out[0].data == big[:100]
    out = decoder.feed(frame_octet_counted(big)[300:] + frame_octet_counted(b"small"))
    assert [(f.data, f.truncated) for f in out] == [(b"small", False)]
    endless = FrameDecoder(max_message=100)
    out = endless.feed(b"<85>" + b"y" * 500)
    assert len(out) == 1 and out[0].truncated
    assert endless.feed(b"y" * 500) == []
    assert [f.data for f in endless.feed(b"yy\n5 hello")] == [b"hello"]


def test_udp_datagram_is_the_message() -> None:
    assert syslog.datagram(b"abc") == b"abc"  # RFC 5426 3.1: one message, no framing
    assert len(syslog.datagram(b"x" * 70000)) == syslog.UDP_MAX_PAYLOAD


def test_repositories_setting() -> None:
    assert parse_repositories("udp://127.0.0.1:5514, tls://arr.example.org:6514,tls://[::1]:6514") == [
        Destination("udp", "127.0.0.1", 5514),
        Destination("tls", "arr.example.org", 6514),
        Destination("tls", "::1", 6514),
    ]
    assert parse_repositories("") == []
    assert str(Destination("tls", "::1", 6514)) == "tls://[::1]:6514"
    for bad in ("tcp://h:1", "udp://h", "udp://h:70000", "h:514"):
        with pytest.raises(ConfigError, match=r"audit\.repositories"):
            parse_repositories(bad)


def test_spool_resumes_compacts_and_repairs(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=200)
    for i in range(20):
        spool.append(b"message %d" % i)
    spool.sync()
    records, end = spool.read(max_records=5)
    assert records == [b"message %d" % i for i in range(5)]
    spool.commit(end)
    spool.close()
    again = Spool(tmp_path, segment_bytes=200)  # a restart resumes after the committed records
    got: list[bytes] = []
    while True:
        records, end = again.read(max_records=3)
        if not records:
            break
        got += records
        again.commit(end)
        again.persist()
    assert got == [b"message %d" % i for i in range(5, 20)]
    assert not again.pending()
    assert len(list(tmp_path.glob("*.seg"))) == 1  # delivered segments were deleted
    again.append(b"last")
    again.close()
    segment = max(tmp_path.glob("*.seg"))
    with open(segment, "ab") as f:
        f.write(b"\x00\x00\x00\x09torn")  # a crash in the middle of a record
    third = Spool(tmp_path, segment_bytes=200)
    assert third.read()[0] == [b"last"]
    third.append(b"after")
    assert third.read()[0] == [b"last", b"after"]
    third.close()
