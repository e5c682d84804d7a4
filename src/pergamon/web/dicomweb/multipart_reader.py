"""A streaming `multipart/related` reader: each part's body goes to its own temporary file.

STOW-RS request bodies (PS3.18 §8.6.1.2 "Multipart Payload", §10.5.1.2) are `multipart/related`
messages (RFC 2387 over RFC 2046 §5.1) whose parts may each be hundreds of megabytes, so no part,
and never the whole body, is held in memory: the boundary scanning is python-multipart's
`MultipartParser` (boundary-based, so it serves `multipart/related` as well as `form-data`), and
this module only adds what it leaves out: skipping an RFC 2046 preamble, collecting part headers,
spooling part bodies to files (in the archive's temporary folder, or straight into new blobs when
the caller reserves them), and refusing a body that ends before its closing delimiter
(python-multipart's `finalize` does not check that).

Sans-IO at its core (`MultipartReader.feed` / `finish`); `read_multipart` drives it from an ASGI
byte stream, feeding the parser on a worker thread so disk writes never block the event loop.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.concurrency import run_in_threadpool

MAX_PREAMBLE = 64 * 1024
"""Bytes of RFC 2046 preamble tolerated before the first delimiter."""

MAX_HEADER_SIZE = 16 * 1024
"""Longest single part header line (python-multipart's limit is per line)."""

FEED_SIZE = 1 << 20
"""Bytes gathered from the network before one hand-over to the parser thread."""


Reserve = Callable[[dict[str, str]], tuple[str, Path] | None]
"""Given a part's headers: a new blob's key and local path to write that part's body into (a
Part-10 instance the archive will store: no move later), or None for a temporary file."""


class MultipartError(ValueError):
    """The body is not a well-formed multipart message (no boundary, cut short, bad delimiter...)."""


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """The media type (lower case) and its parameters (names lower case, quotes removed)."""
    media, params = parse_options_header(value)
    return (
        media.decode("latin-1").strip().lower(),
        {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in params.items()},
    )


@dataclass
class Part:
    """One body part: its headers (names lower case) and the file holding its body."""

    headers: dict[str, str]
    path: Path
    size: int = 0
    blob_key: str | None = None
    """Set when the body was written straight into a new blob (see `Reserve`), `path` being that blob."""
    handed_over: bool = False
    """Set once the file went to the core, which then keeps or deletes it; the caller must not."""

    @property
    def content_type(self) -> str:
        """The full Content-Type header; RFC 2046 §5.1 default is text/plain, PS3.18 has none."""
        return self.headers.get("content-type", "")

    @property
    def media_type(self) -> str:
        return parse_content_type(self.content_type)[0] if self.content_type else ""

    @property
    def content_location(self) -> str:
        return self.headers.get("content-location", "").strip()

    @property
    def content_id(self) -> str:
        return self.headers.get("content-id", "").strip()


@dataclass
class _Current:
    headers: dict[str, str] = field(default_factory=dict)
    name: bytearray = field(default_factory=bytearray)
    value: bytearray = field(default_factory=bytearray)
    file: BinaryIO | None = None
    part: Part | None = None


MAX_BOUNDARY = 200


class MultipartReader:
    """Feed the body in chunks, then `finish()` for the parts; `discard()` removes their files.

    The caller owns the part files once `finish()` returned; on any error, call `discard()`.
    """

    def __init__(self, boundary: str, temp_dir: Path, reserve: Reserve | None = None) -> None:
        # RFC 2046 §5.1.1 allows 1 to 70 characters, but Orthanc's DICOMweb plugin 1.7 sends 73
        # (two UUIDs joined by "-"); accept up to 200 rather than refuse a common peer.
        if not boundary or len(boundary) > MAX_BOUNDARY:
            raise MultipartError(f"the multipart boundary must be 1 to {MAX_BOUNDARY} characters long")
        self.boundary = boundary.encode("latin-1")
        self.temp_dir = temp_dir
        self.reserve = reserve
        self.parts: list[Part] = []
        self._current = _Current()
        self._preamble: bytearray | None = bytearray()  # None once the first delimiter was found
        self._parser = MultipartParser(
            self.boundary,
            callbacks={
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
            },
            max_header_size=MAX_HEADER_SIZE,
        )

    # --- feeding ---------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Parse the next bytes of the body; raises MultipartError on malformed input."""
        if self._preamble is not None:
            data = self._skip_preamble(data)
            if not data:
                return
        try:
            self._parser.write(data)
        except MultipartParseError as exc:
            raise MultipartError(f"malformed multipart body: {exc}") from exc

    def finish(self) -> list[Part]:
        """The parts, once the whole body was fed; raises MultipartError if it ended early."""
        if self._preamble is not None:
            raise MultipartError(f"no multipart delimiter '--{self.boundary.decode('latin-1')}' in the body")
        if self._parser.state != MultipartState.END:
            raise MultipartError("truncated multipart body: it ends before the closing delimiter")
        if not self.parts:
            raise MultipartError("the multipart body has no parts")
        return self.parts

    def discard(self) -> None:
        """Close and delete every part file (also the one being written)."""
        if self._current.file is not None:
            self._current.file.close()
            self._current.file = None
        paths = [p.path for p in self.parts]
        if self._current.part is not None and self._current.part not in self.parts:
            paths.append(self._current.part.path)
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _skip_preamble(self, data: bytes) -> bytes:
        """Drop what precedes the first delimiter (RFC 2046 §5.1.1 preamble); python-multipart does not."""
        assert self._preamble is not None
        self._preamble += data
        buf = bytes(self._preamble)
        delimiter = b"--" + self.boundary
        start = 0 if buf.startswith(delimiter) else buf.find(b"\r\n" + delimiter)
        if start < 0:
            if len(buf) > MAX_PREAMBLE:
                raise MultipartError(f"no multipart delimiter '--{self.boundary.decode('latin-1')}' in the body")
            return b""
        self._preamble = None
        return buf[start + 2 :] if start else buf

    # --- parser callbacks ----------------------------------------------------------------------

    def _part_begin(self) -> None:
        self._current = _Current()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._current.name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._current.value += data[start:end]

    def _header_end(self) -> None:
        name = self._current.name.decode("latin-1").strip().lower()
        value = self._current.value.decode("latin-1").strip()
        if name:
            self._current.headers[name] = value
        self._current.name = bytearray()
        self._current.value = bytearray()

    def _headers_finished(self) -> None:
        headers = dict(self._current.headers)
        reserved = self.reserve(headers) if self.reserve is not None else None
        if reserved is not None:
            key, path = reserved
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            self._current.part = Part(headers, path, blob_key=key)
        else:
            fd, name = tempfile.mkstemp(prefix="stow-", suffix=".part", dir=self.temp_dir)
            self._current.part = Part(headers, Path(name))
        self._current.file = os.fdopen(fd, "wb")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        current = self._current
        if current.file is None or current.part is None:  # data without headers: impossible in a valid body
            raise MultipartParseError("part data before the end of the part headers")
        current.file.write(memoryview(data)[start:end])  # no copy of the slice
        current.part.size += end - start

    def _part_end(self) -> None:
        current = self._current
        if current.file is None or current.part is None:  # a part with no blank line after its headers
            raise MultipartParseError("a part ends inside its headers")
        current.file.close()
        current.file = None
        self.parts.append(current.part)


async def read_multipart(
    stream: AsyncIterator[bytes], boundary: str, temp_dir: Path, reserve: Reserve | None = None
) -> list[Part]:
    """Read a whole multipart body from `stream` into part files; raises MultipartError.

    Nothing is left on disk when it raises (also on a client disconnect or a cancelled task).
    """
    reader = MultipartReader(boundary, temp_dir, reserve)
    try:
        pending: list[bytes] = []
        size = 0
        async for chunk in stream:
            pending.append(chunk)
            size += len(chunk)
            if size >= FEED_SIZE:
                data, pending, size = b"".join(pending), [], 0
                await run_in_threadpool(reader.feed, data)
        if pending:
            await run_in_threadpool(reader.feed, b"".join(pending))
        return reader.finish()
    except BaseException:
        reader.discard()
        raise
