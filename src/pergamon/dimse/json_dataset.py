"""Encoding a data set held in the DICOM JSON Model straight to Little Endian bytes (PS3.5 7.1).

The index keeps each entity's attributes as DICOM JSON, and a C-FIND answer is built from them
(`archive.search.response_json`). Through pydicom, every response would be turned into a Dataset
(``Dataset.from_json``) and then written (``write_dataset``): on the 2-core test machine that was
over half of the ~1.6 ms each study-level response cost. The common elements of such an
identifier (text, person names, integer strings and binary integers) are written here directly;
any other element (sequences, decimal strings, floats, tags, binary data, values that are not
plain) is written by pydicom, element by element, so the result is the same bytes pydicom writes.
`tests/unit/test_json_dataset.py` checks that byte for byte.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from pydicom import Dataset
from pydicom.charset import default_encoding
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element

UTF8 = "ISO_IR 192"

_EXTENDED_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
"""VRs with a 4-byte length in Explicit VR (PS3.5 7.1.2, Table 7.1-1)."""

_CHARSET_TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UC", "UT"})
"""Text whose bytes depend on Specific Character Set (PS3.5 6.1.2.3); PN is handled on its own."""

_PLAIN_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI", "UR"})
"""Text in the default repertoire whatever the character set."""

_BINARY_INTS = {"US": "H", "SS": "h", "UL": "I", "SL": "i"}

_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def encode(elements: Mapping[str, Any], *, implicit_vr: bool) -> bytes:
    """The Little Endian encoding of DICOM JSON `elements` whose keys are in tag order.

    Text is written as UTF-8 when `elements` holds Specific Character Set ``ISO_IR 192``, else in
    the default repertoire; a value outside it goes to pydicom, which decides.
    """
    charset = (elements.get("00080005", {}).get("Value") or [None])[0]
    utf8 = charset == UTF8
    out = bytearray()
    for key, element in elements.items():
        tag = int(key, 16)
        vr = element.get("vr", "")
        value = _value_bytes(element, utf8)
        if implicit_vr and value is not None:
            out += struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value
        elif value is not None and vr in _EXTENDED_VRS:
            out += struct.pack("<HH2s2xI", tag >> 16, tag & 0xFFFF, vr.encode(), len(value)) + value
        elif value is not None and len(value) <= 0xFFFF:
            out += struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(value)) + value
        else:  # not plain, or too long for a 2-byte length (pydicom then writes it as UN)
            out += _pydicom_element(tag, key, element, charset, implicit_vr)
    return bytes(out)


def _value_bytes(element: Mapping[str, Any], utf8: bool) -> bytes | None:
    """The padded value of a plain element; None: leave it to pydicom."""
    vr = element.get("vr")
    if "Value" not in element:
        if "InlineBinary" in element or "BulkDataURI" in element or vr == "SQ":
            return None
        return b""
    values = element["Value"]
    try:
        if vr in _PLAIN_TEXT_VRS or vr in _CHARSET_TEXT_VRS:
            if not all(isinstance(v, str) or v is None for v in values):
                return None
            text = "\\".join("" if v is None else v for v in values)
            raw = text.encode("utf-8" if utf8 and vr in _CHARSET_TEXT_VRS else "ascii")
            return raw + b"\x00" if vr == "UI" and len(raw) % 2 else _pad(raw)
        if vr == "PN":
            names = [_person_name(v) for v in values]
            if any(name is None for name in names):
                return None
            return _pad("\\".join(names).encode("utf-8" if utf8 else "ascii"))  # type: ignore[arg-type]
        if vr == "IS":
            if not all(type(v) is int for v in values):
                return None
            return _pad("\\".join(str(v) for v in values).encode())
        if vr in _BINARY_INTS:
            if not all(type(v) is int for v in values):
                return None
            return struct.pack(f"<{len(values)}{_BINARY_INTS[vr]}", *values)
    except (UnicodeEncodeError, struct.error):
        return None
    return None


def _person_name(value: Any) -> str | None:
    """A PN value as pydicom writes it from JSON: its groups joined by '=', trailing empty ones dropped."""
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        return None
    return "=".join(value.get(group, "") for group in _PN_GROUPS).rstrip("=")


def _pad(raw: bytes) -> bytes:
    return raw + b" " if len(raw) % 2 else raw


def _pydicom_element(tag: int, key: str, element: Mapping[str, Any], charset: str | None, implicit_vr: bool) -> bytes:
    """One element written by pydicom, with the character set of the whole data set."""
    elem = Dataset.from_json({key: element})[tag]
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = implicit_vr
    write_data_element(fp, elem, charset or default_encoding)
    return fp.getvalue()
