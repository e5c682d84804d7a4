"""Syslog for ATNA, sans-IO: RFC 5424 messages, RFC 5425 octet-counting frames, RFC 5426 datagrams.

Record Audit Event [ITI-20] (ITI TF-2 3.20.4.1.2) carries each DICOM PS3.15 A.5 audit message as
the MSG of one RFC 5424 syslog message:

* PRI: facility 10 (security/authorization, ``authpriv``), severity 5 (notice) for normal
  messages, 4 (warning) allowed -> ``<85>`` / ``<84>``;
* HEADER: VERSION 1, an RFC 3339 TIMESTAMP with time zone, HOSTNAME, APP-NAME, PROCID and the
  literal MSGID ``IHE+RFC-3881``;
* STRUCTURED-DATA is not used: the NILVALUE ``-``;
* MSG: the audit XML in UTF-8. RFC 5424 6.4 wants a BOM before UTF-8 text; ITI TF-2 3.20.4.1.2
  discourages it (but repositories must accept it), so `format_message` writes none unless asked.

Over TLS (RFC 5425 4.3) every message is framed as ``MSG-LEN SP SYSLOG-MSG``
(`frame_octet_counted`); over UDP (RFC 5426 3.1) each datagram carries exactly one message,
unframed (`datagram`). The receiving side, written for Pergamon's Audit Record Repository, is
tolerant (ITI TF-2 3.20.4.1.3: accept any syslog message, keep 8-bit content unchanged):
`parse_frames` splits a TCP byte stream (octet counting, or RFC 6587 LF-terminated frames from
senders that do not count), `FrameDecoder` adds a size limit for endless streams, and
`parse_message` never raises: what it cannot parse is listed in `SyslogMessage.problems`, and the
unparsed rest is kept as the MSG.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import re
import socket
from dataclasses import dataclass, field

FACILITY_AUTHPRIV = 10
"""security/authorization messages (RFC 5424 Table 1), required by ITI TF-2 3.20.4.1.2."""
SEVERITY_NOTICE = 5
SEVERITY_WARNING = 4
MSGID_IHE = "IHE+RFC-3881"
"""The MSGID of ITI-20 audit messages (ITI TF-2 3.20.4.1.2), whatever the XML schema used."""
BOM = b"\xef\xbb\xbf"
NILVALUE = "-"
MAX_LEN_DIGITS = 10
"""Most digits accepted in an RFC 5425 MSG-LEN (~10 GB): longer is garbage, not a length."""
UDP_MAX_PAYLOAD = 65507
"""Largest IPv4 UDP payload (RFC 5426 3.2 leaves truncation of longer messages to the sender)."""

_FIELD_LIMITS = {"HOSTNAME": 255, "APP-NAME": 48, "PROCID": 128, "MSGID": 32}
_TIMESTAMP = re.compile(rb"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$")


class SyslogError(ValueError):
    """A value that cannot go into an RFC 5424 message (a header field out of range)."""


@dataclass(frozen=True)
class SyslogMessage:
    """One received or built syslog message (RFC 5424 6), fields as text, MSG as the exact bytes.

    `problems` lists every deviation from the RFC 5424 ABNF found while parsing (empty for a
    conforming message); a field that could not be read is None, and whatever follows the last
    field that could be read is kept in `msg`, so nothing received is lost.
    """

    raw: bytes
    msg: bytes
    pri: int | None = None
    version: int | None = None
    timestamp: str | None = None
    hostname: str | None = None
    app_name: str | None = None
    procid: str | None = None
    msgid: str | None = None
    structured_data: str | None = None
    bom: bool = False
    problems: tuple[str, ...] = field(default=())

    @property
    def facility(self) -> int | None:
        return None if self.pri is None else self.pri >> 3

    @property
    def severity(self) -> int | None:
        return None if self.pri is None else self.pri & 7

    @property
    def valid(self) -> bool:
        """True when the message follows the RFC 5424 ABNF."""
        return not self.problems

    @property
    def is_ihe_audit(self) -> bool:
        """An ITI-20 message: MSGID ``IHE+RFC-3881`` (ITI TF-2 3.20.4.1.2)."""
        return self.msgid == MSGID_IHE

    def datetime(self) -> dt.datetime | None:
        """The TIMESTAMP as an aware datetime, or None (NILVALUE or unparsable)."""
        if not self.timestamp or self.timestamp == NILVALUE:
            return None
        try:
            return dt.datetime.fromisoformat(self.timestamp.replace("Z", "+00:00"))
        except ValueError:
            return None


def rfc3339(moment: dt.datetime | None = None) -> str:
    """RFC 3339 TIMESTAMP (RFC 5424 6.2.3) with microseconds and the local UTC offset."""
    moment = (moment or dt.datetime.now(dt.UTC)).astimezone()
    text = moment.isoformat(timespec="microseconds")
    return text[:-6] + "Z" if text.endswith("+00:00") else text


@functools.cache
def default_hostname() -> str:
    """HOSTNAME (RFC 5424 6.2.4): the FQDN if known, else the host name (looked up once)."""
    name = socket.gethostname()
    fqdn = socket.getfqdn(name)
    if "." in fqdn and not fqdn.startswith("localhost"):
        name = fqdn
    return _header_field("HOSTNAME", name or NILVALUE, truncate=True)


def _header_field(name: str, value: str, *, truncate: bool = False) -> str:
    """A HEADER field: NILVALUE or 1*n PRINTUSASCII (RFC 5424 6, ABNF)."""
    limit = _FIELD_LIMITS[name]
    if not value:
        return NILVALUE
    if truncate:
        value = "".join(c if 33 <= ord(c) <= 126 else "_" for c in value)[:limit]
    if len(value) > limit or any(not 33 <= ord(c) <= 126 for c in value):
        raise SyslogError(f"{name} must be 1 to {limit} printable US-ASCII characters, not {value!r}")
    return value


def format_message(
    msg: bytes,
    *,
    severity: int = SEVERITY_NOTICE,
    facility: int = FACILITY_AUTHPRIV,
    timestamp: dt.datetime | str | None = None,
    hostname: str | None = None,
    app_name: str = "pergamon",
    procid: str | None = None,
    msgid: str = MSGID_IHE,
    bom: bool = False,
) -> bytes:
    """The RFC 5424 SYSLOG-MSG carrying `msg` (the audit XML, UTF-8) as ITI TF-2 3.20.4.1.2 wants.

    ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG``; the defaults give ``<85>``,
    now with the local offset, this host's FQDN, ``pergamon``, this process id and
    ``IHE+RFC-3881``. `bom` prefixes the MSG with the UTF-8 BOM of RFC 5424 6.4.
    """
    if not 0 <= facility <= 23 or not 0 <= severity <= 7:
        raise SyslogError(f"facility {facility} / severity {severity} out of range (RFC 5424 6.2.1)")
    if isinstance(timestamp, str):
        if timestamp != NILVALUE and not _TIMESTAMP.match(timestamp.encode("ascii", "replace")):
            raise SyslogError(f"TIMESTAMP {timestamp!r} is not RFC 3339 (RFC 5424 6.2.3)")
        stamp = timestamp
    else:
        stamp = rfc3339(timestamp)
    header = " ".join(
        (
            f"<{facility * 8 + severity}>1",
            stamp,
            default_hostname() if hostname is None else _header_field("HOSTNAME", hostname),
            _header_field("APP-NAME", app_name),
            _header_field("PROCID", str(os.getpid()) if procid is None else procid),
            _header_field("MSGID", msgid),
            NILVALUE,
        )
    )
    return header.encode("ascii") + b" " + (BOM if bom else b"") + msg


def frame_octet_counted(message: bytes) -> bytes:
    """RFC 5425 4.3 octet-counting frame: ``MSG-LEN SP SYSLOG-MSG``."""
    return b"%d %s" % (len(message), message)


def datagram(message: bytes, limit: int = UDP_MAX_PAYLOAD) -> bytes:
    """RFC 5426 3.1 payload: the message alone, cut to `limit` bytes (ITI TF-2 3.20.4.1.2.1.2
    lets the repository repair truncated audit XML)."""
    return message[:limit]


def parse_frames(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Split a TLS/TCP syslog stream into messages; returns (complete messages, unconsumed rest).

    A frame starting with a digit is RFC 5425 octet counting (``MSG-LEN SP SYSLOG-MSG``); a
    frame starting otherwise (``<`` from RFC 6587 3.4.2 non-transparent senders, or garbage) runs
    to the next LF, which is dropped. An invalid MSG-LEN (leading zero, too many digits, no SP)
    is treated as the start of an LF-terminated frame, so the stream always makes progress and
    bad input comes out as a message that `parse_message` flags. Keep `rest` and prepend it to
    the next bytes received.
    """
    messages: list[bytes] = []
    view = memoryview(buffer)
    pos = 0
    end = len(buffer)
    while pos < end:
        first = buffer[pos]
        if 0x31 <= first <= 0x39:  # NONZERO-DIGIT: octet counting
            digits = pos
            while digits < end and digits - pos <= MAX_LEN_DIGITS and 0x30 <= buffer[digits] <= 0x39:
                digits += 1
            if digits == end and digits - pos <= MAX_LEN_DIGITS:
                break  # the MSG-LEN is not complete yet
            if digits - pos <= MAX_LEN_DIGITS and buffer[digits] == 0x20:
                length = int(buffer[pos:digits])
                start = digits + 1
                if end - start < length:
                    break
                messages.append(bytes(view[start : start + length]))
                pos = start + length
                continue
        elif first in (0x0A, 0x0D, 0x20, 0x00):  # stray separators between frames
            pos += 1
            continue
        newline = buffer.find(b"\n", pos)
        if newline < 0:
            break
        messages.append(bytes(view[pos:newline]).rstrip(b"\r"))
        pos = newline + 1
    return messages, bytes(view[pos:])


