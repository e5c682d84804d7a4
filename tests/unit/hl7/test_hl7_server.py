"""The MLLP listener's life cycle (hl7/server.py): bind errors, garbage, graceful stop."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import hl7
import hl7_samples
import pytest

from pergamon.hl7.dispatch import Hl7Context, Hl7Router
from pergamon.hl7.mllp import frame
from pergamon.hl7.server import Hl7Server


@pytest.fixture
def gate() -> threading.Event:
    return threading.Event()


@pytest.fixture
def started() -> threading.Event:
    return threading.Event()


@pytest.fixture
def listener(archive: Any, gate: threading.Event, started: threading.Event) -> Iterator[Hl7Server]:
    """A listener whose ADT^A01 handler sets `started`, then waits for `gate`."""

    def slow(message: hl7.Message, context: Hl7Context) -> None:
        started.set()
        assert gate.wait(60)

    router = Hl7Router()
    router.register("ADT", "A01", slow)
    server = Hl7Server(archive, router)
    server.start()
    yield server
    gate.set()
    server.stop(5)


def refuses_connections(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_a_taken_port_is_named(archive: Any, listener: Hl7Server) -> None:
    settings = dataclasses.replace(archive.settings, hl7=dataclasses.replace(archive.settings.hl7, port=listener.port))
    archive.settings = settings
    other = Hl7Server(archive, Hl7Router())
    with pytest.raises(OSError, match=f"HL7 port 127.0.0.1:{listener.port}"):
        other.start()


def test_garbage_only_connection_is_dropped_and_nothing_is_logged(listener: Hl7Server, gate: threading.Event) -> None:
    gate.set()
    with socket.create_connection(("127.0.0.1", listener.port), timeout=30) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(100) == b""
    assert listener.receiver.log.search()[0] == 0
    with socket.create_connection(("127.0.0.1", listener.port), timeout=30) as sock:
        sock.sendall(frame(hl7_samples.ADT_A01_231.encode("ascii")))
        assert b"MSA|AA|ADT0001" in sock.recv(65536)


def test_stop_lets_the_message_in_progress_finish_and_answer(
    listener: Hl7Server, gate: threading.Event, started: threading.Event
) -> None:
    port = listener.port
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(frame(hl7_samples.ADT_A01_231.encode("ascii")))
        assert started.wait(30)
        stopper = threading.Thread(target=listener.stop, args=(30,))
        stopper.start()
        deadline = time.monotonic() + 30
        while not refuses_connections(port) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert refuses_connections(port)  # no new connections while the running message finishes
        gate.set()
        answer = b""
        while not answer.endswith(b"\x1c\r"):
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
        stopper.join(30)
    assert b"MSA|AA|ADT0001" in answer
    assert not stopper.is_alive()
