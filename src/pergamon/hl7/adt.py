"""ADT patient updates (RAD-12, PIR): A01/A04/A05/A08 demographics, A40 merge, A47 identifier change (to be written)."""

from __future__ import annotations

from pergamon.archive.service import Archive
from pergamon.hl7.dispatch import Hl7Router


def register(router: Hl7Router, archive: Archive) -> None:
    """Register this module's message handlers on `router`."""
