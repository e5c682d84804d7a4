"""DICOMweb media types: DICOM JSON, DICOM XML and Accept-header negotiation.

- `to_json` renders a dataset in the DICOM JSON Model (PS3.18 Annex F.2): keys are the tags as
  eight uppercase hex digits, each with its ``vr``; ``Value`` arrays per F.2.3 (strings, JSON numbers
  for IS, DS and the binary numeric VRs, PN objects with ``Alphabetic``/``Ideographic``/``Phonetic``
  groups, AT as ``"GGGGEEEE"``, SQ items as objects); a zero-length attribute has no ``Value`` and
  an empty value inside a multi-valued one is ``null`` (F.2.5); binary VRs as ``InlineBinary``
  (base64) or ``BulkDataURI`` (F.2.7). Text is always Unicode: pydicom has already decoded it with
  the object's Specific Character Set, so the JSON (always UTF-8, F.2) carries ``ISO_IR 192``.
- `to_xml` renders one dataset as a PS3.19 A.1 Native DICOM Model document (``NativeDicomModel``,
  ``DicomAttribute`` with ``tag``/``vr``/``keyword``, ``Value``, ``PersonName``, ``Item``,
  ``InlineBinary``, ``BulkData``), UTF-8. PS3.18 XML responses that carry several datasets (search
  results, metadata) are ``multipart/related; type="application/dicom+xml"`` with one document per
  part: `multipart_related` builds such a body.
- `negotiate` picks the media type of a response from the ``Accept`` header field or the
  ``accept`` query parameter (PS3.18 8.3.3.1, 8.7), with q-values, wild cards and media-type
  parameters such as ``type``; it raises HTTP 406 when nothing offered is acceptable.

Written by hand rather than with pydicom's ``Dataset.to_json_dict`` to control the details above
(tag paths for bulk data URIs, DS values that are not JSON numbers, ambiguous VRs, XML).
"""

from __future__ import annotations

import base64
import math
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from typing import Any

from pydicom import Dataset
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.valuerep import PersonName
from starlette.exceptions import HTTPException
from starlette.requests import Request

from pergamon.archive.model import ascii_json, ascii_json_vrs, plain_json

TagPath = tuple[int, ...]
"""Where an element sits: its tag, preceded for an element inside sequence items by each enclosing
sequence's tag and the 0-based index of the item, e.g. ``(0x00081115, 0, 0x0008114A, 2, 0x00081155)``."""

BulkUri = Callable[[TagPath], "str | None"]
"""Gives the BulkDataURI of a binary element (None: send it inline)."""

JSON = "application/dicom+json"
XML = "application/dicom+xml"
MULTIPART_XML = f'multipart/related; type="{XML}"'

BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
"""VRs rendered as InlineBinary or BulkDataURI (PS3.18 F.2.7)."""

_INT_VRS = frozenset({"IS", "SL", "SS", "SV", "UL", "US", "UV"})
_FLOAT_VRS = frozenset({"DS", "FL", "FD"})
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
_PN_COMPONENTS = ("FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix")
NATIVE_DICOM_NS = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def vr_of(elem: DataElement) -> str:
    """The element's VR; an ambiguous one (``US or SS``) that pydicom could not resolve is its first."""
    return str(elem.VR).split(" or ")[0]


def _values(elem: DataElement) -> list[Any]:
    value = elem.value
    if value is None or (isinstance(value, (str, bytes)) and value == ""):
        return []
    if isinstance(value, (str, bytes, bytearray, PersonName)) or not isinstance(value, Sequence):
        return [value]
    return list(value)


