"""Turning the core's domain events into DICOM PS3.15 A.5 audit messages: being written."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pergamon.archive.service import Archive


class AuditTrail:
    """Subscriber of the event bus: one audit message per audited event, handed to `sink`."""

    def __init__(self, archive: Archive, sink: Callable[[bytes], None]) -> None:
        self.archive = archive
        self.sink = sink

    def handle(self, event: Any) -> None:
        return None
