"""WADO-RS (PS3.18 10.4) against real clients: dicomweb-client and httpx.

A study sent by dcmtk storescu (each file in its own transfer syntax) plus pydicom's multi-frame
samples comes back: as stored bit for bit with `transfer-syntax=*`; in Explicit VR Little
Endian by default and on request with equal pixels; losslessly re-encoded on request; metadata
as PS3.18 F JSON whose BulkDataURIs give the element values; frames equal to the stored or
decoded frames; one byte range exact; ETag/304; 400/404/406/416 leave the server serving; a
200 MB study streams without the server's memory growing with it.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import httpx
import numpy as np
import pytest
import samples
from conftest import dcmtk_env, index_database, make_settings, require_tool
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames
from pydicom.filebase import DicomBytesIO
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from pergamon.archive.events import InstancesSent
from pergamon.archive.origin import Origin
from pergamon.runtime import Pergamon

pytestmark = pytest.mark.interop

PYDICOM = ["emri_small.dcm", "emri_small_RLE.dcm", "emri_small_jpeg_ls_lossless.dcm", "emri_small_jpeg_2k_lossless.dcm"]


@dataclass
class Stored:
    app: Pergamon
    study: str
    corpus: list[samples.Sample]
    extra: dict[str, Dataset]  # pydicom multi-frame samples by file name (same study)
    sent: list[InstancesSent]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.app.settings.http.port}/dicom-web"

    def client(self) -> DICOMwebClient:
        return DICOMwebClient(self.url)

    def rebase(self, uri: str) -> str:
        """A BulkDataURI as seen by dicomweb-client, which sends `Host` without the port (its bug)."""
        return uri.replace("http://127.0.0.1/", f"http://127.0.0.1:{self.app.settings.http.port}/")

    def sample(self, description: str) -> samples.Sample:
        return next(s for s in self.corpus if s.description.startswith(description))


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stored]:
    """One Pergamon holding the storage corpus (sent by storescu) and pydicom's emri_small variants."""
    require_tool("storescu")
    root = tmp_path_factory.mktemp("wado")
    corpus = samples.storage_corpus(root / "corpus")
    study = corpus[0].study_uid
    with index_database(root) as url:
        app = Pergamon(make_settings(root / "data", url))
        app.start()
        try:
            commands = samples.storescu_commands(corpus, "127.0.0.1", app.settings.dicom.port, workdir=root / "scu")
            for command in commands:
                result = subprocess.run(command, capture_output=True, text=True, env=dcmtk_env(), timeout=120)
                assert result.returncode == 0, result.stdout + result.stderr
            extra: dict[str, Dataset] = {}
            for name in PYDICOM:
                ds = dcmread(str(get_testdata_file(name)))
                ds.StudyInstanceUID = study
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
                ds.SeriesInstanceUID = generate_uid()
                path = root / name
                ds.save_as(path)
                app.archive.store_file(path, Origin.from_import(str(path)))
                extra[name] = dcmread(path)
            sent: list[InstancesSent] = []
            app.archive.bus.subscribe(lambda e: sent.append(e) if isinstance(e, InstancesSent) else None)
            yield Stored(app, study, corpus, extra, sent)
        finally:
            app.stop()