def _number(vr: str, value: Any) -> int | float | str | None:
    """A numeric value as a JSON number; a DS or IS that is not a finite number stays a string (F.2.3.1)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        if vr in _INT_VRS:
            return int(str(value).strip()) if isinstance(value, str) else int(value)
        number = float(value)
    except (TypeError, ValueError):
        return str(value).strip()
    if not math.isfinite(number):
        return str(value).strip()
    return number


def pn_groups(value: Any) -> dict[str, str]:
    """A Person Name as its non-empty component groups (PS3.18 F.2.2, PS3.5 6.2)."""
    text = str(value)
    groups = text.split("=")
    return {name: group for name, group in zip(_PN_GROUPS, groups, strict=False) if group}


def _binary(elem: DataElement) -> bytes:
    value = elem.value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return b"".join(bytes(v) for v in _values(elem))


def to_json(
    ds: Dataset,
    *,
    bulk_uri: BulkUri | None = None,
    bulk_threshold: int = 1024,
    leave_out: Container[int] = (),
    _path: TagPath = (),
) -> dict[str, Any]:
    """One dataset in the DICOM JSON Model (PS3.18 F.2); see the module docstring.

    A binary element longer than ``bulk_threshold`` bytes gets ``BulkDataURI: bulk_uri(path)`` when
    ``bulk_uri`` is given and returns a URI; otherwise its value is sent as ``InlineBinary``.
    Group lengths and file meta information are left out; Specific Character Set becomes
    ``ISO_IR 192`` since the JSON text is Unicode. Top-level tags in ``leave_out`` are skipped
    (the caller renders them itself).
    """
    out: dict[str, Any] = {}
    # By tag, not `for elem in ds`: iterating a Dataset converts every raw element first.
    for tag in sorted(int(t) for t in ds.keys()):  # noqa: SIM118
        if tag & 0xFFFF == 0 or tag >> 16 == 0x0002 or tag in leave_out:
            continue
        plain = _plain_raw(ds.get_item(tag))
        if plain is not None:
            out[f"{tag:08X}"] = plain
            continue
        elem = ds[tag]
        vr = vr_of(elem)
        entry: dict[str, Any] = {"vr": vr}
        path = (*_path, tag)
        if tag == 0x00080005:
            entry["Value"] = ["ISO_IR 192"]
        elif vr == "SQ":
            items = [
                to_json(item, bulk_uri=bulk_uri, bulk_threshold=bulk_threshold, _path=(*path, i))
                for i, item in enumerate(elem.value or [])
            ]
            if items:
                entry["Value"] = items
        elif vr in BINARY_VRS:
            data = _binary(elem)
            uri = bulk_uri(path) if bulk_uri is not None and len(data) > bulk_threshold else None
            if uri is not None:
                entry["BulkDataURI"] = uri
            elif data:
                entry["InlineBinary"] = base64.b64encode(data).decode("ascii")
        else:
            values = _json_values(vr, elem)
            if values:
                entry["Value"] = values
        out[f"{tag:08X}"] = entry
    return out


def from_index_json(elements: Mapping[str, Any]) -> dict[str, Any]:
    """DICOM JSON held by the index, rendered as `to_json` renders the Dataset built from it.

    The index already holds DICOM JSON, so a search result need not become a pydicom Dataset only
    to be written back: common elements (text, person names, integers) are normalised here as
    `to_json` would (an empty value is ``null``, all-empty values or an empty sequence have no
    ``Value``, empty name groups are dropped); any other element goes through `to_json`. Keys keep
    their order. `tests/unit/web/test_index_json.py` checks the result equals the slow path.
    """
    out: dict[str, Any] = {}
    for key, element in elements.items():
        plain = _plain_index_element(key, element)
        out[key] = plain if plain is not None else to_json(Dataset.from_json({key: element}))[key]
    return out


_PLAIN_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"})
_PLAIN_INT_VRS = frozenset({"IS", "SL", "SS", "UL", "US"})


def _plain_raw(raw: Any) -> dict[str, Any] | None:
    """`to_json`'s form of a plain text or integer element still in its file bytes; None: convert it.

    pydicom's conversion of each raw element was most of the time of an uncached WADO-RS metadata
    request; `model.ascii_json` and `model.plain_json` read these straight from the bytes (held
    equal to pydicom over the sample corpus), and `_plain_index_element` puts them in `to_json`'s form.
    """
    if not isinstance(raw, RawDataElement) or not isinstance(raw.value, bytes) or raw.tag == 0x00080005:
        return None
    encoded, _text = ascii_json(raw) if raw.VR in ascii_json_vrs() else plain_json(raw)
    return _plain_index_element(f"{int(raw.tag):08X}", encoded) if encoded is not None else None


def _plain_index_element(key: str, element: Mapping[str, Any]) -> dict[str, Any] | None:
    """`to_json`'s form of one plain element; None: not plain, let `to_json` decide."""
    vr = element.get("vr")
    if key == "00080005":  # whatever it held, `to_json` declares the Unicode of the JSON text
        return {"vr": "CS", "Value": ["ISO_IR 192"]} if vr == "CS" else None
    if len(element) > 2 or not isinstance(vr, str):
        return None
    if "Value" not in element:
        return {"vr": vr} if len(element) == 1 and vr != "SQ" and vr not in BINARY_VRS else None
    values = element["Value"]
    if vr in _PLAIN_TEXT_VRS and all(v is None or (type(v) is str and "\\" not in v) for v in values):
        result = [v or None for v in values]
    elif vr == "PN" and all(_plain_name(v) for v in values):
        result = [{g: v[g] for g in _PN_GROUPS if v.get(g)} or None if v is not None else None for v in values]
    elif vr in _PLAIN_INT_VRS and all(type(v) is int for v in values):
        result = list(values)
    elif vr == "SQ" and not values:
        return {"vr": vr}
    else:
        return None
    return {"vr": vr, "Value": result} if any(v is not None for v in result) else {"vr": vr}


