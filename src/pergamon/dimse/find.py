"""Query SCP door (C-FIND), PS3.4 C.4.1: being written; answers 'unable to process' until then."""

from __future__ import annotations

from collections.abc import Iterator

from pydicom import Dataset
from pynetdicom.events import Event

from pergamon.archive.service import Archive
from pergamon.dimse.status import FIND_UNABLE_TO_PROCESS


def handle_find(event: Event, archive: Archive) -> Iterator[tuple[int, Dataset | None]]:
    yield FIND_UNABLE_TO_PROCESS, None
