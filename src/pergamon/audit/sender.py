"""Delivering audit messages to the configured repositories over syslog: being written."""

from __future__ import annotations

from pergamon.archive.service import Archive


class AuditSender:
    """Durable queue of audit messages and the syslog clients that empty it."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive

    def send(self, message: bytes) -> None:
        return None

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None
