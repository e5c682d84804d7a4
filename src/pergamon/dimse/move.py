"""Retrieve SCP door (C-MOVE), PS3.4 C.4.2: being written."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pynetdicom.events import Event

from pergamon.archive.service import Archive


def handle_move(event: Event, archive: Archive) -> Iterator[Any]:
    yield None, None
