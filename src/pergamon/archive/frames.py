"""Frames and bulk data values of a stored instance, read without loading the whole object.

Protocol-free back end of WADO-RS frames and bulk data (PS3.18 10.4.1.1.3 / 10.4.1.1.4) and of
the metadata's BulkDataURIs (PS3.18 F.2.6). `read_header` parses the header only (values over
1 KiB deferred; common encodings with ingest's `archive.header` reader, ~40% less time than `dcmread`,
the rest with `dcmread(stop_before_pixels=True)`) and records where the pixel data element starts;
`read_frame` then reads one frame from the file:

- native pixel data (PS3.5 8.1.1): frame N is a fixed-size slice of the value (bit-packed for
  Bits Allocated 1, PS3.5 8.1.1 / 8.2), read by offset; big endian data is swapped to little
  endian, the byte order of `application/octet-stream` (PS3.18 8.7.3.3.2);
- encapsulated pixel data (PS3.5 A.4): pydicom's `encaps.get_frame` with the Extended Offset
  Table (7FE0,0001)/(7FE0,0002) or the Basic Offset Table, positioned at the value in the file.

`decode_frame` gives a compressed frame decoded to native bytes (pydicom's pixel decoders, one
frame read). Bulk values are addressed by a tag path `TTTTTTTT[/item/TTTTTTTT...]` with 1-based
item numbers (as the `number` attribute of the Native DICOM Model, PS3.19 A.1.5).
A Deflated object (PS3.5 A.5) cannot be read by offset: it is read whole.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from pydicom import Dataset, dcmread
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import get_frame
from pydicom.pixels import pixel_array
from pydicom.tag import Tag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from pergamon.archive import codecs, errors, header

BULK_THRESHOLD = 1024
"""Values longer than this (bytes) leave the metadata as BulkDataURI (PS3.18 F.2.6)."""
BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)  # Float / Double Float / Pixel Data
UNDEFINED = 0xFFFFFFFF
_SWAP = {"OW": 2, "US": 2, "SS": 2, "AT": 2, "OF": 4, "OL": 4, "UL": 4, "SL": 4, "FL": 4,
         "OD": 8, "FD": 8, "OV": 8, "SV": 8, "UV": 8}  # fmt: skip
_TAG_PATH = re.compile(r"[0-9A-Fa-f]{8}(/[1-9][0-9]{0,8}/[0-9A-Fa-f]{8})*")


class FrameNotFound(errors.NotFound):
    """A frame number beyond Number of Frames, or an instance without pixel data."""


@dataclass(frozen=True)
class PixelElement:
    """Where the pixel data element of a stored file is: its tag, VR and value position."""

    tag: int
    vr: str
    offset: int
    length: int  # UNDEFINED for encapsulated data

    @property
    def encapsulated(self) -> bool:
        return self.length == UNDEFINED


@dataclass
class InstanceHeader:
    """The header of one instance (pixel data excluded, large values deferred) and its pixel data.

    `source` is the stored file, or a Dataset when the object was coerced or cannot be read by
    offset (deflated); `pixel` is set for files, `dataset` holds Pixel Data itself otherwise.
    """

    dataset: Dataset
    transfer_syntax: UID
    source: Path | Dataset
    pixel: PixelElement | None

    @property
    def has_pixels(self) -> bool:
        if isinstance(self.source, Dataset):
            return any(tag in self.source for tag in PIXEL_TAGS)
        return self.pixel is not None

    @property
    def pixel_tag(self) -> int | None:
        if isinstance(self.source, Dataset):
            return next((t for t in PIXEL_TAGS if t in self.source), None)
        return self.pixel.tag if self.pixel else None

    @property
    def encapsulated(self) -> bool:
        return self.transfer_syntax.is_encapsulated and self.pixel_tag == 0x7FE00010

    @property
    def number_of_frames(self) -> int:
        """Number of Frames (0028,0008), 1 when absent or empty, 0 without pixel data."""
        if not self.has_pixels:
            return 0
        try:
            return max(int(self.dataset.get("NumberOfFrames") or 1), 1)
        except (TypeError, ValueError):
            return 1

    def frame_bits(self) -> int:
        """Bits in one native frame (PS3.5 8.1.1; YBR_FULL_422 keeps two samples per pixel, PS3.3 C.7.6.3.1.2)."""
        ds = self.dataset
        samples = int(ds.get("SamplesPerPixel") or 1)
        bits = int(ds.Rows) * int(ds.Columns) * samples * int(ds.BitsAllocated)
        if samples == 3 and str(ds.get("PhotometricInterpretation", "")) == "YBR_FULL_422":
            bits = bits * 2 // 3
        return bits


def read_header(content: Path | Dataset, *, defer_size: int = BULK_THRESHOLD) -> InstanceHeader:
    """Parse the header of a stored file (or take a coerced Dataset) and locate its pixel data.

    Raises:
        errors.Invalid: the file is not readable DICOM.
    """
    if isinstance(content, Dataset):
        return InstanceHeader(_without_pixels(content), _syntax_of(content), content, None)
    try:
        with open(content, "rb") as f:
            if defer_size == BULK_THRESHOLD:
                read = header.read_header_deferring(f)
                if read is not None:
                    return _plain_header(content, *read)
                f.seek(0)
            ds = dcmread(f, stop_before_pixels=True, defer_size=defer_size)
            syntax = _syntax_of(ds)
            if syntax == DeflatedExplicitVRLittleEndian:
                full = dcmread(content)
                return InstanceHeader(_without_pixels(full), syntax, full, None)
            pixel = _pixel_element(f, syntax)
    except errors.PergamonError:
        raise
    except Exception as exc:
        raise errors.Invalid(f"stored object {content.name} is not readable DICOM: {exc}") from exc
    ds.filename = str(content)
    return InstanceHeader(ds, syntax, content, pixel)


def _plain_header(content: Path, ds: Dataset, transfer_syntax: str, pixel: header.PixelStart | None) -> InstanceHeader:
    """What `read_header` makes of `archive.header`'s read: the same header `dcmread` would give.

    A FileDataset over the read elements, so a deferred value is read from `content` when asked
    for; its file meta holds the Transfer Syntax UID only (nothing here reads the others).
    """
    syntax = UID(transfer_syntax)
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = syntax
    encoding = ds.original_character_set
    ds = FileDataset(str(content), ds, file_meta=meta, preamble=None)
    ds.set_original_encoding(syntax.is_implicit_VR, True, encoding)
    located = None
    if pixel is not None:
        located = PixelElement(pixel.tag, pixel.vr or _implicit_pixel_vr(pixel.tag), pixel.offset, pixel.length)
    return InstanceHeader(ds, syntax, content, located)


def _implicit_pixel_vr(tag: int) -> str:
    """The VR of a pixel data element read in implicit VR (the data dictionary's: OW, OF or OD)."""
    return "OW" if tag == 0x7FE00010 else ("OF" if tag == 0x7FE00008 else "OD")


def _syntax_of(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        return UID("1.2.840.10008.1.2")  # no File Meta: Implicit VR Little Endian (PS3.5 10.1)
    return UID(str(meta.TransferSyntaxUID))


def _without_pixels(ds: Dataset) -> Dataset:
    header = Dataset()
    header.update({tag: ds.get_item(tag, keep_deferred=True) for tag in ds.keys() if tag not in PIXEL_TAGS})  # type: ignore[misc]  # noqa: SIM118
    header.file_meta = ds.file_meta
    return header


def _pixel_element(f: BinaryIO, syntax: UID) -> PixelElement | None:
    """The pixel data element header at the file position where `stop_before_pixels` stopped."""
    start = f.tell()
    head = f.read(8)
    if len(head) < 8:
        return None
    endian = "<" if syntax.is_little_endian else ">"
    group, elem = struct.unpack(f"{endian}HH", head[:4])
    tag = group << 16 | elem
    if tag not in PIXEL_TAGS:
        return None
    if syntax.is_implicit_VR:
        (length,) = struct.unpack(f"{endian}I", head[4:8])
        return PixelElement(tag, _implicit_pixel_vr(tag), start + 8, length)
    vr = head[4:6].decode("ascii", "replace")
    (length,) = struct.unpack(f"{endian}I", f.read(4))
    return PixelElement(tag, vr, start + 12, length)


# --- frames ---------------------------------------------------------------------------------------


def check_frame_numbers(header: InstanceHeader, numbers: list[int]) -> None:
    """Every frame number names a frame of the instance (PS3.18 10.4.1.1.3: 1-based).

    Raises:
        FrameNotFound: no pixel data, or a number beyond Number of Frames.
    """
    count = header.number_of_frames
    if count == 0:
        raise FrameNotFound("the instance has no pixel data, so no frames")
    beyond = [n for n in numbers if n > count]
    if beyond:
        raise FrameNotFound(f"frame {beyond[0]} does not exist: the instance has {count} frame(s)")


def read_frame(header: InstanceHeader, number: int) -> bytes:
    """Frame `number` (1-based) as stored: native bytes (little endian) or one encapsulated frame.

    Raises:
        FrameNotFound: no such frame.
        errors.Invalid: the pixel data is not readable (truncated file, corrupt offsets).
    """
    check_frame_numbers(header, [number])
    try:
        if header.encapsulated:
            return _encapsulated_frame(header, number - 1)
        return _native_frame(header, number - 1)
    except errors.PergamonError:
        raise
    except Exception as exc:
        raise errors.Invalid(f"frame {number} cannot be read: {type(exc).__name__}: {exc}") from exc


def _extended_offsets(ds: Dataset) -> tuple[bytes, bytes] | None:
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        return bytes(ds.ExtendedOffsetTable), bytes(ds.ExtendedOffsetTableLengths)
    return None


def _encapsulated_frame(header: InstanceHeader, index: int) -> bytes:
    kwargs = {"number_of_frames": header.number_of_frames, "extended_offsets": _extended_offsets(header.dataset)}
    if isinstance(header.source, Dataset):
        return get_frame(header.source.PixelData, index, **kwargs)  # type: ignore[arg-type]
    assert header.pixel is not None
    with open(header.source, "rb") as f:
        f.seek(header.pixel.offset)
        return get_frame(f, index, **kwargs)  # type: ignore[arg-type]


def _native_frame(header: InstanceHeader, index: int) -> bytes:
    bits = header.frame_bits()
    first_bit = index * bits
    start, end = first_bit // 8, (first_bit + bits + 7) // 8
    data = _pixel_bytes(header, start, end - start)
    if len(data) < end - start:
        raise errors.Invalid(f"pixel data ends before frame {index + 1}")
    if first_bit % 8 or bits % 8:  # bit-packed (Bits Allocated 1) frame not on a byte boundary
        unpacked = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
        offset = first_bit - start * 8
        data = np.packbits(unpacked[offset : offset + bits], bitorder="little").tobytes()
    if not header.transfer_syntax.is_little_endian:
        size = _SWAP.get(header.pixel.vr if header.pixel else "OW", 1) if int(header.dataset.BitsAllocated) > 8 else 1
        data = _swapped(data, size)
    return data


def _pixel_bytes(header: InstanceHeader, start: int, length: int) -> bytes:
    if isinstance(header.source, Dataset):
        tag = header.pixel_tag
        assert tag is not None
        return bytes(header.source[tag].value[start : start + length])
    assert header.pixel is not None
    length = max(min(length, header.pixel.length - start), 0)
    with open(header.source, "rb") as f:
        f.seek(header.pixel.offset + start)
        return f.read(length)


def _swapped(data: bytes, size: int) -> bytes:
    if size <= 1 or not data:
        return data
    return np.frombuffer(data, dtype=f">u{size}").astype(f"<u{size}").tobytes()


def decode_frame(header: InstanceHeader, number: int) -> bytes:
    """Frame `number` (1-based) decoded to native little-endian bytes, color as pydicom decodes it.

    Raises:
        FrameNotFound: no such frame.
        errors.Invalid: no decoder for the syntax, or the frame does not decode.
    """
    check_frame_numbers(header, [number])
    if not header.transfer_syntax.is_encapsulated:
        return read_frame(header, number)
    try:
        source = header.source if isinstance(header.source, Dataset) else str(header.source)
        codecs.load()
        arr = pixel_array(source, index=number - 1)
    except Exception as exc:
        raise errors.Invalid(
            f"frame {number} ({header.transfer_syntax.name}) cannot be decoded: {type(exc).__name__}: {exc}"
        ) from exc
    if int(header.dataset.get("BitsAllocated") or 8) == 1:
        return np.packbits(arr.astype(np.uint8).ravel(), bitorder="little").tobytes()
    return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def iter_frames(header: InstanceHeader, numbers: list[int], *, decode: bool = False) -> Iterator[bytes]:
    """The frames in the order asked, read one at a time (decoded to native when `decode`)."""
    check_frame_numbers(header, numbers)
    for number in numbers:
        yield decode_frame(header, number) if decode else read_frame(header, number)


# --- bulk data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BulkValue:
    """A bulk data value: bytes held in memory, or a (file, offset, length) slice to stream."""

    vr: str
    data: bytes | None = None
    path: Path | None = None
    offset: int = 0
    length: int = 0

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self.length


def parse_tag_path(text: str) -> tuple[int | tuple[int, int], ...]:
    """`00540016/1/00181074` -> (0x00540016, (1, 0x00181074)): tags, each nested one with its item number.

    Raises:
        errors.Invalid: not a tag path.
    """
    text = text.strip("/")
    if not _TAG_PATH.fullmatch(text):
        raise errors.Invalid(f"{text!r} is not a bulk data tag path (TTTTTTTT[/item/TTTTTTTT...], items from 1)")
    parts = text.split("/")
    path: list[int | tuple[int, int]] = [int(parts[0], 16)]
    for i in range(1, len(parts), 2):
        path.append((int(parts[i]), int(parts[i + 1], 16)))
    return tuple(path)


def format_tag_path(path: list[int]) -> str:
    """The inverse of `parse_tag_path` for a flat list tag, item, tag, ..., e.g. for BulkDataURIs."""
    return "/".join(f"{v:08X}" if i % 2 == 0 else str(v) for i, v in enumerate(path))


def bulk_value(header: InstanceHeader, path: tuple[int | tuple[int, int], ...]) -> BulkValue:
    """The value at a tag path: top-level Pixel Data and deferred values as file slices, others as bytes.

    Values of binary VRs are in little endian (PS3.18 8.7.3.3.2). Encapsulated Pixel Data is
    not a single value here: callers send its frames.

    Raises:
        errors.NotFound: no such element or item.
    """
    first = path[0]
    assert isinstance(first, int)
    if len(path) == 1 and first in PIXEL_TAGS and header.pixel is not None and header.pixel.tag == first:
        assert isinstance(header.source, Path)
        return BulkValue(header.pixel.vr, path=header.source, offset=header.pixel.offset, length=header.pixel.length)
    source = header.source if isinstance(header.source, Dataset) and first in PIXEL_TAGS else header.dataset
    raw = _element(source, first, path)
    for item_number, tag in path[1:]:  # type: ignore[misc]
        elem = source[raw.tag]
        if elem.VR != "SQ" or not (1 <= item_number <= len(elem.value)):
            raise errors.NotFound(f"bulk data {_text(path)}: no item {item_number} in {Tag(raw.tag)}")
        source = elem.value[item_number - 1]
        raw = _element(source, tag, path)
    vr = str(raw.VR or "UN")
    if isinstance(raw, RawDataElement) and raw.value is None and isinstance(header.source, Path):
        length = raw.length
        if header.transfer_syntax.is_little_endian or _SWAP.get(vr, 1) == 1:
            return BulkValue(vr, path=header.source, offset=raw.value_tell, length=length)
        with open(header.source, "rb") as f:
            f.seek(raw.value_tell)
            return BulkValue(vr, data=_swapped(f.read(length), _SWAP[vr]))
    data = _encoded(raw, header.transfer_syntax)
    return BulkValue(vr, data=data)


def _element(ds: Dataset, tag: int, path: tuple[int | tuple[int, int], ...]) -> RawDataElement | DataElement:
    if tag not in ds:
        raise errors.NotFound(f"bulk data {_text(path)}: the instance has no {Tag(tag)}")
    return ds.get_item(tag, keep_deferred=True)  # type: ignore[return-value]


def _encoded(elem: RawDataElement | DataElement, syntax: UID) -> bytes:
    """The value's bytes in little endian, as raw-read or re-encoded by pydicom."""
    vr = str(elem.VR or "UN")
    value = elem.value
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
        little = elem.is_little_endian if isinstance(elem, RawDataElement) else syntax.is_little_endian
        return data if little else _swapped(data, _SWAP.get(vr, 1))
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_data_element

    element = elem if isinstance(elem, DataElement) else DataElement(elem.tag, vr, value)
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_data_element(buffer, element)
    return buffer.getvalue()[8:]  # drop the implicit VR element header (tag + length)


def _text(path: tuple[int | tuple[int, int], ...]) -> str:
    flat: list[int] = []
    for step in path:
        flat.extend(step if isinstance(step, tuple) else (step,))
    return format_tag_path(flat)