def _plain_name(value: Any) -> bool:
    return value is None or (
        isinstance(value, dict) and all(k in _PN_GROUPS and type(v) is str and "=" not in v for k, v in value.items())
    )


def _json_values(vr: str, elem: DataElement) -> list[Any]:
    values = _values(elem)
    if not values:
        return []
    result: list[Any] = []
    for value in values:
        if vr == "PN":
            result.append(pn_groups(value) or None)
        elif vr in _INT_VRS or vr in _FLOAT_VRS:
            result.append(_number(vr, value))
        elif vr == "AT":
            result.append(f"{int(value):08X}")
        else:
            text = str(value)
            result.append(text if text != "" else None)
    return result if any(v is not None for v in result) else []


def _xml_text(value: str) -> str:
    return _XML_INVALID.sub("\ufffd", value)


def _xml_element(
    parent: ET.Element, elem: DataElement, path: TagPath, bulk_uri: BulkUri | None, bulk_threshold: int
) -> None:
    tag = int(elem.tag)
    vr = vr_of(elem)
    attrs = {"tag": f"{tag:08X}", "vr": vr}
    keyword = keyword_for_tag(tag)
    if keyword:
        attrs["keyword"] = keyword
    if elem.tag.is_private and not elem.tag.is_private_creator:
        creator = getattr(elem, "private_creator", None)
        if creator:
            attrs["privateCreator"] = str(creator)
    node = ET.SubElement(parent, "DicomAttribute", attrs)
    if tag == 0x00080005:
        ET.SubElement(node, "Value", number="1").text = "ISO_IR 192"
    elif vr == "SQ":
        for i, item in enumerate(elem.value or []):
            item_node = ET.SubElement(node, "Item", number=str(i + 1))
            _xml_dataset(item_node, item, (*path, i), bulk_uri, bulk_threshold)
    elif vr in BINARY_VRS:
        data = _binary(elem)
        uri = bulk_uri(path) if bulk_uri is not None and len(data) > bulk_threshold else None
        if uri is not None:
            ET.SubElement(node, "BulkData", uri=uri)
        elif data:
            ET.SubElement(node, "InlineBinary").text = base64.b64encode(data).decode("ascii")
    elif vr == "PN":
        for number, value in enumerate(_values(elem), 1):
            groups = pn_groups(value)
            if not groups:
                continue
            name = ET.SubElement(node, "PersonName", number=str(number))
            for group, text in groups.items():
                group_node = ET.SubElement(name, group)
                for component, part in zip(_PN_COMPONENTS, text.split("^"), strict=False):
                    if part:
                        ET.SubElement(group_node, component).text = _xml_text(part)
    else:
        for number, value in enumerate(_json_values(vr, elem), 1):
            if value is not None:
                ET.SubElement(node, "Value", number=str(number)).text = _xml_text(str(value))


