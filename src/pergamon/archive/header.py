"""Reading a stored object's header (everything before its pixel data) for ingest, in one pass.

Ingest reads the header of every object it stores. pydicom's `dcmread` spends ~0.6 ms on a CT
slice's sixty header elements: it reads the file a few bytes at a time, converts the whole file
meta group and builds a `FileDataset`. For the encodings nearly every object arrives in
(little endian, explicit or implicit VR, not deflated) this module reads the file in 64 KiB
chunks and makes the same raw elements pydicom's reader makes, into a plain `Dataset` with its
encoding recorded; undefined-length sequences are parsed by pydicom's own `read_sequence`.
Anything else goes to `dcmread`: big endian, deflate, no preamble, a VR that is not one, an
undefined-length element that is not a sequence, a data set in another encoding than its
transfer syntax says. `tests/unit/archive/test_header.py` holds both readers to the same
header over the sample corpus and over cut and damaged files.
"""

from __future__ import annotations

from struct import Struct
from typing import BinaryIO, NamedTuple

from pydicom import dcmread
from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement, empty_value_for_VR
from pydicom.dataset import Dataset
from pydicom.filereader import read_sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR
from pydicom.values import convert_string

from pergamon.archive.model import BULK_VRS

_CHUNK = 1 << 16
_DEFER_SIZE = 1024
"""Bulk values longer than this stay in the file (value None), as `dcmread(defer_size=1024)` leaves them."""
_MAX_VALUE = 1 << 24
"""A longer non-bulk value (a huge text or sequence) is left to `dcmread`, which defers it."""
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
_VR_NAMES = {str(vr).encode("ascii"): str(vr) for vr in VR}
_LONG_VRS = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)
_UNDEFINED = 0xFFFFFFFF
_TAG = Struct("<HH")
_U16 = Struct("<H")
_U32 = Struct("<I")
# transfer syntax -> implicit VR?, or None when this reader leaves it to dcmread
_ENCODING_OF: dict[str, bool | None] = {}


class _NotSimple(Exception):
    """The file needs pydicom's full reader."""


class PixelStart(NamedTuple):
    """Where the header read stopped: the pixel data element's tag, VR (None if implicit), value offset, length."""

    tag: int
    vr: str | None
    offset: int
    length: int


def read_header(fp: BinaryIO) -> tuple[Dataset, str]:
    """The object's header up to its pixel data (bulk values over 1 KiB left in the file) and its transfer syntax.

    Raises what `dcmread` raises for a file it cannot read (InvalidDicomError without a preamble).
    """
    try:
        return _Reader(fp).header()
    except _NotSimple:
        fp.seek(0)
        header = dcmread(fp, stop_before_pixels=True, defer_size=_DEFER_SIZE)
        return header, str(header.file_meta.TransferSyntaxUID)


def read_header_deferring(fp: BinaryIO) -> tuple[Dataset, str, PixelStart | None] | None:
    """The header as `dcmread(stop_before_pixels=True, defer_size=1024)` reads it, and where its pixel data starts.

    Every value over 1 KiB is left in the file (not only bulk ones), as pydicom's reader leaves
    them: the WADO-RS metadata turns those into BulkDataURIs. None when the file needs `dcmread`.
    """
    reader = _Reader(fp, defer_any=True)
    try:
        ds, transfer_syntax = reader.header()
    except _NotSimple:
        return None
    return ds, transfer_syntax, reader.pixel


def _implicit_vr(transfer_syntax: str) -> bool | None:
    """Whether a transfer syntax is implicit VR; None when it is one this reader does not take."""
    try:
        return _ENCODING_OF[transfer_syntax]
    except KeyError:
        pass
    uid = UID(transfer_syntax)
    simple = uid.is_transfer_syntax and uid.is_little_endian and not uid.is_deflated
    implicit = uid.is_implicit_VR if simple else None
    if len(_ENCODING_OF) < 256:  # private transfer syntaxes must not grow it without bound
        _ENCODING_OF[transfer_syntax] = implicit
    return implicit


