"""Routing of received HL7 v2 messages to their handlers, and the errors a handler raises.

The MLLP listener parses a message, looks up the handler registered for its MSH-9 message type
and trigger event, and turns the outcome into an original-mode ACK: AA when the handler returns,
AE for `Hl7ApplicationError` (the message was understood but could not be applied), AR for
`Hl7Rejected` (bad message, unsupported type or event). Each error names the segment and field
that was wrong so the ERR segment can say it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import hl7

from pergamon.archive.origin import Origin


@dataclass
class Hl7Error(Exception):
    """A message that could not be applied; `code` is an HL7 table 0357 error code."""

    text: str
    code: str = "207"  # application internal error
    segment: str = ""  # e.g. "PID"
    sequence: int = 1  # which repetition of the segment (1-based)
    position: int = 0  # field number within the segment, 0 when not about one field

    def __str__(self) -> str:
        return self.text


class Hl7ApplicationError(Hl7Error):
    """Understood but not applied (unknown patient, order in a wrong state...): ACK code AE."""


class Hl7Rejected(Hl7Error):
    """Not accepted at all (malformed, unsupported message type or event): ACK code AR."""


@dataclass(frozen=True)
class Hl7Context:
    """What a handler knows besides the message: who sent it, and the message log row."""

    origin: Origin
    message_pk: int | None = None
    control_id: str = ""
    version: str = ""


Handler = Callable[[hl7.Message, Hl7Context], None]


@dataclass
class Hl7Router:
    """Handlers by (message type, trigger event); trigger `*` matches any event of the type."""

    handlers: dict[tuple[str, str], Handler] = field(default_factory=dict)

    def register(self, message_type: str, trigger: str, handler: Handler) -> None:
        self.handlers[(message_type.upper(), trigger.upper())] = handler

    def lookup(self, message_type: str, trigger: str) -> Handler | None:
        key = (message_type.upper(), trigger.upper())
        return self.handlers.get(key) or self.handlers.get((key[0], "*"))