@dataclass
class Frame:
    """One message taken from a stream by `FrameDecoder`; `truncated` when it exceeded the limit."""

    data: bytes
    truncated: bool = False


class FrameDecoder:
    """Stateful `parse_frames` for one connection, bounded in memory by `max_message`.

    A message longer than `max_message` (declared by its MSG-LEN, or an LF-terminated frame
    whose LF does not come) is returned cut to `max_message` bytes and flagged `truncated`;
    the rest of it is skipped as it arrives, so an oversize or endless sender cannot exhaust
    memory, and the stream resynchronises on the next frame.
    """

    def __init__(self, max_message: int = 65536) -> None:
        self.max_message = max_message
        self._buffer = b""
        self._skip = 0  # octets of an oversize octet-counted message still to drop
        self._skip_line = False  # dropping the rest of an oversize LF-terminated frame

    def feed(self, data: bytes) -> list[Frame]:
        """The messages completed by `data` (may be empty)."""
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
        if self._skip_line:
            newline = data.find(b"\n")
            if newline < 0:
                return []
            self._skip_line = False
            data = data[newline + 1 :]
        self._buffer += data
        frames: list[Frame] = []
        while True:
            messages, rest = parse_frames(self._buffer)
            frames.extend(Frame(m, len(m) > self.max_message) for m in messages)
            for frame in frames:
                if frame.truncated:
                    frame.data = frame.data[: self.max_message]
            self._buffer = rest
            if len(rest) <= self.max_message + MAX_LEN_DIGITS + 1:
                return frames
            match = re.match(rb"([1-9]\d{0,9}) ", rest)
            if match:  # an oversize octet-counted message: keep the head, skip the tail
                start = match.end()
                length = int(match.group(1))
                frames.append(Frame(rest[start : start + self.max_message], truncated=True))
                consumed = min(len(rest), start + length)
                self._skip = start + length - consumed
                self._buffer = rest[consumed:]
                if self._skip:
                    return frames
            else:  # an LF-terminated frame with no LF in sight
                frames.append(Frame(rest[: self.max_message], truncated=True))
                self._buffer = b""
                self._skip_line = True
                return frames

    @property
    def pending(self) -> bytes:
        """Bytes of an incomplete message (e.g. to keep as a flagged record when the peer hangs up)."""
        return self._buffer