def _xml_dataset(parent: ET.Element, ds: Dataset, path: TagPath, bulk_uri: BulkUri | None, threshold: int) -> None:
    for elem in ds:
        tag = int(elem.tag)
        if tag & 0xFFFF == 0 or tag >> 16 == 0x0002:
            continue
        _xml_element(parent, elem, (*path, tag), bulk_uri, threshold)


def to_xml(ds: Dataset, *, bulk_uri: BulkUri | None = None, bulk_threshold: int = 1024) -> bytes:
    """One dataset as a PS3.19 A.1 Native DICOM Model document, UTF-8 with an XML declaration.

    A Native DICOM Model document holds exactly one dataset; several datasets travel as the
    parts of a multipart/related body (`multipart_related`). Bulk data as in `to_json`.
    """
    root = ET.Element("NativeDicomModel", {"xmlns": NATIVE_DICOM_NS, "xml:space": "preserve"})
    _xml_dataset(root, ds, (), bulk_uri, bulk_threshold)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8", xml_declaration=False)


def json_to_xml(model: dict[str, Any]) -> bytes:
    """A PS3.18 F.2 JSON dataset as a PS3.19 Native DICOM Model document (same values, same URIs).

    WADO-RS metadata is built once as JSON (with its BulkDataURIs); this gives its XML form.
    """
    root = ET.Element("NativeDicomModel", {"xmlns": NATIVE_DICOM_NS, "xml:space": "preserve"})
    _xml_from_json(root, model)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8", xml_declaration=False)


def _xml_from_json(parent: ET.Element, model: dict[str, Any]) -> None:
    for key, entry in model.items():
        vr = entry.get("vr", "UN")
        attrs = {"tag": key, "vr": vr}
        keyword = keyword_for_tag(int(key, 16))
        if keyword:
            attrs["keyword"] = keyword
        node = ET.SubElement(parent, "DicomAttribute", attrs)
        if "BulkDataURI" in entry:
            ET.SubElement(node, "BulkData", uri=entry["BulkDataURI"])
        elif "InlineBinary" in entry:
            ET.SubElement(node, "InlineBinary").text = entry["InlineBinary"]
        for number, value in enumerate(entry.get("Value", []), 1):
            if value is None:
                continue
            if vr == "SQ":
                _xml_from_json(ET.SubElement(node, "Item", number=str(number)), value)
            elif vr == "PN":
                name = ET.SubElement(node, "PersonName", number=str(number))
                for group, text in value.items():
                    group_node = ET.SubElement(name, group)
                    for component, part in zip(_PN_COMPONENTS, str(text).split("^"), strict=False):
                        if part:
                            ET.SubElement(group_node, component).text = _xml_text(part)
            else:
                ET.SubElement(node, "Value", number=str(number)).text = _xml_text(str(value))


def multipart_related(parts: Iterable[bytes], part_type: str, *, boundary: str | None = None) -> tuple[bytes, str]:
    """A multipart/related body (RFC 2387, PS3.18 8.7.1.2) of parts of one media type, and its Content-Type."""
    boundary = boundary or uuid.uuid4().hex
    chunks: list[bytes] = []
    for part in parts:
        chunks.append(f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode("ascii"))
        chunks.append(part)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode("ascii"))
    return b"".join(chunks), f'multipart/related; type="{part_type}"; boundary={boundary}'


# --- Accept negotiation (RFC 9110 12.5.1; PS3.18 8.7) -------------------------------------------

_TOKEN_PARAM = re.compile(r';\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,]*)')


