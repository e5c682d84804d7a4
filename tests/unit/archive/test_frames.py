"""archive.frames: frames and bulk values read by offset from stored files, checked against pydicom.

Native frames must equal the slices of the decoded pixel array, encapsulated frames the frames
pydicom splits from the whole Pixel Data, decoded frames the pixel array; the same from a Dataset
(a coerced object); bulk values by tag path equal the element values.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames
from pydicom.pixels import pack_bits
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from pergamon.archive import errors, frames


def _file(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not installed")
    return Path(str(path))


def test_native_multiframe_frames_equal_the_pixel_array() -> None:
    path = _file("emri_small.dcm")
    header = frames.read_header(path)
    arr = dcmread(path).pixel_array
    assert header.number_of_frames == 10 and not header.encapsulated
    assert header.pixel is not None and header.pixel.length == arr.nbytes
    for number in (1, 5, 10):
        assert frames.read_frame(header, number) == arr[number - 1].astype("<u2").tobytes()
    assert "PixelData" not in header.dataset  # the header never holds the pixel data


@pytest.mark.parametrize(
    "name", ["emri_small_RLE.dcm", "emri_small_jpeg_ls_lossless.dcm", "emri_small_jpeg_2k_lossless.dcm"]
)
def test_encapsulated_frames_are_the_stored_frames_and_decode_to_the_pixels(name: str) -> None:
    path = _file(name)
    ds = dcmread(path)
    stored = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    header = frames.read_header(path)
    assert header.encapsulated and header.number_of_frames == len(stored) == 10
    for number in (1, 2, 10):
        assert frames.read_frame(header, number) == stored[number - 1]
        assert frames.decode_frame(header, number) == ds.pixel_array[number - 1].astype("<u2").tobytes()
    assert list(frames.iter_frames(header, [3, 1])) == [stored[2], stored[0]]


def test_frames_from_a_coerced_dataset() -> None:
    path = _file("emri_small_RLE.dcm")
    ds = dcmread(path)
    header = frames.read_header(ds)
    expected = list(generate_frames(ds.PixelData, number_of_frames=10))
    assert header.encapsulated and frames.read_frame(header, 4) == expected[3]
    native = frames.read_header(dcmread(_file("emri_small.dcm")))
    assert frames.read_frame(native, 2) == dcmread(_file("emri_small.dcm")).pixel_array[1].tobytes()


def test_one_bit_frames_that_do_not_start_on_a_byte(tmp_path: Path) -> None:
    ds = dcmread(_file("liver.dcm"))
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 2, (3, 5, 3), dtype=np.uint8)  # 15 bits per frame
    ds.Rows, ds.Columns, ds.NumberOfFrames = 5, 3, 3
    ds.PixelData = pack_bits(arr)
    ds.SOPInstanceUID = generate_uid()
    path = tmp_path / "seg.dcm"
    ds.save_as(path)
    header = frames.read_header(path)
    for number in (1, 2, 3):
        assert frames.read_frame(header, number) == pack_bits(arr[number - 1])


def test_frame_numbers_beyond_the_instance_and_objects_without_pixels() -> None:
    header = frames.read_header(_file("emri_small.dcm"))
    with pytest.raises(frames.FrameNotFound, match="11"):
        frames.read_frame(header, 11)
    ecg = frames.read_header(_file("waveform_ecg.dcm"))
    assert ecg.number_of_frames == 0
    with pytest.raises(errors.NotFound, match="no pixel data"):
        frames.check_frame_numbers(ecg, [1])


def test_bulk_values_by_tag_path(tmp_path: Path) -> None:
    path = _file("waveform_ecg.dcm")
    ds = dcmread(path)
    header = frames.read_header(path)
    waveform = frames.bulk_value(header, frames.parse_tag_path("54000100/1/54001010"))
    assert waveform.data == ds.WaveformSequence[0].WaveformData
    pixel = frames.bulk_value(frames.read_header(_file("emri_small.dcm")), (0x7FE00010,))
    assert pixel.path is not None and pixel.length == 10 * 64 * 64 * 2
    with open(pixel.path, "rb") as f:
        f.seek(pixel.offset)
        assert f.read(pixel.length) == dcmread(_file("emri_small.dcm")).PixelData
    # a large top-level value is deferred by the header and read from the file
    copy = tmp_path / "overlay.dcm"
    shutil.copy(_file("MR-SIEMENS-DICOM-WithOverlays.dcm"), copy)
    header = frames.read_header(copy)
    overlay = frames.bulk_value(header, (0x60003000,))
    assert overlay.path == copy and overlay.length > frames.BULK_THRESHOLD
    with open(copy, "rb") as f:
        f.seek(overlay.offset)
        assert f.read(overlay.length) == dcmread(copy)[0x60003000].value
    with pytest.raises(errors.NotFound):
        frames.bulk_value(header, (0x00420011,))
    with pytest.raises(errors.NotFound):
        frames.bulk_value(frames.read_header(path), frames.parse_tag_path("54000100/9/54001010"))


@pytest.mark.parametrize("text", ["", "7FE0001", "7FE00010/0/00100010", "xyz", "00540016/1"])
def test_bad_tag_paths(text: str) -> None:
    with pytest.raises(errors.Invalid):
        frames.parse_tag_path(text)


def test_tag_path_round_trip() -> None:
    assert frames.parse_tag_path("00540016/2/00181074") == (0x00540016, (2, 0x00181074))
    assert frames.format_tag_path([0x00540016, 2, 0x00181074]) == "00540016/2/00181074"
    assert str(frames.read_header(_file("emri_small.dcm")).transfer_syntax) == ExplicitVRLittleEndian