def _token(data: bytes, pos: int) -> tuple[bytes, int]:
    """The bytes up to the next SP (or the end) and the position after that SP."""
    space = data.find(b" ", pos)
    if space < 0:
        return data[pos:], len(data)
    return data[pos:space], space + 1


def _structured_data(data: bytes, pos: int) -> int | None:
    """End of the STRUCTURED-DATA elements starting at `pos` (RFC 5424 6.3), None if malformed."""
    end = len(data)
    while pos < end and data[pos] == 0x5B:  # "["
        pos += 1
        in_value = False
        while pos < end:
            byte = data[pos]
            if in_value and byte == 0x5C:  # backslash escapes '"', '\' and ']' (RFC 5424 6.3.3)
                pos += 2
                continue
            if byte == 0x22:
                in_value = not in_value
            elif byte == 0x5D and not in_value:
                break
            pos += 1
        if pos >= end:
            return None
        pos += 1
    return pos


def parse_message(data: bytes) -> SyslogMessage:
    """Parse one SYSLOG-MSG (RFC 5424 6), tolerating what real senders get wrong; never raises.

    Accepted with a note in `problems`: a BOM before the PRI, a missing PRI or header (the whole
    input is then the MSG: raw XML sent without syslog header), RFC 3164 style messages,
    header fields that are too long or not printable US-ASCII, a missing STRUCTURED-DATA (the
    MSG follows the MSGID directly), and a MSG that is not UTF-8. The MSG is returned byte for
    byte, without its BOM (`bom` says whether there was one).
    """
    problems: list[str] = []
    pos = 0
    if data.startswith(BOM):
        problems.append("BOM before PRI")
        pos = len(BOM)
    match = re.compile(rb"<(\d{1,3})>").match(data, pos)
    if not match or int(match.group(1)) > 191:
        problems.append("no PRI: not a syslog message")
        return _finish(data, data[pos:], problems)
    pri = int(match.group(1))
    pos = match.end()
    version_match = re.compile(rb"([1-9]\d{0,2}) ").match(data, pos)
    if not version_match:
        problems.append("no VERSION: not RFC 5424 (RFC 3164 style?)")
        return _finish(data, data[pos:], problems, pri=pri)
    version = int(version_match.group(1))
    if version != 1:
        problems.append(f"VERSION {version} is not 1")
    pos = version_match.end()
    fields: dict[str, str | None] = {}
    for name in ("TIMESTAMP", "HOSTNAME", "APP-NAME", "PROCID", "MSGID"):
        if pos >= len(data) or data[pos] == 0x3C:  # "<": the MSG started early
            problems.append(f"{name} missing")
            fields[name] = None
            continue
        token, pos = _token(data, pos)
        text = token.decode("ascii", "replace")
        fields[name] = text
        if not token:
            problems.append(f"{name} empty")
        elif name == "TIMESTAMP":
            if token != b"-" and not _TIMESTAMP.match(token):
                problems.append(f"TIMESTAMP {text!r} is not RFC 3339")
        elif len(token) > _FIELD_LIMITS[name] or any(not 33 <= b <= 126 for b in token):
            problems.append(f"{name} is not 1*{_FIELD_LIMITS[name]} PRINTUSASCII")
    structured: str | None = None
    if data.startswith(b"- ", pos) or data[pos:] == b"-":
        structured = NILVALUE
        pos += 2
    elif pos < len(data) and data[pos] == 0x5B:
        sd_end = _structured_data(data, pos)
        if sd_end is None:
            problems.append("STRUCTURED-DATA not closed")
        else:
            structured = data[pos:sd_end].decode("utf-8", "replace")
            pos = sd_end
            if pos < len(data):
                if data[pos] == 0x20:
                    pos += 1
                else:
                    problems.append("no SP after STRUCTURED-DATA")
    elif pos < len(data):
        problems.append("STRUCTURED-DATA missing")
    else:
        problems.append("message ends before STRUCTURED-DATA")
    return _finish(
        data,
        data[pos:],
        problems,
        pri=pri,
        version=version,
        timestamp=fields["TIMESTAMP"],
        hostname=fields["HOSTNAME"],
        app_name=fields["APP-NAME"],
        procid=fields["PROCID"],
        msgid=fields["MSGID"],
        structured_data=structured,
    )


def _finish(raw: bytes, msg: bytes, problems: list[str], **header: object) -> SyslogMessage:
    bom = msg.startswith(BOM)
    if bom:
        msg = msg[len(BOM) :]
    try:
        msg.decode("utf-8")
    except UnicodeDecodeError:
        problems.append("MSG is not UTF-8")
    return SyslogMessage(raw=raw, msg=msg, bom=bom, problems=tuple(problems), **header)  # type: ignore[arg-type]
