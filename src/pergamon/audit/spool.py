"""The durable queue of audit messages for one repository: an append-only spool with a read offset.

ITI TF-2 3.20.4.1.1: when the Audit Record Repository cannot be reached, the sender stores the
messages locally and sends them when able. Each repository has a folder of segment files
``<seq>.seg`` holding records ``LEN(4, big-endian) CRC32(4) SYSLOG-MSG``, and a file ``offset``
naming the first record not yet delivered (``<seq> <byte offset>``, replaced atomically).

Durability: `append` writes the record to the operating system at once (a crash of Pergamon
loses nothing) and `sync` - called by the sender every 50 ms - fsyncs the segments written since
the last call, so a power loss or kernel crash can lose at most the messages of the last ~50 ms;
one fsync per message would add its latency to every C-STORE. Segments fully delivered are
deleted (compaction); a torn record at the end of the last segment (crash mid-write) is cut
off when the spool is opened.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
import zlib
from pathlib import Path

log = logging.getLogger(__name__)

RECORD_HEADER = struct.Struct(">II")
SEGMENT_BYTES = 4 * 1024 * 1024
"""A segment receives no more records once it is this large; a new one starts."""


class SpoolBusy(Exception):
    """Another process (a `pergamon import` next to `pergamon serve`) holds this spool."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Append-only segments plus a persisted delivery position; appends from any thread.

    One reader (the repository's delivery thread) calls `read`, then `commit` with the position
    after what it delivered; `persist` writes that position to disk. A spool belongs to one
    process at a time (an exclusive ``flock`` on its ``lock`` file); opening a spool that another
    process holds raises `SpoolBusy`.
    """

    def __init__(self, folder: Path, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.folder = folder
        self.segment_bytes = segment_bytes
        folder.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SpoolBusy(str(folder)) from None
        self._lock = threading.Lock()
        self._dirty = False
        self._persisted: tuple[int, int] | None = None
        segments = self._segments()
        self.position = self._load_offset(segments)
        if not segments or segments[-1] < self.position[0]:
            segments.append(self.position[0])
        self._write_seq = segments[-1]
        self._write_fd = os.open(self._path(self._write_seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._write_size = self._repair_tail(self._write_seq)
        for seq in segments:  # segments before the position were delivered but not yet deleted
            if seq < self.position[0]:
                self._path(seq).unlink(missing_ok=True)
        self._persisted = self.position

    # -- paths and recovery --------------------------------------------------------------------

    def _path(self, seq: int) -> Path:
        return self.folder / f"{seq:012d}.seg"

    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.folder.glob("*.seg") if p.stem.isdigit())

    def _load_offset(self, segments: list[int]) -> tuple[int, int]:
        try:
            seq_text, offset_text = (self.folder / "offset").read_text().split()
            seq, offset = int(seq_text), int(offset_text)
        except (OSError, ValueError):
            return (segments[0], 0) if segments else (1, 0)
        if segments and seq < segments[0]:  # its segment was compacted away: start at the oldest left
            return segments[0], 0
        return seq, offset

    def _repair_tail(self, seq: int) -> int:
        """Cut a torn record at the end of the segment being written; its valid size."""
        path = self._path(seq)
        data = path.read_bytes()
        good = 0
        while True:
            record = _record_at(data, good)
            if record is None:
                break
            good += RECORD_HEADER.size + len(record)
        if good < len(data):
            log.warning("audit spool %s: dropping a torn record at byte %d (crash while writing)", path, good)
            os.truncate(path, good)
        if self.position[0] == seq and self.position[1] > good:  # offset ahead of data lost in a crash
            self.position = (seq, good)
        return good

    # -- writer --------------------------------------------------------------------------------

    def append(self, message: bytes) -> None:
        """Add one message; it is in the OS at return and on disk after the next `sync`."""
        record = RECORD_HEADER.pack(len(message), zlib.crc32(message)) + message
        with self._lock:
            if self._write_size >= self.segment_bytes:
                self._rotate()
            os.write(self._write_fd, record)
            self._write_size += len(record)
            self._dirty = True

    def _rotate(self) -> None:
        os.fsync(self._write_fd)
        os.close(self._write_fd)
        self._write_seq += 1
        self._write_fd = os.open(self._path(self._write_seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._write_size = 0
        _fsync_dir(self.folder)

    def sync(self) -> None:
        """fsync what was appended since the last call (the sender's 50 ms batch)."""
        with self._lock:
            if not self._dirty:
                return
            self._dirty = False
            fd = self._write_fd
            os.fsync(fd)

    # -- reader --------------------------------------------------------------------------------

    def read(self, max_records: int = 256, max_bytes: int = 1024 * 1024) -> tuple[list[bytes], tuple[int, int]]:
        """Records from the current position on, and the position after them (not yet committed)."""
        seq, offset = self.position
        while True:
            records, end = self._read_segment(seq, offset, max_records, max_bytes)
            if records:
                return records, (seq, end)
            with self._lock:
                write_seq = self._write_seq
            if seq >= write_seq:
                return [], (seq, offset)
            # the writer moved to a newer segment, so this one is complete: read what is left, then move on
            records, end = self._read_segment(seq, offset, max_records, max_bytes)
            if records:
                return records, (seq, end)
            seq, offset = seq + 1, 0
            self.position = (seq, 0)

    def _read_segment(self, seq: int, offset: int, max_records: int, max_bytes: int) -> tuple[list[bytes], int]:
        try:
            with open(self._path(seq), "rb") as f:
                f.seek(offset)
                data = f.read(max_bytes + RECORD_HEADER.size + 65536)
        except FileNotFoundError:
            return [], offset
        records: list[bytes] = []
        pos = 0
        size = 0
        while len(records) < max_records and size < max_bytes:
            record = _record_at(data, pos)
            if record is None:
                if pos == 0 and len(data) >= RECORD_HEADER.size:  # a record larger than the read: read it whole
                    length = RECORD_HEADER.unpack_from(data)[0]
                    if len(data) < RECORD_HEADER.size + length:
                        with open(self._path(seq), "rb") as f:
                            f.seek(offset)
                            data = f.read(RECORD_HEADER.size + length)
                        record = _record_at(data, 0)
                if record is None:
                    break
            records.append(record)
            pos += RECORD_HEADER.size + len(record)
            size += len(record)
        return records, offset + pos

    def commit(self, position: tuple[int, int]) -> None:
        """Records before `position` were delivered."""
        self.position = position

    def persist(self) -> None:
        """Write the delivery position to disk (atomic replace) and delete delivered segments."""
        position = self.position
        if position == self._persisted:
            return
        tmp = self.folder / "offset.tmp"
        with open(tmp, "w") as f:
            f.write(f"{position[0]} {position[1]}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.folder / "offset")
        old = self._persisted
        self._persisted = position
        if old is not None and position[0] > old[0]:
            _fsync_dir(self.folder)
            for seq in range(old[0], position[0]):
                self._path(seq).unlink(missing_ok=True)

    def pending(self) -> bool:
        """Whether records wait for delivery."""
        with self._lock:
            write = (self._write_seq, self._write_size)
        return self.position < write

    def close(self) -> None:
        """fsync, persist the position and close."""
        with self._lock:
            os.fsync(self._write_fd)
            os.close(self._write_fd)
            self._write_fd = -1
        self.persist()
        os.close(self._lock_fd)  # releases the flock


def _record_at(data: bytes, pos: int) -> bytes | None:
    """The complete, intact record at `pos`, or None (incomplete or corrupt)."""
    if len(data) - pos < RECORD_HEADER.size:
        return None
    length, crc = RECORD_HEADER.unpack_from(data, pos)
    start = pos + RECORD_HEADER.size
    if len(data) - start < length:
        return None
    payload = data[start : start + length]
    if zlib.crc32(payload) != crc:
        return None
    return payload
