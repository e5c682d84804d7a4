"""`archive/wic.py`: JSON metadata + JPEG / PNG / MP4 / PDF bulk data -> DICOM (PS3.18 §10.5, IHE WIC).

Each built object is read back with pydicom (identifiers, pixel description, the bulk data
encapsulated unchanged) and validated with dicom3tools `dciodvfy` when it is installed
(`apt-get install dicom3tools`; skipped otherwise, failed on CI with PERGAMON_TEST_REQUIRE_PEERS=1).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import wic_media
from conftest import require_tool
from pydicom import dcmread
from pydicom.encaps import generate_fragments
from pydicom.uid import HEVCMP51, MPEG4HP41, MPEG4HP422D, ExplicitVRLittleEndian, JPEGBaseline8Bit

from pergamon.archive import errors, wic

STUDY = "1.2.826.0.1.3680043.8.498.1"


def metadata(bulk_tag: str = "7FE00010", uri: str = "bulk", **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller^Anna"}]},
        "00100020": {"vr": "LO", "Value": ["WIC-1"]},
        "00080020": {"vr": "DA", "Value": ["20240102"]},
        "00080030": {"vr": "TM", "Value": ["101500"]},
        "00200010": {"vr": "SH", "Value": ["1"]},
        "00200011": {"vr": "IS", "Value": [1]},
        "00200013": {"vr": "IS", "Value": [1]},
        bulk_tag: {"vr": "OB", "BulkDataURI": uri},
    }
    item.update(extra)
    return item


def build(tmp_path: Path, content: bytes, item: dict[str, Any], **kwargs: Any) -> wic.Built:
    (tmp_path / "bulk").write_bytes(content)
    return wic.build_instance(
        item, lambda uri: wic.BulkData(tmp_path / uri) if (tmp_path / uri).exists() else None,
        tmp_path / "out.dcm", **kwargs,
    )  # fmt: skip


def dciodvfy_errors(path: Path) -> list[str]:
    if shutil.which("dciodvfy") is None:
        require_tool("dciodvfy")
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def test_jpeg_becomes_vl_photographic_with_the_jpeg_unchanged(tmp_path: Path) -> None:
    jpeg = wic_media.jpeg(64, 48)
    built = build(tmp_path, jpeg, metadata(), study_uid=STUDY)
    ds = dcmread(built.path)
    assert ds.SOPClassUID == wic.VL_PHOTOGRAPHIC
    assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert ds.StudyInstanceUID == STUDY and ds.SeriesInstanceUID and ds.SOPInstanceUID
    assert (ds.Rows, ds.Columns, ds.SamplesPerPixel) == (48, 64, 3)
    assert ds.PhotometricInterpretation == "YBR_FULL_422"
    assert str(ds.PatientName) == "Müller^Anna" and ds.Modality == "XC"
    fragments = list(generate_fragments(ds.PixelData))[1:]  # after the Basic Offset Table
    assert len(fragments) == 1 and fragments[0][: len(jpeg)] == jpeg and len(fragments[0]) - len(jpeg) <= 1
    assert ds.pixel_array.shape == (48, 64, 3)  # decodable as stored
    assert dciodvfy_errors(built.path) == []


def test_grayscale_and_444_jpeg(tmp_path: Path) -> None:
    ds = dcmread(build(tmp_path, wic_media.jpeg(mode="L"), metadata()).path)
    assert (ds.SOPClassUID, ds.PhotometricInterpretation, ds.SamplesPerPixel) == (
        wic.VL_PHOTOGRAPHIC,
        "MONOCHROME2",
        1,
    )
    # YBR_FULL is not allowed by the VL Image Module: Secondary Capture instead
    built = build(tmp_path, wic_media.jpeg(subsampling=0), metadata())
    ds = dcmread(built.path)
    assert (ds.SOPClassUID, ds.PhotometricInterpretation) == (wic.SECONDARY_CAPTURE, "YBR_FULL")
    # dciodvfy knows YBR_FULL only for native pixels; PS3.5 §8.2.1 gives it to 4:4:4 JPEG
    assert [e for e in dciodvfy_errors(built.path) if "<YBR_FULL>" not in e] == []


def test_png_is_decoded_losslessly(tmp_path: Path) -> None:
    content, pixels = wic_media.png(40, 30)
    built = build(tmp_path, content, metadata())
    ds = dcmread(built.path)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.PhotometricInterpretation == "RGB" and ds.LossyImageCompression == "00"
    assert np.array_equal(ds.pixel_array, pixels)
    assert dciodvfy_errors(built.path) == []


def test_mp4_becomes_video_photographic(tmp_path: Path) -> None:
    content = wic_media.mp4(320, 240, frames=50, fps=25)
    anatomy = {"vr": "SQ", "Value": [{
        "00080100": {"vr": "SH", "Value": ["39937001"]},
        "00080102": {"vr": "SH", "Value": ["SCT"]},
        "00080104": {"vr": "LO", "Value": ["Skin"]},
    }]}  # fmt: skip
    built = build(tmp_path, content, metadata(**{"00082218": anatomy}))
    ds = dcmread(built.path)
    assert ds.SOPClassUID == wic.VIDEO_PHOTOGRAPHIC
    assert ds.file_meta.TransferSyntaxUID == MPEG4HP41
    assert (ds.Rows, ds.Columns, ds.NumberOfFrames) == (240, 320, 50)
    assert float(ds.FrameTime) == pytest.approx(40.0)
    assert ds.PhotometricInterpretation == "YBR_PARTIAL_420"
    fragments = list(generate_fragments(ds.PixelData))[1:]  # after the Basic Offset Table
    assert len(fragments) == 1 and fragments[0][: len(content)] == content
    assert dciodvfy_errors(built.path) == []


def test_video_transfer_syntax_follows_the_stream() -> None:
    info = wic.VideoInfo("avc", 100, 42, 1080, 1920, 10, 1.0)
    assert wic.video_transfer_syntax(info) == MPEG4HP422D
    assert wic.video_transfer_syntax(wic.VideoInfo("hevc", 1, 120, 1080, 1920, 10, 1.0)) == HEVCMP51
    with pytest.raises(wic.UnsupportedContent):
        wic.video_transfer_syntax(wic.VideoInfo("avc", 100, 51, 2160, 3840, 10, 1.0))
    with pytest.raises(wic.UnsupportedContent):
        wic.video_transfer_syntax(wic.VideoInfo("avc", 110, 41, 1080, 1920, 10, 1.0))  # High 10


def test_pdf_becomes_encapsulated_pdf(tmp_path: Path) -> None:
    content = wic_media.pdf()
    built = build(tmp_path, content, metadata("00420011", **{"00420010": {"vr": "ST", "Value": ["Consent"]}}))
    ds = dcmread(built.path)
    assert ds.SOPClassUID == wic.ENCAPSULATED_PDF
    assert ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert ds.EncapsulatedDocument[: len(content)] == content
    assert ds.EncapsulatedDocumentLength == len(content)
    assert dciodvfy_errors(built.path) == []


def test_declared_media_type_is_not_trusted(tmp_path: Path) -> None:
    """A JPEG declared as image/png is still a JPEG (detected from the bytes)."""
    (tmp_path / "bulk").write_bytes(wic_media.jpeg())
    built = wic.build_instance(metadata(), lambda uri: wic.BulkData(tmp_path / uri, "image/png"), tmp_path / "out.dcm")
    assert built.transfer_syntax == JPEGBaseline8Bit


def test_supplied_uids_are_kept(tmp_path: Path) -> None:
    uids = {
        "0020000D": {"vr": "UI", "Value": ["1.2.3.4"]},
        "0020000E": {"vr": "UI", "Value": ["1.2.3.4.5"]},
        "00080018": {"vr": "UI", "Value": ["1.2.3.4.5.6"]},
    }
    ds = dcmread(build(tmp_path, wic_media.jpeg(), metadata(**uids), study_uid=STUDY).path)
    assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID) == ("1.2.3.4", "1.2.3.4.5", "1.2.3.4.5.6")


@pytest.mark.parametrize(
    ("content", "item", "error"),
    [
        (b"GIF89a....", metadata(), wic.UnsupportedContent),
        (wic_media.pdf(), metadata(), wic.UnsupportedContent),  # a PDF is no pixel data
        (wic_media.jpeg(), metadata(uri="missing"), errors.InvalidDataset),
        (wic_media.jpeg(), {"00100010": {"vr": "XX", "Value": [1]}}, errors.InvalidDataset),
        (wic_media.jpeg(), ["not", "an", "object"], errors.InvalidDataset),
        (wic_media.jpeg()[:100], metadata(), errors.InvalidDataset),  # cut before its frame header
    ],
)
def test_bad_input_raises(tmp_path: Path, content: bytes, item: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        build(tmp_path, content, item)
