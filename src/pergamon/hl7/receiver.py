"""From received bytes to an ACK: log, check, decode, parse, dispatch, acknowledge (transport-free).

The MLLP listener (`hl7.server`) and the operator's replay (`web/api/hl7_messages.py`) both go
through `Hl7Receiver.receive`, which runs synchronously on a worker thread:

1. keep the raw message in the log (`hl7.message_log`), committed;
2. check what the original-mode rules of HL7 v2.5 chapter 2.9.2 ask a receiver to check, each
   failure an AR with the table 0357 code and the place: an MSH first (100), valid delimiters
   (MSH-1/2, 102), a known character set (MSH-18, 103) the bytes are valid in (102), MSH-9, -10,
   -11 and -12 present (101), a version Pergamon reads (v2.3 to v2.5.1; MSH-12, 203), well-formed
   segment identifiers (100);
3. find the handler for MSH-9 type and event (unsupported type: AR 200; event: AR 201);
4. run it: returning means its changes are committed (AA); `Hl7ApplicationError` is AE and
   `Hl7Rejected` AR, with the handler's code and location; any other exception is AE 207, logged
   with its traceback;
5. record the outcome and the ACK, then hand the ACK back to be sent.

A message cut off by the end of the connection, or longer than `hl7.max_message_bytes`, is kept
and rejected the same way (the first has no one left to answer).
"""

from __future__ import annotations

import logging
import re
import traceback
from dataclasses import dataclass

import hl7

from pergamon.archive.errors import NotFound
from pergamon.archive.origin import Origin
from pergamon.archive.service import Archive
from pergamon.hl7 import adt, orders, pix
from pergamon.hl7.ack import AckCode, Header, build_ack
from pergamon.hl7.charsets import DEFAULT_CODEC, UnknownCharset, codec_for, decode, header_fields
from pergamon.hl7.dispatch import Hl7ApplicationError, Hl7Context, Hl7Error, Hl7Rejected, Hl7Router
from pergamon.hl7.message_log import MessageLog, Outcome
from pergamon.hl7.mllp import Block

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS = frozenset({"2.3", "2.3.1", "2.4", "2.5", "2.5.1"})
"""MSH-12 values accepted; the handlers read the fields these versions share."""

_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}\Z")


def build_router(archive: Archive) -> Hl7Router:
    """The router with every handler module's messages (ADT, orders, PIX)."""
    router = Hl7Router()
    for module in (adt, orders, pix):
        module.register(router, archive)
    return router


@dataclass(frozen=True)
class Receipt:
    """The outcome of one message: its log row, ACK code and the encoded ACK to send (None: nothing)."""

    pk: int | None
    status: AckCode
    ack: bytes | None


