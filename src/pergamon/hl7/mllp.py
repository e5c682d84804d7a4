"""MLLP framing (HL7 v2 Minimal Lower Layer Protocol, release 1; IHE ITI TF-2 Appendix C.2.1), sans-IO.

A block is `<SB=0x0B> message <EB=0x1C><CR=0x0D>`. The decoder is written by hand rather than taken
from python-hl7's `MLLPStreamReader` because the listener needs the raw bytes (the character set
is known only after MSH-18 is read), a size limit that does not drop the connection, and a
lenient reading of what peers really send:

* bytes outside a block (a stray CR/LF, a port probe's text) are skipped and counted;
* EB ends a block even when the CR does not follow (the CR is then skipped as outside bytes);
* an SB inside a block means the sender gave up on the first one: that one is returned
  `incomplete` and a new block starts;
* a block longer than `max_bytes` is cut to `max_bytes` and returned `oversize` when its EB comes.
"""

from __future__ import annotations

from dataclasses import dataclass

SB = b"\x0b"
EB = b"\x1c"
CR = b"\x0d"


def frame(message: bytes) -> bytes:
    """Wrap one encoded message in an MLLP block."""
    return SB + message + EB + CR


@dataclass(frozen=True)
class Block:
    """One message as received: its bytes (cut to the limit) and what was odd about it."""

    data: bytes
    size: int
    oversize: bool = False
    incomplete: bool = False


class BlockDecoder:
    """Feed received bytes, get complete blocks; `pending()` is the unfinished block at EOF."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(1, max_bytes)
        self.skipped = 0  # bytes outside blocks, other than CR / LF
        self._inside = False
        self._data = bytearray()
        self._size = 0

    def feed(self, data: bytes) -> list[Block]:
        blocks: list[Block] = []
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            if not self._inside:
                start = data.find(SB, pos)
                outside = data[pos:] if start < 0 else data[pos:start]
                self.skipped += len(outside.strip(b"\r\n"))
                if start < 0:
                    break
                self._start()
                pos = start + 1
                continue
            end = data.find(EB, pos)
            restart = data.find(SB, pos)
            if restart >= 0 and (end < 0 or restart < end):
                self._append(view[pos:restart])
                blocks.append(self._finish(incomplete=True))
                self._start()
                pos = restart + 1
                continue
            if end < 0:
                self._append(view[pos:])
                break
            self._append(view[pos:end])
            blocks.append(self._finish())
            pos = end + 1
        return blocks

    def pending(self) -> Block | None:
        """The block cut off by the end of the stream, if one was started."""
        if not self._inside:
            return None
        return self._finish(incomplete=True)

    def _start(self) -> None:
        self._inside = True
        self._data = bytearray()
        self._size = 0

    def _append(self, chunk: memoryview) -> None:
        self._size += len(chunk)
        room = self.max_bytes - len(self._data)
        if room > 0:
            self._data += chunk[:room]

    def _finish(self, incomplete: bool = False) -> Block:
        self._inside = False
        block = Block(bytes(self._data), self._size, oversize=self._size > self.max_bytes, incomplete=incomplete)
        self._data = bytearray()
        return block
