"""DICOM JSON (PS3.18 F.2), Native DICOM Model XML (PS3.19 A.1) and Accept negotiation (`web/dicomweb/media.py`)."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET

import pytest
from pydicom import Dataset
from pydicom.sequence import Sequence
from starlette.exceptions import HTTPException
from starlette.requests import Request

from pergamon.web.dicomweb import media

NS = {"d": media.NATIVE_DICOM_NS}


def sample() -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = ["ISO 2022 IR 13", "ISO 2022 IR 87"]
    ds.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    ds.OtherPatientNames = ["Doe^John", "", "Smith"]
    ds.PatientID = "ID-1"
    ds.PatientBirthDate = ""
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesNumber = "7"
    ds.SliceThickness = "1.25"
    ds.ImagePositionPatient = ["0", "-1.5", "2e2"]
    ds.Rows = 4
    ds.WindowCenter = "NaN"
    ds.FrameIncrementPointer = 0x00181063
    ds.add_new(0x00280106, "US", 0)
    item = Dataset()
    item.CodeValue = "113000"
    item.CodeMeaning = "Of Interest"
    ds.ConceptNameCodeSequence = Sequence([item])
    ds.ReferencedImageSequence = Sequence([])
    ds.add_new(0x7FE00010, "OW", b"\x01\x02" * 1000)
    ds.add_new(0x00091010, "LO", "private")
    ds.add_new(0x00080000, "UL", 99)
    return ds


def test_json_model() -> None:
    out = media.to_json(sample())
    json.dumps(out)  # serialisable
    for key, entry in out.items():
        assert len(key) == 8 and key == key.upper() and int(key, 16) >= 0
        assert "vr" in entry
    assert "00080000" not in out  # group length
    assert out["00080005"] == {"vr": "CS", "Value": ["ISO_IR 192"]}
    assert out["00100010"]["Value"] == [
        {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
    ]
    assert out["00101001"]["Value"] == [{"Alphabetic": "Doe^John"}, None, {"Alphabetic": "Smith"}]
    assert out["00100030"] == {"vr": "DA"}  # empty: no Value (F.2.5)
    assert out["00200011"]["Value"] == [7] and isinstance(out["00200011"]["Value"][0], int)
    assert out["00180050"]["Value"] == [1.25]
    assert out["00200032"]["Value"] == [0.0, -1.5, 200.0]
    assert out["00281050"]["Value"] == ["NaN"]  # not a JSON number: stays a string
    assert out["00280010"]["Value"] == [4]
    assert out["00280106"]["Value"] == [0]
    assert out["00280009"] == {"vr": "AT", "Value": ["00181063"]}
    assert out["0040A043"]["Value"][0]["00080100"]["Value"] == ["113000"]
    assert out["00081140"] == {"vr": "SQ"}
    assert base64.b64decode(out["7FE00010"]["InlineBinary"]) == b"\x01\x02" * 1000
    assert out["00091010"] == {"vr": "LO", "Value": ["private"]}


def test_json_bulk_data_uri_with_tag_path() -> None:
    ds = sample()
    nested = Dataset()
    nested.add_new(0x00420011, "OB", b"%PDF" * 600)
    nested.add_new(0x00111010, "OB", b"xy")  # small: stays inline
    ds.ContentSequence = Sequence([Dataset(), nested])
    paths: list[tuple[int, ...]] = []

    def uri(path: tuple[int, ...]) -> str:
        paths.append(path)
        return "http://x/bulk/" + ".".join(f"{p:X}" for p in path)

    out = media.to_json(ds, bulk_uri=uri, bulk_threshold=100)
    assert out["7FE00010"] == {"vr": "OW", "BulkDataURI": "http://x/bulk/7FE00010"}
    item = out["0040A730"]["Value"][1]
    assert item["00420011"]["BulkDataURI"].endswith("40A730.1.420011")
    assert (0x0040A730, 1, 0x00420011) in paths
    assert "InlineBinary" in item["00111010"]


def test_xml_native_dicom_model() -> None:
    doc = media.to_xml(sample())
    assert doc.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(doc)
    assert root.tag == f"{{{media.NATIVE_DICOM_NS}}}NativeDicomModel"
    attrs = {a.get("tag"): a for a in root.findall("d:DicomAttribute", NS)}
    for tag, attr in attrs.items():
        assert len(tag) == 8 and attr.get("vr")
    name = attrs["00100010"]
    assert name.get("keyword") == "PatientName" and name.get("vr") == "PN"
    person = name.find("d:PersonName", NS)
    assert person is not None and person.get("number") == "1"
    assert person.findtext("d:Alphabetic/d:FamilyName", namespaces=NS) == "Yamada"
    assert person.findtext("d:Ideographic/d:GivenName", namespaces=NS) == "太郎"
    assert person.findtext("d:Phonetic/d:FamilyName", namespaces=NS) == "やまだ"
    values = attrs["00200032"].findall("d:Value", NS)
    assert [(v.get("number"), v.text) for v in values] == [("1", "0.0"), ("2", "-1.5"), ("3", "200.0")]
    item = attrs["00081140"].find("d:Item", NS)
    assert item is None
    code = attrs["0040A043"].find("d:Item/d:DicomAttribute[@tag='00080104']/d:Value", NS)
    assert code is not None and code.text == "Of Interest"
    assert attrs["7FE00010"].findtext("d:InlineBinary", namespaces=NS)
    assert attrs["00100030"].find("d:Value", NS) is None
    assert attrs["00091010"].get("keyword") is None


def test_multipart_related() -> None:
    body, content_type = media.multipart_related([b"<a/>", b"<b/>"], media.XML, boundary="XyZ")
    assert content_type == 'multipart/related; type="application/dicom+xml"; boundary=XyZ'
    assert body == (
        b"--XyZ\r\nContent-Type: application/dicom+xml\r\n\r\n<a/>\r\n"
        b"--XyZ\r\nContent-Type: application/dicom+xml\r\n\r\n<b/>\r\n--XyZ--\r\n"
    )


OFFERED = [media.JSON, "application/json", media.MULTIPART_XML]


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("", media.JSON),
        ("*/*", media.JSON),
        ("application/dicom+json", media.JSON),
        ("application/json", "application/json"),
        ("application/dicom+json, application/json", media.JSON),
        ('application/*;q=0.5, multipart/related; type="application/dicom+xml"', media.MULTIPART_XML),
        ('multipart/related; type="application/dicom+xml"; q=0.9, application/dicom+json; q=0.1', media.MULTIPART_XML),
        ("multipart/related; type=application/dicom+xml", media.MULTIPART_XML),
        ("multipart/related", media.MULTIPART_XML),
        ("application/dicom+json; charset=utf-8", media.JSON),
        ("application/dicom+json;q=0, */*;q=0.1", "application/json"),
        ("image/png", None),
        ('multipart/related; type="application/dicom"', None),
        ("application/dicom+xml", None),
    ],
)
def test_accepted(accept: str, expected: str | None) -> None:
    assert media.accepted(accept, OFFERED) == expected


def _request(accept: str | None, query: str = "") -> Request:
    headers = [(b"accept", accept.encode())] if accept is not None else []
    return Request({"type": "http", "method": "GET", "path": "/", "query_string": query.encode(), "headers": headers})


def test_negotiate_header_query_and_406() -> None:
    assert media.negotiate(_request(None), OFFERED) == media.JSON
    assert media.negotiate(_request("application/json"), OFFERED) == "application/json"
    query = "accept=multipart%2Frelated%3B%20type%3D%22application%2Fdicom%2Bxml%22"
    assert media.negotiate(_request("application/json", query), OFFERED) == media.MULTIPART_XML
    with pytest.raises(HTTPException) as info:
        media.negotiate(_request("text/html"), OFFERED)
    assert info.value.status_code == 406
    assert "application/dicom+json" in str(info.value.detail)