class Hl7Receiver:
    """Runs received messages through the router and the log; thread-safe."""

    def __init__(self, archive: Archive, router: Hl7Router) -> None:
        self.archive = archive
        self.router = router
        self.log = MessageLog(archive.db)
        self.settings = archive.settings.hl7

    def receive(self, block: Block, *, peer: str, transport: str, replay_of: int | None = None) -> Receipt:
        """Process one message and return its ACK (see the module docstring)."""
        header = Header.read(header_fields(block.data))
        try:
            pk: int | None = self.log.record_received(
                block.data, block.size, transport=transport, peer=peer, header=header, replay_of=replay_of
            )
        except Exception:
            log.exception("HL7: cannot log %s %s from %s; answering AE", header.label, header.control_id, peer)
            pk = None
        detail = ""
        if pk is None:
            code, error = AckCode.AE, Hl7ApplicationError("message log unavailable; send again later", "207")
        else:
            try:
                self._process(block, header, peer, pk)
                code, error = AckCode.AA, None
            except Hl7Rejected as exc:
                code, error = AckCode.AR, exc
            except Hl7Error as exc:
                code, error = AckCode.AE, exc
            except Exception as exc:
                log.exception("HL7: handler failed on %s %s from %s", header.label, header.control_id, peer)
                code, error = AckCode.AE, Hl7ApplicationError(f"internal error: {type(exc).__name__}: {exc}", "207")
                detail = traceback.format_exc()
        ack_text = None if block.incomplete else build_ack(header, code, error, application=self.settings.application)
        if pk is not None:
            outcome = Outcome(
                status=code.value,
                error_code=error.code if error else "",
                error_text=error.text if error else "",
                detail=detail,
                ack=ack_text,
            )
            try:
                self.log.record_outcome(pk, outcome)
            except Exception:
                log.exception("HL7: cannot log the outcome (%s) of message %d", code.value, pk)
        if error is not None:
            log.info(
                "HL7 %s %s from %s: %s %s (%s)", header.label, header.control_id, peer, code.value, error, error.code
            )
        else:
            log.debug("HL7 %s %s from %s: AA", header.label, header.control_id, peer)
        return Receipt(pk, code, None if ack_text is None else _encode(ack_text, header))

    def replay(self, pk: int) -> Receipt:
        """Run a logged message through the router again; the new outcome is a new log row.

        Raises:
            NotFound: no message `pk` in the log.
        """
        row = self.log.get(pk)
        if row is None:
            raise NotFound(f"no HL7 message {pk} in the log")
        raw = bytes(row["raw"])
        block = Block(raw, int(row["size"]), oversize=int(row["size"]) > len(raw))
        return self.receive(block, peer=row["peer"], transport="replay", replay_of=pk)

    def _process(self, block: Block, header: Header, peer: str, pk: int) -> None:
        """Check, parse and dispatch; raises the `Hl7Error` that decides the ACK."""
        message = self._parse(block, header)
        trigger = header.trigger_event
        if not trigger:
            evn = [s for s in message if str(s[0]) == "EVN"]
            trigger = str(evn[0](1)).strip() if evn and len(evn[0]) > 1 else ""
        handler = self.router.lookup(header.message_type, trigger)
        if handler is None:
            known = any(t == header.message_type.upper() for t, _ in self.router.handlers)
            if known:
                raise Hl7Rejected(
                    f"unsupported event {trigger or '(none)'} for message type {header.message_type}",
                    "201",
                    "MSH",
                    1,
                    9,
                )
            raise Hl7Rejected(f"unsupported message type {header.label}", "200", "MSH", 1, 9)
        component = header.encoding_characters[0]
        origin = Origin.from_hl7(
            header.sending_application.split(component)[0],
            header.sending_facility.split(component)[0],
            header.receiving_application.split(component)[0],
            peer,
        )
        handler(message, Hl7Context(origin=origin, message_pk=pk, control_id=header.control_id, version=header.version))

    def _parse(self, block: Block, header: Header) -> hl7.Message:
        if block.incomplete:
            raise Hl7Rejected("message cut off before its end block (0x1C 0x0D)", "100")
        if block.oversize:
            limit = self.settings.max_message_bytes
            raise Hl7Rejected(f"message of {block.size} bytes is larger than hl7.max_message_bytes ({limit})", "207")
        if not header.field_separator or header_fields(block.data) is None:
            raise Hl7Rejected("the message does not start with an MSH segment", "100", "MSH")
        if not header.delimiters_valid:
            raise Hl7Rejected("MSH-1 / MSH-2: invalid field separator or encoding characters", "102", "MSH", 1, 2)
        try:
            text, _codec = decode(block.data)
        except UnknownCharset as exc:
            raise Hl7Rejected(str(exc), "103", "MSH", 1, 18) from None
        except UnicodeDecodeError as exc:
            raise Hl7Rejected(
                f"bytes not valid in the MSH-18 character set: {exc.reason}", "102", "MSH", 1, 18
            ) from None
        for position, value in ((9, header.message_type), (10, header.control_id), (11, header.processing_id)):
            if not value.strip():
                raise Hl7Rejected(f"MSH-{position} is empty", "101", "MSH", 1, position)
        if not header.version:
            raise Hl7Rejected("MSH-12 (version) is empty", "101", "MSH", 1, 12)
        if header.version not in SUPPORTED_VERSIONS:
            raise Hl7Rejected(f"HL7 version {header.version} is not supported (2.3 to 2.5.1)", "203", "MSH", 1, 12)
        segments = [s for s in text.replace("\r\n", "\r").replace("\n", "\r").split("\r") if s.strip()]
        counts: dict[str, int] = {}
        for segment in segments:
            name = segment.split(header.field_separator, 1)[0]
            counts[name] = counts.get(name, 0) + 1
            if not _SEGMENT_ID.match(name):
                raise Hl7Rejected(f"malformed segment {segment[:20]!r}", "100", name[:3], counts[name])
        try:
            return hl7.parse("\r".join(segments))
        except Exception as exc:  # python-hl7 raises ParseException, IndexError...
            raise Hl7Rejected(f"cannot parse the message: {exc}", "100") from None


def _encode(ack: str, header: Header) -> bytes:
    """The ACK in the message's character set (MSH-18 is echoed), else Latin-1."""
    try:
        codec = codec_for(header.charset, header.encoding_characters[1]) if header.delimiters_valid else DEFAULT_CODEC
    except UnknownCharset:
        codec = DEFAULT_CODEC
    return ack.encode(codec, errors="replace")
