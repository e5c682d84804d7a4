"""Retrieve SCP door (C-GET), PS3.4 C.4.3: being written."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pynetdicom.events import Event

from pergamon.archive.service import Archive
from pergamon.dimse.status import RETRIEVE_UNABLE_TO_PROCESS


def handle_get(event: Event, archive: Archive) -> Iterator[Any]:
    yield 0
    yield RETRIEVE_UNABLE_TO_PROCESS, None