def parts(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    """The (headers, body) parts of a multipart/related response (RFC 2046 5.1.1)."""
    boundary = re.search(r"boundary=\"?([^\";]+)", response.headers["content-type"]).group(1)  # type: ignore[union-attr]
    chunks = response.content.split(b"--" + boundary.encode())
    assert chunks[0] == b"" and chunks[-1] == b"--\r\n"
    result = []
    for chunk in chunks[1:-1]:
        head, _, body = chunk[2:].partition(b"\r\n\r\n")
        assert body.endswith(b"\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        result.append(({k.lower(): v for k, v in headers.items()}, body[:-2]))
    return result


def after_meta(data: bytes) -> bytes:
    """The data set of Part-10 bytes: after preamble, DICM and the File Meta group (PS3.10 7.1)."""
    assert data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00"
    return data[144 + struct.unpack("<I", data[140:144])[0] :]


def stored_file(stored: Stored, sop_uid: str) -> Path:
    from sqlalchemy import select

    from pergamon.archive.index.schema import instance

    with stored.app.archive.db.read() as conn:
        key = conn.execute(select(instance.c.blob_key).where(instance.c.sop_uid == sop_uid)).scalar_one()
    path = stored.app.archive.blobs.path(key)
    assert path is not None
    return path


def instance_url(stored: Stored, ds: Dataset | samples.Sample) -> str:
    if isinstance(ds, samples.Sample):
        return f"{stored.url}/studies/{ds.study_uid}/series/{ds.series_uid}/instances/{ds.sop_instance_uid}"
    return f"{stored.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


# --- instances ------------------------------------------------------------------------------------


def test_study_as_stored_is_bit_for_bit(stored: Stored) -> None:
    response = httpx.get(
        f"{stored.url}/studies/{stored.study}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        timeout=60,
    )
    assert response.status_code == 200
    got = parts(response)
    assert len(got) == len(stored.corpus) + len(stored.extra)
    by_uid = {str(dcmread(DicomBytesIO(body), stop_before_pixels=True).SOPInstanceUID): (h, body) for h, body in got}
    for sample in stored.corpus:
        headers, body = by_uid[sample.sop_instance_uid]
        assert headers["content-type"] == f"application/dicom; transfer-syntax={sample.transfer_syntax}"
        assert body == stored_file(stored, sample.sop_instance_uid).read_bytes()
    # C-STORE to WADO-RS: the data set storescu sent (native CT, unchanged by dcmtk) comes back identical
    ct = stored.sample("CT, Explicit VR LE")
    assert after_meta(by_uid[ct.sop_instance_uid][1]) == after_meta(ct.path.read_bytes())
    event = stored.sent[-1]
    assert set(event.sop_instance_uids) == set(by_uid) and event.failed == 0 and event.origin.door == "http"


def test_default_is_explicit_vr_little_endian_with_equal_pixels(stored: Stored) -> None:
    client = stored.client()
    datasets = client.retrieve_series(stored.study, stored.sample("US multi-frame (5").series_uid)
    assert len(datasets) == 1
    ds = datasets[0]
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    original = dcmread(stored.sample("US multi-frame (5").path)
    assert np.array_equal(ds.pixel_array, original.pixel_array)
    # video cannot be decoded: by default it still comes, as stored
    video = stored.sample("Video Photographic, MPEG-4")
    response = httpx.get(f"{instance_url(stored, video)}", timeout=30)
    assert parts(response)[0][0]["content-type"].endswith(video.transfer_syntax)


@pytest.mark.parametrize(
    "description", ["MG For Presentation, JPEG-LS", "Enhanced MR (3 frames), RLE", "CT, JPEG Lossless SV1"]
)
def test_transcoded_to_explicit_vr_le_on_request(stored: Stored, description: str) -> None:
    sample = stored.sample(description)
    ds = stored.client().retrieve_instance(
        sample.study_uid, sample.series_uid, sample.sop_instance_uid,
        media_types=(("application/dicom", str(ExplicitVRLittleEndian)),),
    )  # fmt: skip
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.SOPInstanceUID == sample.sop_instance_uid
    assert np.array_equal(ds.pixel_array, dcmread(sample.path).pixel_array)


@pytest.mark.parametrize("target", [RLELossless, JPEGLSLossless, JPEG2000Lossless])
def test_lossless_re_encoding_on_request(stored: Stored, target: str) -> None:
    sample = stored.sample("CT, Explicit VR LE")
    ds = stored.client().retrieve_instance(
        sample.study_uid, sample.series_uid, sample.sop_instance_uid, media_types=(("application/dicom", target),)
    )
    assert ds.file_meta.TransferSyntaxUID == target
    assert np.array_equal(ds.pixel_array, dcmread(sample.path).pixel_array)


def test_not_acceptable_and_unknown(stored: Stored) -> None:
    sample = stored.sample("CT, Explicit VR LE")
    url = instance_url(stored, sample)
    jpeg = f'multipart/related; type="application/dicom"; transfer-syntax={JPEGBaseline8Bit}'
    assert httpx.get(url, headers={"Accept": jpeg}).status_code == 406
    assert httpx.get(f"{stored.url}/studies/{stored.study}", headers={"Accept": jpeg}).status_code == 406
    assert httpx.get(url, headers={"Accept": "application/json"}).status_code == 406
    missing = httpx.get(f"{stored.url}/studies/1.2.3.4.5")
    assert missing.status_code == 404 and "1.2.3.4.5" in missing.text
    assert httpx.get(f"{stored.url}/studies/{stored.study}/series/1.2.3").status_code == 404
    assert httpx.get(f"{stored.url}/studies/not-a-uid").status_code == 400
    # a video cannot be decoded: asked for explicitly, that is a 406 for the single instance
    video = stored.sample("Video Photographic, MPEG-4")
    explicit = f'multipart/related; type="application/dicom"; transfer-syntax={ExplicitVRLittleEndian}'
    assert httpx.get(instance_url(stored, video), headers={"Accept": explicit}).status_code == 406
    assert httpx.get(url).status_code == 200  # still serving


# --- metadata -------------------------------------------------------------------------------------


def test_metadata_is_dicom_json_with_resolvable_bulk_data(stored: Stored) -> None:
    client = stored.client()
    metadata = client.retrieve_study_metadata(stored.study)
    assert len(metadata) == len(stored.corpus) + len(stored.extra)
    for item in metadata:
        for key, value in item.items():
            assert re.fullmatch(r"[0-9A-F]{8}", key) and "vr" in value
            assert len(set(value) & {"Value", "InlineBinary", "BulkDataURI"}) <= 1
    by_uid = {m["00080018"]["Value"][0]: m for m in metadata}
    # native pixel data through its BulkDataURI
    ct = stored.sample("CT, Explicit VR LE")
    uri = stored.rebase(by_uid[ct.sop_instance_uid]["7FE00010"]["BulkDataURI"])
    assert client.retrieve_bulkdata(uri) == [dcmread(ct.path).PixelData]
    # a nested value (Waveform Data in Waveform Sequence)
    ecg = stored.sample("12-lead ECG")
    waveform = by_uid[ecg.sop_instance_uid]["54000100"]["Value"][0]["54001010"]
    assert client.retrieve_bulkdata(stored.rebase(waveform["BulkDataURI"])) == [
        dcmread(ecg.path).WaveformSequence[0].WaveformData
    ]
    # the whole header read back with pydicom, bulk data fetched through the URIs
    ds = Dataset.from_json(
        by_uid[ct.sop_instance_uid], bulk_data_uri_handler=lambda u: client.retrieve_bulkdata(stored.rebase(u))[0]
    )
    original = dcmread(ct.path)
    assert ds.PatientName == original.PatientName and bytes(ds.PixelData) == original.PixelData
    # encapsulated pixel data: its frames, as stored
    rle = stored.extra["emri_small_RLE.dcm"]
    series = client.retrieve_series_metadata(stored.study, rle.SeriesInstanceUID)
    assert series[0]["00083002"]["Value"] == [RLELossless]
    frames = client.retrieve_bulkdata(stored.rebase(series[0]["7FE00010"]["BulkDataURI"]))
    assert frames == list(generate_frames(rle.PixelData, number_of_frames=10))
    single = client.retrieve_instance_metadata(rle.StudyInstanceUID, rle.SeriesInstanceUID, rle.SOPInstanceUID)
    assert single["00100020"] == series[0]["00100020"]
    # with a correct Host header (httpx), the URIs are absolute and right as given
    direct = httpx.get(f"{instance_url(stored, ct)}/metadata").json()[0]["7FE00010"]["BulkDataURI"]
    assert direct == f"{instance_url(stored, ct)}/bulkdata/7FE00010"


def test_metadata_etag_and_304(stored: Stored) -> None:
    url = f"{stored.url}/studies/{stored.study}/metadata"
    first = httpx.get(url, headers={"Accept": "application/dicom+json"})
    assert first.status_code == 200 and first.headers["content-type"].startswith("application/dicom+json")
    etag = first.headers["etag"]
    again = httpx.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.headers["etag"] == etag and again.content == b""
    assert httpx.get(url, headers={"If-None-Match": 'W/"other"'}).status_code == 200
    assert httpx.get(url, headers={"Accept": "application/pdf"}).status_code == 406


def test_metadata_as_native_dicom_model_xml(stored: Stored) -> None:
    """The XML form (PS3.18 8.7.3.3 / PS3.19 A.1): one document per instance, same values and URIs as JSON."""
    url = f"{stored.url}/studies/{stored.study}/metadata"
    as_json = {m["00080018"]["Value"][0]: m for m in httpx.get(url).json()}
    response = httpx.get(url, headers={"Accept": 'multipart/related; type="application/dicom+xml"'})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith('multipart/related; type="application/dicom+xml"')
    ns = {"n": "http://dicom.nema.org/PS3.19/models/NativeDICOM"}
    documents = parts(response)
    assert len(documents) == len(as_json)
    for headers, body in documents:
        assert headers["content-type"] == "application/dicom+xml"
        root = ElementTree.fromstring(body)
        assert root.tag == f"{{{ns['n']}}}NativeDicomModel"
        sop_uid = root.find("n:DicomAttribute[@tag='00080018']/n:Value", ns).text  # type: ignore[union-attr]
        model = as_json[sop_uid]
        for tag, entry in model.items():
            node = root.find(f"n:DicomAttribute[@tag='{tag}']", ns)
            assert node is not None and node.get("vr") == entry["vr"], tag
            if "BulkDataURI" in entry:
                assert node.find("n:BulkData", ns).get("uri") == entry["BulkDataURI"]  # type: ignore[union-attr]
        name = model.get("00100010", {}).get("Value", [{}])[0].get("Alphabetic")
        if name:
            family = root.find("n:DicomAttribute[@tag='00100010']/n:PersonName/n:Alphabetic/n:FamilyName", ns)
            assert family is not None and family.text == name.split("^")[0]


# --- frames ---------------------------------------------------------------------------------------


def test_native_multiframe_frames(stored: Stored) -> None:
    ds = stored.extra["emri_small.dcm"]
    got = stored.client().retrieve_instance_frames(
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        [1, 3, 10],
        media_types=("application/octet-stream",),
    )
    assert got == [ds.pixel_array[n - 1].tobytes() for n in (1, 3, 10)]
    tomo = stored.sample("Breast Tomosynthesis")
    frames = stored.client().retrieve_instance_frames(tomo.study_uid, tomo.series_uid, tomo.sop_instance_uid, [4, 2])
    assert frames == [dcmread(tomo.path).pixel_array[n - 1].tobytes() for n in (4, 2)]


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("emri_small_RLE.dcm", "image/dicom-rle"),
        ("emri_small_jpeg_ls_lossless.dcm", "image/jls"),
        ("emri_small_jpeg_2k_lossless.dcm", "image/jp2"),
    ],
)
def test_compressed_frames_as_stored_and_decoded(stored: Stored, name: str, media_type: str) -> None:
    ds = stored.extra[name]
    syntax = str(ds.file_meta.TransferSyntaxUID)
    expected = list(generate_frames(ds.PixelData, number_of_frames=10))
    client = stored.client()
    uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert client.retrieve_instance_frames(*uids, [2, 9], media_types=((media_type, syntax),)) == [
        expected[1],
        expected[8],
    ]
    assert client.retrieve_instance_frames(*uids, [5]) == [expected[4]]  # `type="*/*"`: as stored
    decoded = client.retrieve_instance_frames(*uids, [1, 10], media_types=("application/octet-stream",))
    assert decoded == [ds.pixel_array[0].tobytes(), ds.pixel_array[9].tobytes()]
    response = httpx.get(f"{instance_url(stored, ds)}/frames/1", headers={"Accept": "image/jpeg"})
    assert response.status_code == 406
    single = httpx.get(f"{instance_url(stored, ds)}/frames/3", headers={"Accept": media_type})
    assert single.status_code == 200 and single.content == expected[2]
    assert single.headers["content-type"] == f"{media_type}; transfer-syntax={syntax}"


