"""Blocking MLLP client for the messages Pergamon sends (PIX Query ITI-9 QBP^Q23, notifications).

Written here rather than taken from python-hl7's `MLLPClient`, which reads one `recv` of 4 kB
as the whole answer and has no TLS or timeout: a response is read up to its end block, decoded
in the character set its MSH-18 names (`hl7.charsets`), and TLS uses the context given (from
`security.tls.client_context`). The message is encoded in the character set its own MSH-18
names (ISO 8859-1 without one).
"""

from __future__ import annotations

import socket
import ssl
from types import TracebackType

import hl7

from pergamon.hl7.charsets import DEFAULT_CODEC, codec_for, decode
from pergamon.hl7.mllp import BlockDecoder, frame

MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class Hl7ClientError(Exception):
    """The peer closed the connection before answering, or answered something that is not HL7."""


class MllpClient:
    """One MLLP connection; `send` sends a message and waits for its response (ACK, RSP...)."""

    def __init__(self, host: str, port: int, *, timeout: float = 30.0, tls: ssl.SSLContext | None = None) -> None:
        self.peer = f"{host}:{port}"
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.socket: socket.socket = tls.wrap_socket(sock, server_hostname=host) if tls is not None else sock
        except BaseException:
            sock.close()
            raise
        self.socket.settimeout(timeout)
        self._decoder = BlockDecoder(MAX_RESPONSE_BYTES)

    def send(self, message: hl7.Message | str | bytes) -> hl7.Message:
        """Send one message (encoded as its MSH-18 says, or bytes as given) and return the parsed response.

        Raises:
            Hl7ClientError: no complete response before the connection closed, or not a readable message.
            TimeoutError, OSError, ssl.SSLError: from the network.
        """
        data = message if isinstance(message, bytes) else encode(str(message))
        self.socket.sendall(frame(data))
        while True:
            chunk = self.socket.recv(65536)
            if not chunk:
                raise Hl7ClientError(f"{self.peer} closed the connection without answering")
            blocks = self._decoder.feed(chunk)
            if blocks:
                block = blocks[0]
                break
        if block.incomplete or block.oversize:
            raise Hl7ClientError(f"{self.peer} sent an incomplete or oversized response")
        try:
            text, _codec = decode(block.data)
            return hl7.parse(text.strip("\r\n"))
        except Exception as exc:
            raise Hl7ClientError(f"{self.peer} answered something that is not an HL7 message: {exc}") from None

    def close(self) -> None:
        self.socket.close()

    def __enter__(self) -> MllpClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def send(
    host: str, port: int, message: hl7.Message | str | bytes, timeout: float = 30.0, tls: ssl.SSLContext | None = None
) -> hl7.Message:
    """Open a connection, send `message`, return the response (see `MllpClient.send`), close."""
    with MllpClient(host, port, timeout=timeout, tls=tls) as client:
        return client.send(message)


def encode(text: str) -> bytes:
    """A message's text in the character set its MSH-18 names (segments ended by CR).

    Raises:
        charsets.UnknownCharset: MSH-18 names a set Pergamon does not know.
        UnicodeEncodeError: the text has characters that set cannot hold.
    """
    text = text.replace("\r\n", "\r").replace("\n", "\r")
    if not text.endswith("\r"):
        text += "\r"
    header = text.split("\r", 1)[0]
    codec = DEFAULT_CODEC
    if header.startswith("MSH") and len(header) > 8:
        fields = header.split(header[3])
        if len(fields) > 17:
            codec = codec_for(fields[17], fields[1][1:2] or "~")
    return text.encode(codec)
