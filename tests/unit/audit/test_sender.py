"""The audit sender over UDP to a local socket (RFC 5426): spool, delivery, restart, a second process."""

from __future__ import annotations

import dataclasses
import socket
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pergamon.audit.sender import AuditSender
from pergamon.audit.syslog import parse_message
from pergamon.config import Settings


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        yield sock


def sender(data_dir: Path, port: int) -> AuditSender:
    base = Settings()
    settings = dataclasses.replace(
        base,
        server=dataclasses.replace(base.server, data_dir=data_dir),
        audit=dataclasses.replace(base.audit, repositories=f"udp://127.0.0.1:{port}"),
    )
    archive: Any = types.SimpleNamespace(settings=settings)
    return AuditSender(archive, retry_delay=0.05, retry_max_delay=0.1)


def receive(sock: socket.socket, count: int) -> list[bytes]:
    return [parse_message(sock.recv(65535)).msg for _ in range(count)]


def test_udp_delivery_one_message_per_datagram(tmp_path: Path, receiver: socket.socket) -> None:
    audit = sender(tmp_path, receiver.getsockname()[1])
    audit.send(b"<AuditMessage>before start</AuditMessage>")  # waits in the spool
    audit.start()
    audit.send(b"<AuditMessage>1</AuditMessage>")
    assert receive(receiver, 2) == [b"<AuditMessage>before start</AuditMessage>", b"<AuditMessage>1</AuditMessage>"]
    audit.stop()
    assert audit.pending() == 0
    assert (tmp_path / "audit-spool" / f"udp_127.0.0.1_{receiver.getsockname()[1]}" / "offset").exists()


def test_a_second_process_spools_aside_and_a_later_sender_adopts_it(tmp_path: Path, receiver: socket.socket) -> None:
    port = receiver.getsockname()[1]
    serve = sender(tmp_path, port)
    serve.start()
    importer = sender(tmp_path, port)  # e.g. `pergamon import` while `pergamon serve` runs
    importer.send(b"<AuditMessage>from the importer</AuditMessage>")
    importer.stop()  # never started: its message stays in its own spool
    assert (tmp_path / "audit-spool" / f"udp_127.0.0.1_{port}.1").is_dir()
    serve.stop()
    later = sender(tmp_path, port)
    later.start()
    assert receive(receiver, 1) == [b"<AuditMessage>from the importer</AuditMessage>"]
    later.stop()