def test_bad_frame_requests(stored: Stored) -> None:
    url = instance_url(stored, stored.extra["emri_small.dcm"])
    assert httpx.get(f"{url}/frames/0").status_code == 400
    assert httpx.get(f"{url}/frames/1,x").status_code == 400
    beyond = httpx.get(f"{url}/frames/11")
    assert beyond.status_code == 404 and "10 frame" in beyond.text
    unknown = url.rsplit("/", 1)[0] + "/1.2.3.4.5.999"  # not url[:-3] + "999": a UID may end in 999
    assert httpx.get(f"{unknown}/frames/1").status_code == 404
    sr = stored.sample("Basic Text SR")
    assert httpx.get(f"{instance_url(stored, sr)}/frames/1").status_code == 404
    assert httpx.get(f"{url}/frames/1,2").status_code == 200


# --- bulk data and ranges -------------------------------------------------------------------------


def test_byte_range_on_bulk_data(stored: Stored) -> None:
    ct = stored.sample("CT, Explicit VR LE")
    pixels = dcmread(ct.path).PixelData
    url = f"{instance_url(stored, ct)}/bulkdata/7FE00010"
    single = httpx.get(url, headers={"Accept": "application/octet-stream", "Range": "bytes=100-199"})
    assert single.status_code == 206 and single.content == pixels[100:200]
    assert single.headers["content-range"] == f"bytes 100-199/{len(pixels)}"
    suffix = httpx.get(url, headers={"Accept": "application/octet-stream", "Range": "bytes=-10"})
    assert suffix.status_code == 206 and suffix.content == pixels[-10:]
    whole = httpx.get(url, headers={"Accept": "application/octet-stream"})
    assert whole.status_code == 200 and whole.content == pixels
    assert stored.client().retrieve_bulkdata(url, byte_range=(10, 19)) == [pixels[10:20]]
    outside = httpx.get(url, headers={"Range": f"bytes={len(pixels)}-"})
    assert outside.status_code == 416 and outside.headers["content-range"] == f"bytes */{len(pixels)}"
    assert httpx.get(f"{instance_url(stored, ct)}/bulkdata/00100010x").status_code == 400
    assert httpx.get(f"{instance_url(stored, ct)}/bulkdata/00420011").status_code == 404


# --- memory ---------------------------------------------------------------------------------------


def _rss_kib() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]


def test_a_200_mb_study_streams_in_bounded_memory(stored: Stored, tmp_path: Path) -> None:
    big = samples.big_multiframe(tmp_path / "big", 200 * 1024 * 1024, fill="pattern")
    stored.app.archive.store_file(big.path, Origin.from_import(str(big.path)))
    size = big.path.stat().st_size
    before = _rss_kib()
    out = tmp_path / "out.bin"
    written = 0
    headers = {
        "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*',
        "Accept-Encoding": "identity",
    }
    with httpx.stream("GET", f"{stored.url}/studies/{big.study_uid}", headers=headers, timeout=120) as response:
        assert response.status_code == 200
        with out.open("wb") as f:
            for chunk in response.iter_bytes():
                written += f.write(chunk)
    grown_mib = (_rss_kib() - before) / 1024
    assert written > size
    assert grown_mib < 100, f"server RSS grew by {grown_mib:.0f} MiB while streaming {size >> 20} MiB"
    shutil.rmtree(tmp_path / "big")