class _Reader:
    """One header read: a window of the file (`buf`, starting at file offset `base`) and a cursor."""

    def __init__(self, fp: BinaryIO, *, defer_any: bool = False) -> None:
        self.fp = fp
        self.defer_any = defer_any  # defer every long value, not only bulk ones (`read_header_deferring`)
        self.pixel: PixelStart | None = None
        self.base = 0
        self.buf = fp.read(_CHUNK)
        self.at_eof = len(self.buf) < _CHUNK

    def header(self) -> tuple[Dataset, str]:
        if len(self.buf) < 132 or self.buf[128:132] != b"DICM":
            raise _NotSimple
        pos, transfer_syntax = self._file_meta(132)
        implicit = _implicit_vr(transfer_syntax)
        if implicit is None or self._looks_implicit(pos) != implicit:
            raise _NotSimple
        elements, encoding = self._data_set(pos, implicit)
        ds = Dataset(elements)
        ds.set_original_encoding(implicit, True, encoding)
        return ds, transfer_syntax

    def _have(self, pos: int, n: int) -> bool:
        """Make the window hold file bytes [pos, pos + n); False when the file ends before."""
        if self.base <= pos and pos + n <= self.base + len(self.buf):
            return True
        if self.at_eof and pos + n > self.base + len(self.buf):
            return False
        self.fp.seek(pos)
        self.base = pos
        self.buf = self.fp.read(max(n, _CHUNK))
        self.at_eof = len(self.buf) < max(n, _CHUNK)
        return len(self.buf) >= n

    def _file_meta(self, pos: int) -> tuple[int, str]:
        """Walk group 0002 (always explicit VR little endian): where it ends and the transfer syntax."""
        transfer_syntax = None
        while self._have(pos, 8) and _U16.unpack_from(self.buf, pos - self.base)[0] == 0x0002:
            tag, length, value_pos = self._meta_element_head(pos)
            if length > _CHUNK or not self._have(value_pos, length):  # undefined, corrupt or cut short
                raise _NotSimple
            if tag == 0x00020010:
                offset = value_pos - self.base
                transfer_syntax = self.buf[offset : offset + length].decode("ascii", "replace").rstrip("\x00 ")
            pos = value_pos + length
        if not transfer_syntax:
            raise _NotSimple
        return pos, transfer_syntax

    def _looks_implicit(self, pos: int) -> bool:
        """pydicom's test of the data set's first element: implicit unless two capital letters sit where a VR would."""
        if not self._have(pos, 6):
            raise _NotSimple  # an empty or nearly empty data set: pydicom's reader decides
        vr = self.buf[pos - self.base + 4 : pos - self.base + 6]
        return not (0x40 < vr[0] < 0x5B and 0x40 < vr[1] < 0x5B)

    def _meta_element_head(self, pos: int) -> tuple[int, int, int]:
        """Tag, value length and value position of the explicit VR element at `pos` (file meta)."""
        offset = pos - self.base
        group, element = _TAG.unpack_from(self.buf, offset)
        tag = group << 16 | element
        vr = _VR_NAMES.get(self.buf[offset + 4 : offset + 6])
        if vr is None:
            raise _NotSimple  # pydicom would guess (implicit VR inside explicit, or an unknown VR)
        if vr in _LONG_VRS:
            if not self._have(pos, 12):
                raise _NotSimple
            return tag, _U32.unpack_from(self.buf, pos - self.base + 8)[0], pos + 12
        return tag, _U16.unpack_from(self.buf, offset + 6)[0], pos + 8

    def _data_set(
        self, pos: int, implicit: bool
    ) -> tuple[dict[BaseTag, RawDataElement | DataElement], str | list[str]]:
        """The top-level elements before the pixel data, and the character set's Python encodings.

        The loop is written out (no helper per element): it runs some sixty times per object, and
        a method call per step cost as much as the rest of it.
        """
        elements: dict[BaseTag, RawDataElement | DataElement] = {}
        encoding: str | list[str] = default_encoding
        unpack_tag, unpack_u16, unpack_u32 = _TAG.unpack_from, _U16.unpack_from, _U32.unpack_from
        while True:
            offset = pos - self.base
            if offset < 0 or offset + 12 > len(self.buf):  # near the window's end: move it
                if not self._have(pos, 8):
                    break  # fewer than 8 bytes left: the end, as pydicom's reader sees it
                self._have(pos, 12)
                offset = pos - self.base
            buf = self.buf
            group, element = unpack_tag(buf, offset)
            tag = group << 16 | element
            vr: str | None = None
            if implicit:
                length, value_pos = unpack_u32(buf, offset + 4)[0], pos + 8
            else:
                vr = _VR_NAMES.get(buf[offset + 4 : offset + 6])
                if vr is None:
                    raise _NotSimple  # pydicom would guess (implicit VR inside explicit, or an unknown VR)
                if vr not in _LONG_VRS:
                    length, value_pos = unpack_u16(buf, offset + 6)[0], pos + 8
                elif offset + 12 <= len(buf):
                    length, value_pos = unpack_u32(buf, offset + 8)[0], pos + 12
                else:
                    raise _NotSimple  # the file ends inside the element's length
            if tag in _PIXEL_TAGS:  # after the length, as in pydicom's reader (a cut there fails alike)
                self.pixel = PixelStart(tag, vr, value_pos, length)
                break
            if group == 0xFFFE:
                raise _NotSimple  # a stray item or delimiter: pydicom's reader stops there its own way
            if length == _UNDEFINED:
                if vr != "SQ":
                    raise _NotSimple
                elements[BaseTag(tag)], pos = self._sequence(tag, value_pos, implicit, encoding)
                continue
            start = value_pos - self.base
            if 0 < length <= _DEFER_SIZE and start + length <= len(buf):
                value: bytes | None = buf[start : start + length]
            else:
                value = self._value(vr, length, value_pos, tag)
            key = BaseTag(tag)
            elements[key] = RawDataElement(key, vr, length, value, value_pos, implicit, True)
            if tag == 0x00080005:
                encoding = convert_encodings(convert_string(value or b"", True))
            pos = value_pos + length
        return elements, encoding

    def _value(self, vr: str | None, length: int, pos: int, tag: int) -> bytes | None:
        """An element's value bytes (fewer when the file ends early); None for a deferred value."""
        if length == 0:
            return empty_value_for_VR(vr, raw=True)  # type: ignore[return-value]
        if length > _DEFER_SIZE and (vr in BULK_VRS or (self.defer_any and tag != 0x00080005)):
            return None
        if length > _MAX_VALUE:
            raise _NotSimple
        if self._have(pos, length):
            offset = pos - self.base
            return self.buf[offset : offset + length]
        return self.buf[pos - self.base :] if self.base <= pos else b""

    def _sequence(self, tag: int, pos: int, implicit: bool, encoding: str | list[str]) -> tuple[DataElement, int]:
        """An undefined-length sequence, parsed by pydicom as its reader does, and where it ends."""
        self.fp.seek(pos)
        try:
            items = read_sequence(self.fp, implicit, True, _UNDEFINED, encoding)
        except Exception as exc:  # cut short or damaged: pydicom's reader handles it in its own way
            raise _NotSimple from exc
        end = self.fp.tell()
        self.base, self.buf, self.at_eof = end, b"", False
        return DataElement(BaseTag(tag), "SQ", items, pos, is_undefined_length=True), end
