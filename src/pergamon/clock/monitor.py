"""Consistent Time (IHE CT) Time Client: checking the clock against NTP servers: being written."""

from __future__ import annotations

from pergamon.archive.service import Archive


class ClockMonitor:
    """Periodic SNTP checks of the local clock's offset."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.offset: float | None = None

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None
