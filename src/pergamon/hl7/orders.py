"""Orders (RAD-4/RAD-13): ORM^O01 and OMI^O23 create, change and cancel requested procedures (to be written)."""

from __future__ import annotations

from pergamon.archive.service import Archive
from pergamon.hl7.dispatch import Hl7Router


def register(router: Hl7Router, archive: Archive) -> None:
    """Register this module's message handlers on `router`."""
