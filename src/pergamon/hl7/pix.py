"""PIX Consumer (ITI-9 query, ITI-10 ADT^A31 update notifications) (to be written)."""

from __future__ import annotations

from pergamon.archive.service import Archive
from pergamon.hl7.dispatch import Hl7Router


def register(router: Hl7Router, archive: Archive) -> None:
    """Register this module's message handlers on `router`."""
