"""A streaming writer of `multipart/related` messages (RFC 2387), as DICOMweb responses use them.

PS3.18 8.6.1.2 (multipart/related media type) and 8.7 (media types): a WADO-RS response is a
`multipart/related; type="..."; boundary=...` body whose parts each carry a `Content-Type`
(e.g. `application/dicom; transfer-syntax=1.2.840.10008.1.2.1`). This module only writes such
bodies, part by part, without holding a whole part in memory; STOW-RS has its own parser.

The body layout is RFC 2046 5.1.1: each part is `--boundary CRLF headers CRLF CRLF body CRLF`,
and the message ends with `--boundary-- CRLF`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field

from starlette.concurrency import iterate_in_threadpool

Body = bytes | Iterable[bytes] | AsyncIterable[bytes]
"""A part's body: bytes, or chunks produced on demand (sync iterables run in the thread pool)."""


@dataclass
class Part:
    """One body part: its MIME headers (Content-Type first) and its content."""

    content_type: str
    body: Body
    headers: dict[str, str] = field(default_factory=dict)
    label: str = ""
    """What the part carries (e.g. a SOP Instance UID), reported by `write` once the part is out."""

    def head(self) -> bytes:
        """The part's header block, ending with the empty line that precedes the body."""
        lines = [f"Content-Type: {self.content_type}"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def new_boundary() -> str:
    """A boundary that cannot occur in the content by chance (RFC 2046 5.1.1: at most 70 characters)."""
    return f"pergamon-{uuid.uuid4().hex}"


def content_type(part_type: str, boundary: str, **parameters: str) -> str:
    """The response's `Content-Type`: `multipart/related; type="..."; boundary=...` (RFC 2387 3.1).

    Extra parameters (e.g. `transfer_syntax="1.2.840.10008.1.2.1"`) are added with `_` written `-`.
    """
    extra = "".join(f"; {name.replace('_', '-')}={value}" for name, value in parameters.items())
    return f'multipart/related; type="{part_type}"{extra}; boundary={boundary}'


async def _chunks(body: Body) -> AsyncIterator[bytes]:
    if isinstance(body, (bytes, bytearray, memoryview)):
        if body:
            yield bytes(body)
        return
    if isinstance(body, AsyncIterable):
        async for chunk in body:
            if chunk:
                yield chunk
        return
    async for chunk in iterate_in_threadpool(iter(body)):
        if chunk:
            yield chunk


async def write(
    parts: Iterable[Part] | AsyncIterable[Part], boundary: str, *, sent: list[str] | None = None
) -> AsyncIterator[bytes]:
    """The multipart body of `parts`, chunk by chunk.

    A synchronous `parts` iterable is advanced in the thread pool (it may read files or
    transcode), so blocking work never runs on the event loop. The label of each part whose body
    was wholly produced is appended to `sent`. An empty message is a closing delimiter alone.
    """
    delimiter = f"--{boundary}\r\n".encode("ascii")
    source: AsyncIterator[Part] = (
        parts.__aiter__() if isinstance(parts, AsyncIterable) else iterate_in_threadpool(iter(parts))
    )
    async for part in source:
        yield delimiter + part.head()
        async for chunk in _chunks(part.body):
            yield chunk
        yield b"\r\n"
        if sent is not None and part.label:
            sent.append(part.label)
    yield f"--{boundary}--\r\n".encode("ascii")


def file_chunks(path: str, *, start: int = 0, length: int | None = None, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """Bytes of a file (or of `length` bytes from `start`) in chunks: a body for `Part`, read lazily."""
    remaining = length
    with open(path, "rb") as f:
        f.seek(start)
        while remaining is None or remaining > 0:
            size = chunk_size if remaining is None else min(chunk_size, remaining)
            chunk = f.read(size)
            if not chunk:
                return
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk
