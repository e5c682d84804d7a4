"""Sending C-FIND pending responses without pynetdicom's per-message work (PS3.7 9.1.2, 9.3.2.2; PS3.8 9.3.5).

pynetdicom answers each match by building a Dataset, encoding it, building a response primitive,
turning it into a DIMSE message whose command set it encodes again, and cutting that into P-DATA
primitives: most of the ~1.6 ms a study-level response cost on the 2-core test machine. Every
pending response of one request has the same command set, so `PendingResponses` encodes it once
(with pynetdicom's own message classes), writes each identifier straight from the index's DICOM
JSON (`json_dataset`), and puts both PDVs in one P-DATA-TF PDU whenever they fit the peer's
maximum PDU length (PS3.8 9.3.5 allows several PDVs per P-DATA-TF, in message order).

A PDU never holds PDVs of two messages (pynetdicom's receiver ends a message with its PDU), but the
PDUs of many responses go to the DUL together, already encoded (`fastpath.EncodedPData`): handing
the DUL thread one primitive per response, to be queued, woken for, passed through its state
machine and sent on its own, cost about as much as everything else: batched, the server's CPU
for a 3,000-study answer to findscu went from 305 to 160 ms (`benchmarks/find_answer.py --ab`,
medians of 8). A batch goes out when it holds `BATCH_BYTES`, when `BATCH_SECONDS` passed since
the last one (so a slow search still shows its first matches early), and before any response
pynetdicom sends (`flush`).

Only the pending responses go this way. The final, cancel and failure responses stay with
pynetdicom's C-FIND service, which sends them after the handler yields them; both write to the
same DUL queue from the association's thread, so the order on the wire is the order of the calls.
Presentation contexts in a transfer syntax other than Implicit or Explicit VR Little Endian (the
only two the query contexts accept today, `server.UNCOMPRESSED_TRANSFER_SYNTAXES`) would keep
pynetdicom's path: `PendingResponses.open` returns None for them.
"""

from __future__ import annotations

import struct
import time
from io import BytesIO
from typing import Any

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode as encode_dataset
from pynetdicom.events import Event

from pergamon.dimse import fastpath, json_dataset
from pergamon.dimse.status import PENDING

PDV_OVERHEAD = 6
"""Bytes of a PDV item besides its fragment: item length (4), context ID (1), control header (1)."""

_COMMAND, _LAST_COMMAND, _DATA, _LAST_DATA = 0x01, 0x03, 0x00, 0x02
"""PDV control headers (PS3.8 E.2): bit 0 command/data set, bit 1 last fragment."""

BATCH_BYTES = 32 * 1024
"""Encoded responses collected before they go to the DUL as one socket write."""

BATCH_SECONDS = 0.05
"""Longest a response waits for others to share its write, counted from the previous write."""

_P_DATA_TF = 0x04


class PendingResponses:
    """The pending (FF00) responses of one C-FIND request, sent on its presentation context."""

    def __init__(self, event: Event, *, implicit_vr: bool) -> None:
        self._assoc = event.assoc
        self._context_id = int(event.context.context_id)
        self._implicit_vr = implicit_vr
        self._max_pdv_list = int(event.assoc.requestor.maximum_length or 0)
        self._command = _pending_command(event.request)
        self._batch = bytearray()
        self._last_flush = time.monotonic()

    @classmethod
    def open(cls, event: Event) -> PendingResponses | None:
        """The sender for this request, or None when its transfer syntax is left to pynetdicom."""
        syntax = event.context.transfer_syntax
        if syntax not in (ImplicitVRLittleEndian, ExplicitVRLittleEndian) or not fastpath.installed():
            return None
        return cls(event, implicit_vr=syntax == ImplicitVRLittleEndian)

    def send(self, identifier: dict[str, Any]) -> None:
        """Add one pending response whose identifier is `identifier` (DICOM JSON, keys in tag order)."""
        encoded = json_dataset.encode(identifier, implicit_vr=self._implicit_vr)
        pdvs = [*self._fragments(self._command, _COMMAND, _LAST_COMMAND), *self._fragments(encoded, _DATA, _LAST_DATA)]
        for group in _pack(pdvs, self._max_pdv_list):
            self._batch += encode_p_data_tf(group)
        if len(self._batch) >= BATCH_BYTES or time.monotonic() - self._last_flush >= BATCH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Hand the responses added so far to the DUL, to be written before anything queued after them."""
        if self._batch:
            self._assoc.dul.send_pdu(fastpath.EncodedPData(bytes(self._batch)))
            self._batch.clear()
        self._last_flush = time.monotonic()

    def _fragments(self, data: bytes, flag: int, last_flag: int) -> list[tuple[int, bytes]]:
        size = self._max_pdv_list - PDV_OVERHEAD if self._max_pdv_list else len(data) or 1
        chunks = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
        marks = [flag] * (len(chunks) - 1) + [last_flag]
        return [(self._context_id, bytes([mark]) + chunk) for mark, chunk in zip(marks, chunks, strict=True)]


def _pending_command(request: C_FIND) -> bytes:
    """The C-FIND-RSP command set (Implicit VR Little Endian, PS3.7 6.3.1) of a pending response with an identifier."""
    primitive = C_FIND()
    primitive.MessageIDBeingRespondedTo = request.MessageID
    primitive.AffectedSOPClassUID = request.AffectedSOPClassUID
    primitive.Status = PENDING
    primitive.Identifier = BytesIO(b"\0\0")  # any non-empty data set: Command Data Set Type says one follows
    message = C_FIND_RSP()
    message.primitive_to_message(primitive)
    encoded = encode_dataset(message.command_set, True, True)
    if not encoded:
        raise ValueError("the C-FIND-RSP command set could not be encoded")
    return encoded


def _pack(pdvs: list[tuple[int, bytes]], max_pdv_list: int) -> list[list[tuple[int, bytes]]]:
    """Group PDVs, in order, into PDV lists that stay within the peer's maximum length (0: none)."""
    groups: list[list[tuple[int, bytes]]] = []
    current: list[tuple[int, bytes]] = []
    used = 0
    for pdv in pdvs:
        size = len(pdv[1]) + PDV_OVERHEAD - 1  # the control header is already part of pdv[1]
        if current and max_pdv_list and used + size > max_pdv_list:
            groups.append(current)
            current, used = [], 0
        current.append(pdv)
        used += size
    if current:
        groups.append(current)
    return groups


def encode_p_data_tf(pdvs: list[tuple[int, bytes]]) -> bytes:
    """One P-DATA-TF PDU (PS3.8 9.3.5) holding `pdvs`: (context ID, control header + fragment) each."""
    items = b"".join(struct.pack(">IB", len(data) + 1, context_id) + data for context_id, data in pdvs)
    return struct.pack(">BBI", _P_DATA_TF, 0, len(items)) + items
