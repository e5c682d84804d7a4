"""Pergamon's Audit Record Repository (syslog receivers, storage, search): being written."""

from __future__ import annotations

from pergamon.archive.service import Archive


class AuditRepository:
    """Syslog listeners (UDP, TLS) that store every received audit message."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None