def parse_media_range(text: str) -> tuple[str, dict[str, str], float]:
    """``type/subtype``, its parameters (lower-case names, unquoted values) and its q-value."""
    head, _, rest = text.partition(";")
    params: dict[str, str] = {}
    for name, value in _TOKEN_PARAM.findall(";" + rest if rest else ""):
        value = value.strip()
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = value[1:-1]
        params[name.lower()] = value
    q = 1.0
    if "q" in params:
        try:
            q = max(0.0, min(1.0, float(params.pop("q"))))
        except ValueError:
            q = 0.0
    return head.strip().lower(), params, q


def _split_ranges(header: str) -> list[str]:
    """Comma-separated media ranges, commas inside quoted parameter values kept."""
    ranges: list[str] = []
    current: list[str] = []
    quoted = False
    for char in header:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            ranges.append("".join(current))
            current = []
        else:
            current.append(char)
    ranges.append("".join(current))
    return [r.strip() for r in ranges if r.strip()]


def _specificity(media_range: str, params: dict[str, str], offered: str) -> int:
    """How closely a media range matches an offered type: -1 not at all, higher is more specific."""
    offer_type, offer_params, _ = parse_media_range(offered)
    if media_range == "*/*":
        score = 0
    elif media_range.endswith("/*") and offer_type.split("/")[0] == media_range[:-2]:
        score = 1
    elif media_range == offer_type:
        score = 2
    else:
        return -1
    for name, value in params.items():
        if name in ("charset", "transfer-syntax"):
            continue  # not part of the type's identity; a door checks them itself
        if offer_params.get(name, "").lower() != value.lower():
            return -1
        score += 1
    return score


def accepted(header: str, offered: Sequence[str]) -> str | None:
    """The offered media type the ``Accept`` value prefers (the first offered one for no header)."""
    if not header.strip():
        return offered[0] if offered else None
    best: tuple[float, int, int] | None = None
    choice: str | None = None
    ranges = [parse_media_range(r) for r in _split_ranges(header)]
    for index, offer in enumerate(offered):
        match: tuple[float, int] | None = None
        for media_range, params, q in ranges:
            score = _specificity(media_range, params, offer)
            if score >= 0 and (match is None or score > match[1]):
                match = (q, score)
        if match is None or match[0] <= 0:
            continue
        key = (match[0], match[1], -index)
        if best is None or key > best:
            best, choice = key, offer
    return choice


def negotiate(request: Request, offered: list[str]) -> str:
    """The media type to answer with, from the ``accept`` query parameter or the Accept header.

    PS3.18 8.3.3.1 lets the ``accept`` query parameter replace the header field. Raises
    `HTTPException` 406 Not Acceptable (PS3.18 8.5) naming the types that can be served.
    """
    header = ",".join(request.query_params.getlist("accept")) or request.headers.get("accept", "")
    choice = accepted(header, offered)
    if choice is None:
        raise HTTPException(
            406, f"none of the requested media types ({header}) can be served here; available: {', '.join(offered)}"
        )
    return choice


_DEFAULT_PORTS = {"http": 80, "https": 443}


def service_url(request: Request, base_path: str) -> str:
    """The absolute URL of the DICOMweb service as the client reached it (for Retrieve URL, BulkDataURI).

    Built from the scheme and the Host header field (RFC 9110 7.2). Some clients (dicomweb-client)
    send a Host without the port; on a direct connection (no ``Forwarded``/``X-Forwarded-*``
    header from a proxy) the port the request arrived on is then added.
    """
    scheme = request.url.scheme
    host = request.headers.get("host", "")
    server = request.scope.get("server")
    proxied = any(h in request.headers for h in ("forwarded", "x-forwarded-for", "x-forwarded-host"))
    if not host and server:
        host = f"{server[0]}:{server[1]}"
    elif host and not re.search(r":\d+$", host) and not proxied and server and server[1] != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{server[1]}"
    return f"{scheme}://{host}{base_path}".rstrip("/")
