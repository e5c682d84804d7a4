"""The HL7 v2 message log: every received message, kept raw with its outcome and the ACK sent.

A message is recorded (status `received`) in its own committed transaction before its handler
runs, so what arrived is kept even if processing crashes; the outcome (AA / AE / AR, the error,
the ACK text) is written once the handler's own transaction has committed and before the ACK
leaves. A row still `received` after a crash is a message that was never acknowledged. Operators
read the log through `GET /api/hl7/messages` and replay a row (`hl7.receiver.Hl7Receiver.replay`),
which records a new row pointing at the original (`replay_of`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update

from pergamon.archive.index.database import Database
from pergamon.archive.index.schema import hl7_message
from pergamon.hl7.ack import Header

RECEIVED = "received"
STATUSES = (RECEIVED, "AA", "AE", "AR")

_SUMMARY_COLUMNS = [c for c in hl7_message.c if c.name not in ("raw", "ack", "detail")]


@dataclass(frozen=True)
class Outcome:
    """What became of a message: ACK code, the error (table 0357 code and text), the ACK sent."""

    status: str
    error_code: str = ""
    error_text: str = ""
    detail: str = ""
    ack: str | None = None


class MessageLog:
    """Reads and writes the `hl7_message` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record_received(
        self, raw: bytes, size: int, *, transport: str, peer: str, header: Header, replay_of: int | None = None
    ) -> int:
        """Keep one received message (committed before this returns); its primary key."""
        values = {
            "received_at": time.time(),
            "transport": transport,
            "peer": _cut(peer, 128),
            "replay_of": replay_of,
            "size": size,
            "raw": raw,
            "charset": _cut(header.charset, 64) or None,
            "sending_application": _cut(header.sending_application, 255) or None,
            "sending_facility": _cut(header.sending_facility, 255) or None,
            "message_type": _cut(header.message_type, 16) or None,
            "trigger_event": _cut(header.trigger_event, 16) or None,
            "control_id": _cut(header.control_id, 255) or None,
            "version": _cut(header.version, 16) or None,
            "status": RECEIVED,
        }
        with self.db.write() as conn:
            result = conn.execute(insert(hl7_message).values(**values))
            return int(result.inserted_primary_key[0])

    def record_outcome(self, pk: int, outcome: Outcome) -> None:
        """Write the outcome of a recorded message (committed before this returns)."""
        with self.db.write() as conn:
            conn.execute(
                update(hl7_message)
                .where(hl7_message.c.pk == pk)
                .values(
                    status=outcome.status,
                    error_code=outcome.error_code or None,
                    error_text=outcome.error_text or None,
                    detail=outcome.detail or None,
                    ack=outcome.ack,
                    processed_at=time.time(),
                )
            )

    def get(self, pk: int) -> dict[str, Any] | None:
        """One row with every column (raw bytes included), or None."""
        with self.db.read() as conn:
            row = conn.execute(select(hl7_message).where(hl7_message.c.pk == pk)).mappings().first()
        return dict(row) if row is not None else None

    def search(
        self,
        *,
        message_type: str = "",
        trigger_event: str = "",
        status: str = "",
        since: float | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[int, list[dict[str, Any]]]:
        """(total matching, one page newest first) of rows without raw, ack and detail."""
        conditions = []
        if message_type:
            conditions.append(hl7_message.c.message_type == message_type.upper())
        if trigger_event:
            conditions.append(hl7_message.c.trigger_event == trigger_event.upper())
        if status:
            conditions.append(hl7_message.c.status == status)
        if since is not None:
            conditions.append(hl7_message.c.received_at >= since)
        with self.db.read() as conn:
            total = conn.execute(select(func.count()).select_from(hl7_message).where(*conditions)).scalar_one()
            rows = conn.execute(
                select(*_SUMMARY_COLUMNS)
                .where(*conditions)
                .order_by(hl7_message.c.pk.desc())
                .limit(limit)
                .offset(offset)
            ).mappings()
            return int(total), [dict(row) for row in rows]


def _cut(value: str, length: int) -> str:
    return value[:length]
