"""HL7 v2 sample messages in the shape IHE profiles use, for the HL7 door's tests (and handler tests).

Each constant is a message's text with segments ended by CR, as sent on the wire:

* `ADT_A01_231`: RAD-1 Patient Registration (SWF), v2.3.1 ADT^A01 with PID-3 issuer and a visit.
* `ADT_A08_25`: RAD-12 Patient Update (PIR), v2.5 ADT^A08^ADT_A01 with an escaped `&` in PID-5
  (`\\T\\`), so unescaping is exercised.
* `ADT_A40_231`: RAD-12 merge, v2.3.1 ADT^A40 with MRG-1 (the patient merged away).
* `ORM_O01_231`: RAD-4 Procedure Scheduled, v2.3.1 ORM^O01 with ORC/OBR and the IHE ZDS segment
  carrying the Study Instance UID.
* `OMI_O23_251`: RAD-4 (SWF.b), v2.5.1 OMI^O23^OMI_O23 with ORC/TQ1/OBR/IPC.
* `ADT_A31_PIX`: ITI-10 PIX Update Notification, v2.5 ADT^A31^ADT_A05, read from the oehf/ipf
  sample in `/work/shared/schemas/pix/samples/adt-a31-1.hl7` when present (copied inline otherwise).
* `ADT_A08_LATIN1` / `ADT_A08_UTF8` / `ADT_A08_JIS`: one update whose patient name is outside
  ASCII, with MSH-18 `8859/1`, `UNICODE UTF-8` and `~ISO IR87` (ISO 2022 Japanese); encode them
  with `encoded(...)`.

`with_control_id(text, id)` gives a copy with another MSH-10.
"""

from __future__ import annotations

from pathlib import Path

_PIX_SAMPLE = Path("/work/shared/schemas/pix/samples/adt-a31-1.hl7")


def _message(*segments: str) -> str:
    return "\r".join(segments) + "\r"


ADT_A01_231 = _message(
    "MSH|^~\\&|ADT_SYSTEM|HOSPITAL|PERGAMON|RADIOLOGY|20261127083000||ADT^A01|ADT0001|P|2.3.1",
    "EVN|A01|20261127083000",
    "PID|||PAT-1001^^^HOSPITAL^MR||DOE^JOHN^Q||19700101|M|||1 MAIN ST^^SPRINGFIELD^IL^62701",
    "PV1||I|RAD^101^1|||||1234^SMITH^ANNA",
)

ADT_A08_25 = _message(
    "MSH|^~\\&|ADT_SYSTEM|HOSPITAL|PERGAMON|RADIOLOGY|20261127090000||ADT^A08^ADT_A01|ADT0002|P|2.5",
    "EVN|A08|20261127090000",
    "PID|||PAT-1001^^^HOSPITAL^MR||DOE\\T\\SMITH^JOHN^Q||19700101|M",
    "PV1||I",
)

ADT_A40_231 = _message(
    "MSH|^~\\&|ADT_SYSTEM|HOSPITAL|PERGAMON|RADIOLOGY|20261127091500||ADT^A40|ADT0003|P|2.3.1",
    "EVN|A40|20261127091500",
    "PID|||PAT-1001^^^HOSPITAL^MR||DOE^JOHN^Q||19700101|M",
    "MRG|PAT-0999^^^HOSPITAL^MR",
)

ORM_O01_231 = _message(
    "MSH|^~\\&|RIS|RADIOLOGY|PERGAMON|RADIOLOGY|20261127100000||ORM^O01|ORM0001|P|2.3.1",
    "PID|||PAT-1001^^^HOSPITAL^MR||DOE^JOHN^Q||19700101|M",
    "PV1||O",
    "ORC|NW|PLACER-77|FILLER-77||SC",
    "OBR|1|PLACER-77|FILLER-77|CTHEAD^CT Head without contrast^LOCAL|||20261127100000"
    "||||||||||ACC-5001|RP-1|SPS-1||||CT",
    "ZDS|1.2.826.0.1.3680043.10.1078.1.1.5001^RIS^Application^DICOM",
)

OMI_O23_251 = _message(
    "MSH|^~\\&|RIS|RADIOLOGY|PERGAMON|RADIOLOGY|20261127101500||OMI^O23^OMI_O23|OMI0001|P|2.5.1",
    "PID|||PAT-1001^^^HOSPITAL^MR||DOE^JOHN^Q||19700101|M",
    "PV1||O",
    "ORC|NW|PLACER-78|FILLER-78||SC",
    "TQ1|||||||20261127110000",
    "OBR|1|PLACER-78|FILLER-78|MRBRAIN^MR Brain^LOCAL",
    "IPC|ACC-5002|RP-2|1.2.826.0.1.3680043.10.1078.1.1.5002|SPS-2|MR",
)

_ADT_A31_INLINE = _message(
    "MSH|^~\\&|OTHER_ICW|ICW|EHR_TIANI-SPIRIT|TIANI-SPIRIT|20100113105903||ADT^A31^ADT_A05|207597|P^T|2.5",
    "EVN|A31|20100113105903",
    "PID|||52231059^^^IHENA&1.3.6.1.4.1.21367.2010.1.2.300&ISO^PI|| ",
    "PV1||N",
)


def _pix_sample() -> str:
    if _PIX_SAMPLE.is_file():
        text = _PIX_SAMPLE.read_text(encoding="ascii").replace("\r\n", "\r").replace("\n", "\r")
        return text if text.endswith("\r") else text + "\r"
    return _ADT_A31_INLINE


ADT_A31_PIX = _pix_sample()


def _named_update(charset: str, name: str) -> str:
    msh18 = f"||||||{charset}"
    return _message(
        f"MSH|^~\\&|ADT_SYSTEM|HOSPITAL|PERGAMON|RADIOLOGY|20261127120000||ADT^A08^ADT_A01|CS-{charset[-3:]}|P|2.5{msh18}",
        "EVN|A08|20261127120000",
        f"PID|||PAT-2001^^^HOSPITAL^MR||{name}||19800202|F",
    )


ADT_A08_LATIN1 = _named_update("8859/1", "MÜLLER^RENÉE")
ADT_A08_UTF8 = _named_update("UNICODE UTF-8", "王^小明")
ADT_A08_JIS = _named_update("~ISO IR87", "ヤマダ^タロウ")

CODECS = {ADT_A08_LATIN1: "iso8859-1", ADT_A08_UTF8: "utf-8", ADT_A08_JIS: "iso2022_jp"}


def encoded(text: str) -> bytes:
    """The bytes a sender would put on the wire for one of the samples above."""
    return text.encode(CODECS.get(text, "ascii"))


def with_control_id(text: str, control_id: str) -> str:
    """A copy of `text` with MSH-10 replaced."""
    header, rest = text.split("\r", 1)
    fields = header.split("|")
    fields[9] = control_id
    return "|".join(fields) + "\r" + rest
