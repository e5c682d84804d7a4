"""DICOMweb rendered / thumbnail (PS3.18 8.3.5, 10.4) and WADO-URI (PS3.18 9) against a running Pergamon.

Clients: dicomweb-client for the rendered resources, httpx for thumbnails and WADO-URI.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom import dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from samples import Sample, make_instance, pydicom_samples, storage_corpus, write

from pergamon.archive.origin import Origin

HU = {-1000: 24, -160: 864, 0: 1024, 40: 1064, 100: 1124, 240: 1264, 1000: 2024}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    root = tmp_path_factory.mktemp("corpus")
    wanted = {"examples_palette.dcm", "examples_rgb_color.dcm", "MR_small_RLE.dcm", "693_J2KR.dcm"}
    extra = [s for s in pydicom_samples(root / "pydicom") if s.origin.split(":")[1].split(" ")[0] in wanted]
    return storage_corpus(root / "synthetic") + extra


@pytest.fixture
def stored(server: Any, corpus: list[Sample]) -> dict[str, Sample]:
    """Every corpus file stored; keyed by description."""
    for sample in corpus:
        server.archive.store_file(sample.path, Origin.from_import(str(sample.path)))
    return {s.description: s for s in corpus}


@pytest.fixture
def base(server: Any) -> str:
    return f"http://127.0.0.1:{server.settings.http.port}/dicom-web"


@pytest.fixture
def client(base: str) -> Iterator[DICOMwebClient]:
    yield DICOMwebClient(url=base)


def find(stored: dict[str, Sample], prefix: str) -> Sample:
    return next(s for d, s in stored.items() if d.startswith(prefix))


def picture(content: bytes, fmt: str = "JPEG") -> Image.Image:
    image = Image.open(io.BytesIO(content))
    assert image.format == fmt
    return image


def instance_url(base: str, s: Sample) -> str:
    return f"{base}/studies/{s.study_uid}/series/{s.series_uid}/instances/{s.sop_instance_uid}"


def status_of(call: Any) -> tuple[int, str]:
    with pytest.raises(requests.HTTPError) as info:
        call()
    return info.value.response.status_code, info.value.response.text


def test_every_image_renders_and_others_are_406(server: Any, stored: dict[str, Sample], client: DICOMwebClient) -> None:
    for sample in stored.values():
        header = dcmread(sample.path, stop_before_pixels=True)
        args = (sample.study_uid, sample.series_uid, sample.sop_instance_uid)
        if sample.pixels_decodable and "Rows" in header:
            image = picture(client.retrieve_instance_rendered(*args, media_types=("image/jpeg",)))
            assert image.size == (header.Columns, header.Rows), sample.description
        else:
            status, text = status_of(lambda a=args: client.retrieve_instance_rendered(*a, media_types=("image/jpeg",)))
            assert status == 406, sample.description
            assert sample.sop_instance_uid in text and ("pixel data" in text or "video" in text or "decode" in text)
    assert httpx.get(f"http://127.0.0.1:{server.settings.http.port}/health").status_code == 200


def test_png_gif_and_compressed_sources(stored: dict[str, Sample], client: DICOMwebClient) -> None:
    for prefix in ("MG For Presentation, JPEG-LS", "DX For Presentation, JPEG 2000", "Enhanced MR (3 frames), RLE"):
        s = find(stored, prefix)
        png = picture(
            client.retrieve_instance_rendered(
                s.study_uid, s.series_uid, s.sop_instance_uid, media_types=("image/png",)
            ),
            "PNG",
        )
        assert png.mode == "L" and np.asarray(png).std() > 0
    s = find(stored, "US multi-frame (5 frames)")
    gif = picture(
        client.retrieve_instance_rendered(s.study_uid, s.series_uid, s.sop_instance_uid, media_types=("image/gif",)),
        "GIF",
    )
    assert gif.n_frames > 1


def test_palette_and_color_render_rgb(stored: dict[str, Sample], client: DICOMwebClient) -> None:
    for prefix in ("US palette color", "US single-frame RGB", "VL Photographic"):
        s = find(stored, prefix)
        image = picture(client.retrieve_instance_rendered(s.study_uid, s.series_uid, s.sop_instance_uid))
        assert image.mode == "RGB", prefix


def test_frames_rendered(stored: dict[str, Sample], client: DICOMwebClient) -> None:
    s = find(stored, "US multi-frame (3 frames), RLE")
    args = (s.study_uid, s.series_uid, s.sop_instance_uid)
    assert picture(client.retrieve_instance_frames_rendered(*args, frame_numbers=[3])).size == (64, 64)
    assert status_of(lambda: client.retrieve_instance_frames_rendered(*args, frame_numbers=[4]))[0] == 400
    animated = client.retrieve_instance_frames_rendered(*args, frame_numbers=[1, 3], media_types=("image/gif",))
    assert picture(animated, "GIF").n_frames == 2
    status, text = status_of(lambda: client.retrieve_instance_frames_rendered(*args, frame_numbers=[1, 2]))
    assert status == 406 and "image/gif" in text


def test_viewport_and_quality(stored: dict[str, Sample], client: DICOMwebClient, base: str) -> None:
    s = find(stored, "US palette color")  # 800 x 350
    args = (s.study_uid, s.series_uid, s.sop_instance_uid)
    assert picture(client.retrieve_instance_rendered(*args, params={"viewport": "100,100"})).size == (100, 44)
    region = client.retrieve_instance_rendered(*args, params={"viewport": "50,50,0,0,100,100"})
    assert picture(region).size == (50, 50)
    low = client.retrieve_instance_rendered(*args, params={"quality": "5"})
    high = client.retrieve_instance_rendered(*args, params={"quality": "95"})
    assert len(low) < len(high)
    for bad in ("viewport=0,10", "viewport=a,b", "quality=101", "window=40", "window=40,400,cubic", "annotation=x"):
        response = httpx.get(f"{instance_url(base, s)}/rendered?{bad}")
        assert response.status_code == 400, bad
        assert response.text.strip()
    response = httpx.get(f"{instance_url(base, s)}/rendered?annotation=patient")
    assert response.status_code == 200 and "annotation" in response.headers["warning"]


def ct_with(tmp_path: Path, name: str, **extra: Any) -> Path:
    row = np.array(list(HU.values()), dtype=np.uint16)
    ds = make_instance(CTImageStorage, rows=4, cols=len(HU), pixels=np.tile(row, (4, 1))[np.newaxis], extra=extra)
    return write(ds, tmp_path / name).path


def gray(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(picture(response.content, "PNG")).astype(int)


def test_window_function_and_monochrome1(server: Any, base: str, tmp_path: Path) -> None:
    paths = [ct_with(tmp_path, "m2.dcm"), ct_with(tmp_path, "m1.dcm", PhotometricInterpretation="MONOCHROME1")]
    urls = []
    for path in paths:
        server.archive.store_file(path, Origin.from_import(str(path)))
        ds = dcmread(path)
        urls.append(
            f"{base}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/rendered"
        )
    png = {"Accept": "image/png"}
    linear = gray(httpx.get(urls[0], params={"window": "40,400"}, headers=png))
    for i, hu in enumerate(HU):
        expected = 0 if hu <= -160 else 255 if hu > 239 else ((hu - 39.5) / 399 + 0.5) * 255
        assert abs(linear[0, i] - expected) <= 2, hu
    assert linear[0, list(HU).index(40)] == 128
    wide = gray(httpx.get(urls[0], params={"window": "0,2000,linear-exact"}, headers=png))
    assert abs(wide[0, list(HU).index(0)] - 127.5) <= 1 and wide[0, list(HU).index(-1000)] == 0
    sigmoid = gray(httpx.get(urls[0], params={"window": "40,400,sigmoid"}, headers=png))
    for i, hu in enumerate(HU):
        assert abs(sigmoid[0, i] - 255 / (1 + math.exp(-4 * (hu - 40) / 400))) <= 2, hu
    default = gray(httpx.get(urls[0], headers=png))  # the object's own window is 40/400
    assert np.array_equal(default, linear)
    inverted = gray(httpx.get(urls[1], params={"window": "40,400"}, headers=png))
    assert np.array_equal(inverted, 255 - linear)
    same = gray(httpx.get(urls[0], params={"window": "40,400", "accept": "image/png"}))
    assert np.array_equal(same, linear)


def test_media_type_negotiation(stored: dict[str, Sample], base: str) -> None:
    s = find(stored, "CT, Explicit VR LE")
    url = f"{instance_url(base, s)}/rendered"
    assert httpx.get(url).headers["content-type"] == "image/jpeg"
    assert httpx.get(url, headers={"Accept": "image/*"}).headers["content-type"] == "image/jpeg"
    assert httpx.get(url, headers={"Accept": "image/png;q=0.9, image/gif"}).headers["content-type"] == "image/gif"
    refused = httpx.get(url, headers={"Accept": "image/jp2"})
    assert refused.status_code == 406 and "image/jpeg" in refused.text
    pdf = find(stored, "Encapsulated PDF")
    document = httpx.get(f"{instance_url(base, pdf)}/rendered", headers={"Accept": "application/pdf"})
    assert document.status_code == 200 and document.content.startswith(b"%PDF")
    assert httpx.get(f"{instance_url(base, pdf)}/rendered", headers={"Accept": "image/jpeg"}).status_code == 406


def test_thumbnails(stored: dict[str, Sample], base: str) -> None:
    ct = find(stored, "CT, Explicit VR LE")
    us = find(stored, "US multi-frame (5 frames)")
    for url in (
        f"{base}/studies/{ct.study_uid}/thumbnail",
        f"{base}/studies/{ct.study_uid}/series/{ct.series_uid}/thumbnail",
        f"{instance_url(base, ct)}/thumbnail",
        f"{instance_url(base, us)}/thumbnail",
        f"{instance_url(base, us)}/frames/2/thumbnail",
    ):
        response = httpx.get(url)
        assert response.status_code == 200, (url, response.text)
        image = picture(response.content)
        assert max(image.size) <= 128, url
    small = httpx.get(
        f"{instance_url(base, ct)}/thumbnail", params={"viewport": "32,32"}, headers={"Accept": "image/png"}
    )
    assert picture(small.content, "PNG").size == (32, 32)
    sr = find(stored, "Basic Text SR")
    assert httpx.get(f"{instance_url(base, sr)}/thumbnail").status_code == 406
    assert httpx.get(f"{base}/studies/1.2.3.999/thumbnail").status_code == 404


def test_unknown_and_malformed_uids(stored: dict[str, Sample], base: str, client: DICOMwebClient) -> None:
    s = find(stored, "CT, Explicit VR LE")
    status, text = status_of(lambda: client.retrieve_instance_rendered(s.study_uid, s.series_uid, "1.2.3.4.5"))
    assert status == 404 and "1.2.3.4.5" in text
    bad = httpx.get(f"{base}/studies/{s.study_uid}/series/{s.series_uid}/instances/1.2.x/rendered")
    assert bad.status_code == 400


# --- WADO-URI -----------------------------------------------------------------------------------


def wado(base: str, s: Sample, **params: str) -> httpx.Response:
    query = {"requestType": "WADO", "studyUID": s.study_uid, "seriesUID": s.series_uid, "objectUID": s.sop_instance_uid}
    return httpx.get(f"{base}/", params={**query, **params})


def test_wado_uri_dicom_is_the_stored_object(stored: dict[str, Sample], base: str) -> None:
    """transferSyntax=* gives the stored file bit for bit."""
    for prefix in ("CT, Explicit VR LE", "MG For Presentation, JPEG-LS lossless", "Basic Text SR"):
        s = find(stored, prefix)
        response = wado(base, s, contentType="application/dicom", transferSyntax="*")
        assert response.status_code == 200 and response.headers["content-type"] == "application/dicom"
        assert response.content == s.path.read_bytes(), prefix
    sr = find(stored, "Basic Text SR")  # non-image default: application/dicom, already Explicit VR LE
    assert wado(base, sr).content == sr.path.read_bytes()


def test_wado_uri_dicom_defaults_to_explicit_vr_little_endian(stored: dict[str, Sample], base: str) -> None:
    """PS3.18 9.4.2.4: without transferSyntax the object leaves in Explicit VR Little Endian."""
    s = find(stored, "MG For Presentation, JPEG-LS lossless")
    response = wado(base, s, contentType="application/dicom")
    assert response.status_code == 200, response.text
    ds = dcmread(io.BytesIO(response.content))
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(ds.pixel_array, dcmread(s.path).pixel_array)


def test_wado_uri_transfer_syntax(stored: dict[str, Sample], base: str) -> None:
    s = find(stored, "MG For Presentation, JPEG-LS lossless")
    response = wado(base, s, contentType="application/dicom", transferSyntax=ExplicitVRLittleEndian)
    assert response.status_code == 200, response.text
    ds = dcmread(io.BytesIO(response.content))
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(ds.pixel_array, dcmread(s.path).pixel_array)
    assert ds.SOPInstanceUID == s.sop_instance_uid
    refused = wado(base, s, contentType="application/dicom", transferSyntax="1.2.840.10008.1.2.4.50")
    assert refused.status_code == 406 and "transferSyntax" in refused.text


def test_wado_uri_images(stored: dict[str, Sample], base: str) -> None:
    ct = find(stored, "CT, Explicit VR LE")
    default = wado(base, ct)
    assert default.status_code == 200 and default.headers["content-type"] == "image/jpeg"
    assert picture(default.content).size == (64, 64)
    png = wado(base, ct, contentType="image/png", rows="32", columns="32", windowCenter="40", windowWidth="400")
    assert picture(png.content, "PNG").size == (32, 32)
    region = wado(base, ct, contentType="image/png", region="0.0,0.0,0.5,0.25")
    assert picture(region.content, "PNG").size == (32, 16)
    us = find(stored, "US multi-frame (5 frames)")
    assert picture(wado(base, us, frameNumber="5").content).size == (64, 64)
    low, high = wado(base, ct, imageQuality="5"), wado(base, ct, imageQuality="100")
    assert len(low.content) < len(high.content)
    listed = wado(base, ct, contentType="image/jp2, image/png;q=0.5, application/dicom;q=0.1")
    assert listed.headers["content-type"] == "image/png"
    pdf = find(stored, "Encapsulated PDF")
    document = wado(base, pdf, contentType="application/pdf")
    assert document.status_code == 200 and document.content.startswith(b"%PDF")
    # the exact base path (no trailing slash) is the WADO-URI endpoint too
    exact = httpx.get(base, params=dict(wado(base, ct).request.url.params), follow_redirects=True)
    assert exact.status_code == 200 and exact.headers["content-type"] == "image/jpeg"


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"requestType": None}, "requestType"),
        ({"requestType": "WADOX"}, "requestType"),
        ({"objectUID": None}, "objectUID"),
        ({"studyUID": "1.2.abc"}, "studyUID"),
        ({"windowCenter": "40"}, "together"),
        ({"windowCenter": "40", "windowWidth": "0"}, "width"),
        ({"rows": "-1"}, "rows"),
        ({"columns": "big"}, "columns"),
        ({"region": "0.5,0.5,0.1,0.9"}, "region"),
        ({"frameNumber": "0"}, "frameNumber"),
        ({"frameNumber": "2"}, "frame 2"),
        ({"imageQuality": "0"}, "imageQuality"),
        ({"anonymize": "yes"}, "anonymize"),
        ({"presentationUID": "1.2.3"}, "presentation"),
        ({"contentType": "application/dicom", "rows": "10"}, "rows"),
        ({"contentType": "image/jpeg", "transferSyntax": "1.2.840.10008.1.2.1"}, "transferSyntax"),
    ],
)
def test_wado_uri_bad_parameters(
    server: Any, stored: dict[str, Sample], base: str, params: dict[str, str | None], fragment: str
) -> None:
    s = find(stored, "CT, Explicit VR LE")
    query = {"requestType": "WADO", "studyUID": s.study_uid, "seriesUID": s.series_uid, "objectUID": s.sop_instance_uid}
    query.update(params)  # type: ignore[arg-type]
    response = httpx.get(f"{base}/", params={k: v for k, v in query.items() if v is not None})
    assert response.status_code == 400, (params, response.text)
    assert fragment in response.text
    assert httpx.get(f"http://127.0.0.1:{server.settings.http.port}/health").status_code == 200


def test_wado_uri_unknown_object_and_non_images(stored: dict[str, Sample], base: str) -> None:
    ct = find(stored, "CT, Explicit VR LE")
    missing = httpx.get(
        f"{base}/",
        params={"requestType": "WADO", "studyUID": ct.study_uid, "seriesUID": ct.series_uid, "objectUID": "1.2.3.4"},
    )
    assert missing.status_code == 404 and "1.2.3.4" in missing.text
    sr = find(stored, "Basic Text SR")
    refused = wado(base, sr, contentType="image/jpeg")
    assert refused.status_code == 406 and "no pixel data" in refused.text and "application/dicom" in refused.text
    video = find(stored, "Video Photographic, MPEG-4")
    refused = wado(base, video, contentType="image/jpeg")
    assert refused.status_code == 406 and "video" in refused.text


def test_wado_uri_root_routes(archive: Any, stored_ct: Path) -> None:
    """`wado_uri.root_routes` (for web/app.py) answers the exact base path and /wado without a redirect."""
    import asyncio

    from starlette.applications import Starlette
    from starlette.routing import Mount

    from pergamon.web import dicomweb
    from pergamon.web.dicomweb import wado_uri
    from pergamon.web.errors import EXCEPTION_HANDLERS

    ds = dcmread(stored_ct)
    routes = [*wado_uri.root_routes(archive), Mount(archive.settings.http.base_path, routes=dicomweb.routes(archive))]
    app = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS)  # type: ignore[arg-type]
    query = {
        "requestType": "WADO",
        "studyUID": ds.StudyInstanceUID,
        "seriesUID": ds.SeriesInstanceUID,
        "objectUID": ds.SOPInstanceUID,
    }

    async def fetch(path: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://pergamon") as http:
            return await http.get(path, params=query)

    for path in (archive.settings.http.base_path, "/wado"):
        response = asyncio.run(fetch(path))
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg", path


@pytest.fixture
def stored_ct(archive: Any, tmp_path: Path) -> Path:
    path = ct_with(tmp_path, "ct.dcm")
    archive.store_file(path, Origin.from_import(str(path)))
    return path
