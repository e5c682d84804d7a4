"""Bulk data for WIC tests: real JPEG / PNG (Pillow), a minimal MP4 with an H.264 track, a PDF.

The MP4 is a hand-assembled ISO/IEC 14496-12 file (ftyp, moov/trak/mdia/minf/stbl with an avc1
sample entry and its avcC, mdat) around synthetic H.264 NAL units: enough container for an
archive to read codec, profile, level, size, frame count and duration, no encoder needed.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import samples
from PIL import Image


def jpeg(width: int = 64, height: int = 48, *, mode: str = "RGB", subsampling: int = 2) -> bytes:
    """A baseline JPEG (Pillow), 4:2:0 by default."""
    rng = np.random.default_rng(1)
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    image = Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, subsampling=subsampling)
    return out.getvalue()


def png(width: int = 40, height: int = 30) -> tuple[bytes, np.ndarray]:
    """An RGB PNG and its pixels."""
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, "PNG")
    return out.getvalue(), pixels


def pdf() -> bytes:
    return samples._tiny_pdf("Pergamon WIC test")


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _full(kind: bytes, payload: bytes, version: int = 0) -> bytes:
    return _box(kind, struct.pack(">I", version << 24) + payload)


def mp4(width: int = 320, height: int = 240, frames: int = 25, fps: int = 25, *, level: int = 41) -> bytes:
    """A minimal MP4: one H.264 High profile video track of `frames` samples."""
    stream = samples._fake_h264(np.random.default_rng(3), height, width, frames)
    sizes = [len(stream) // frames] * frames
    sizes[-1] += len(stream) - sum(sizes)
    timescale = fps * 100
    avcc = _box(b"avcC", bytes([1, 100, 0, level, 0xFF, 0xE0, 0]))
    entry = (
        b"\0" * 6
        + struct.pack(">H", 1)
        + b"\0" * 16
        + struct.pack(">HH", width, height)
        + struct.pack(">II", 0x00480000, 0x00480000)
        + b"\0" * 4
        + struct.pack(">H", 1)
        + b"\0" * 32
        + struct.pack(">Hh", 0x18, -1)
        + avcc
    )
    stsd = _full(b"stsd", struct.pack(">I", 1) + _box(b"avc1", entry))
    stts = _full(b"stts", struct.pack(">III", 1, frames, 100))
    stsz = _full(b"stsz", struct.pack(">II", 0, frames) + b"".join(struct.pack(">I", s) for s in sizes))
    stsc = _full(b"stsc", struct.pack(">IIII", 1, 1, frames, 1))
    ftyp = _box(b"ftyp", b"isom" + struct.pack(">I", 512) + b"isomavc1")

    def build(chunk_offset: int) -> bytes:
        stco = _full(b"stco", struct.pack(">II", 1, chunk_offset))
        stbl = _box(b"stbl", stsd + stts + stsc + stsz + stco)
        minf = _box(b"minf", _full(b"vmhd", struct.pack(">HHHH", 0, 0, 0, 0), 0) + stbl)
        hdlr = _full(b"hdlr", b"\0" * 4 + b"vide" + b"\0" * 12 + b"video\0")
        mdhd = _full(b"mdhd", struct.pack(">IIIIHH", 0, 0, timescale, frames * 100, 0x55C4, 0))
        mdia = _box(b"mdia", mdhd + hdlr + minf)
        tkhd = _full(
            b"tkhd",
            struct.pack(">IIIII", 0, 0, 1, 0, frames * 100)
            + b"\0" * 52
            + struct.pack(">II", width << 16, height << 16),
        )
        mvhd = _full(b"mvhd", struct.pack(">IIII", 0, 0, timescale, frames * 100) + b"\0" * 80)
        return _box(b"moov", mvhd + _box(b"trak", tkhd + mdia))

    moov = build(0)
    moov = build(len(ftyp) + len(moov) + 8)
    return ftyp + moov + _box(b"mdat", stream)
