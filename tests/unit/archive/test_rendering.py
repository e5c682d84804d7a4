"""The rendering pipeline (archive/rendering.py): PS3.3 C.11 VOI functions, photometrics, geometry."""

from __future__ import annotations

import io
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import (
    MPEG4HP41,
    BasicTextSRStorage,
    CTImageStorage,
    EncapsulatedPDFStorage,
    ExplicitVRLittleEndian,
    RLELossless,
    TwelveLeadECGWaveformStorage,
    UltrasoundMultiFrameImageStorage,
    VideoPhotographicImageStorage,
)
from samples import make_instance, write

from pergamon.archive import errors
from pergamon.archive.rendering import (
    NotRenderable,
    Region,
    RenderParams,
    Window,
    apply_window,
    frame_attributes,
    render,
)

# HU value -> stored value for the synthetic CT (Rescale Intercept -1024, slope 1)
HU = {-1000: 24, -160: 864, 0: 1024, 40: 1064, 100: 1124, 239: 1263, 240: 1264, 1000: 2024}


def ct_file(tmp_path: Path, **extra: object) -> Path:
    """A 4x8 CT whose columns hold the HU values of `HU` (same in every row)."""
    row = np.array(list(HU.values()), dtype=np.uint16)
    pixels = np.tile(row, (4, 1))[np.newaxis]
    ds = make_instance(CTImageStorage, rows=4, cols=8, pixels=pixels, extra=extra or None)
    return write(ds, tmp_path / "ct.dcm").path


def png_pixels(content: bytes) -> np.ndarray:
    picture = Image.open(io.BytesIO(content))
    assert picture.format == "PNG"
    return np.asarray(picture)


def column(arr: np.ndarray, hu: int) -> int:
    return int(arr[0, list(HU).index(hu)])


def linear(x: float, c: float, w: float) -> float:
    """PS3.3 C.11.2.1.2.1, written out once more for the tests."""
    if x <= c - 0.5 - (w - 1) / 2:
        return 0
    if x > c - 0.5 + (w - 1) / 2:
        return 255
    return ((x - (c - 0.5)) / (w - 1) + 0.5) * 255


def test_stored_window_and_rescale(tmp_path: Path) -> None:
    arr = png_pixels(render(ct_file(tmp_path), RenderParams(media_type="image/png")))
    assert arr.shape == (4, 8)
    for hu in HU:
        assert abs(column(arr, hu) - linear(hu, 40, 400)) <= 1, hu
    assert column(arr, -160) == 0 and column(arr, 240) == 255 and column(arr, 40) == 128


def test_requested_window_overrides_the_stored_one(tmp_path: Path) -> None:
    window = Window(0, 2000)
    arr = png_pixels(render(ct_file(tmp_path), RenderParams(media_type="image/png", window=window)))
    for hu in HU:
        assert abs(column(arr, hu) - linear(hu, 0, 2000)) <= 1, hu


def test_linear_exact_and_sigmoid_formulas() -> None:
    x = np.array([-1000.0, -160.0, 0.0, 40.0, 100.0, 240.0, 1000.0])
    exact = apply_window(x, Window(40, 400, "LINEAR_EXACT"))
    expected = [0 if v <= -160 else 255 if v > 240 else ((v - 40) / 400 + 0.5) * 255 for v in x]
    assert np.allclose(exact, expected)
    sigmoid = apply_window(x, Window(40, 400, "SIGMOID"))
    assert np.allclose(sigmoid, [255 / (1 + math.exp(-4 * (v - 40) / 400)) for v in x])
    assert sigmoid[3] == pytest.approx(127.5)


def test_sigmoid_in_the_rendered_image(tmp_path: Path) -> None:
    params = RenderParams(media_type="image/png", window=Window(40, 400, "SIGMOID"))
    arr = png_pixels(render(ct_file(tmp_path), params))
    for hu in HU:
        assert abs(column(arr, hu) - 255 / (1 + math.exp(-4 * (hu - 40) / 400))) <= 1, hu


def test_stored_voi_lut_function(tmp_path: Path) -> None:
    path = ct_file(tmp_path, VOILUTFunction="SIGMOID")
    arr = png_pixels(render(path, RenderParams(media_type="image/png")))
    assert abs(column(arr, 100) - 255 / (1 + math.exp(-4 * 60 / 400))) <= 1


def test_min_max_when_the_object_has_no_voi(tmp_path: Path) -> None:
    ds = dcmread(ct_file(tmp_path))
    del ds.WindowCenter, ds.WindowWidth
    arr = png_pixels(render(ds, RenderParams(media_type="image/png")))
    assert column(arr, -1000) == 0 and column(arr, 1000) == 255


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    mono2 = png_pixels(render(ct_file(tmp_path), RenderParams(media_type="image/png")))
    ds = dcmread(ct_file(tmp_path))
    ds.PhotometricInterpretation = "MONOCHROME1"
    mono1 = png_pixels(render(ds, RenderParams(media_type="image/png")))
    assert np.array_equal(mono1.astype(int), 255 - mono2.astype(int))


def test_invalid_windows_are_refused() -> None:
    with pytest.raises(errors.Invalid, match=">= 1"):
        Window(40, 0.5)
    with pytest.raises(errors.Invalid, match="> 0"):
        Window(40, 0, "SIGMOID")
    with pytest.raises(errors.Invalid, match="function"):
        Window(40, 400, "CUBIC")


def test_enhanced_multiframe_uses_functional_groups(tmp_path: Path) -> None:
    path = Path(str(get_testdata_file("eCT_Supplemental.dcm")))
    attrs = frame_attributes(dcmread(path, stop_before_pixels=True), 0)
    assert "RescaleIntercept" in attrs and "WindowCenter" in attrs
    picture = Image.open(io.BytesIO(render(path, RenderParams(media_type="image/png"), [2])))
    assert picture.size == (512, 512)


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("examples_palette.dcm", "RGB"),
        ("examples_rgb_color.dcm", "RGB"),
        ("examples_ybr_color.dcm", "RGB"),
        ("MR_small_RLE.dcm", "L"),
        ("MR_small_jpeg_ls_lossless.dcm", "L"),
        ("693_J2KR.dcm", "L"),
        ("vlut_04.dcm", "L"),
        ("mlut_18.dcm", "L"),
    ],
)
def test_photometrics_and_codecs(name: str, mode: str) -> None:
    path = Path(str(get_testdata_file(name)))
    header = dcmread(path, stop_before_pixels=True)
    picture = Image.open(io.BytesIO(render(path, RenderParams(media_type="image/png"))))
    assert picture.mode == mode
    assert picture.size == (header.Columns, header.Rows)
    arr = np.asarray(picture)
    assert arr.max() > arr.min()  # not a blank image


def test_palette_color_follows_the_lookup_table() -> None:
    path = Path(str(get_testdata_file("examples_palette.dcm")))
    ds = dcmread(path)
    stored = ds.pixel_array
    arr = np.asarray(Image.open(io.BytesIO(render(path, RenderParams(media_type="image/png")))))
    red = np.frombuffer(ds.RedPaletteColorLookupTableData, dtype="<u2")
    y, x = np.unravel_index(int(np.argmax(stored)), stored.shape)
    assert abs(int(arr[y, x, 0]) - round(int(red[stored[y, x]]) / 257)) <= 1


def test_viewport_fits_and_keeps_the_aspect_ratio() -> None:
    path = Path(str(get_testdata_file("examples_palette.dcm")))  # 800 x 350
    picture = Image.open(io.BytesIO(render(path, RenderParams(viewport=(200, 200)))))
    assert picture.format == "JPEG" and picture.size == (200, 88)
    only_height = Image.open(io.BytesIO(render(path, RenderParams(viewport=(None, 700)))))
    assert only_height.size == (1600, 700)
    thumb = Image.open(io.BytesIO(render(path, RenderParams(viewport=(1000, 1000), upscale=False))))
    assert thumb.size == (800, 350)


def test_region_crops_and_negative_size_flips(tmp_path: Path) -> None:
    path = ct_file(tmp_path)
    whole = png_pixels(render(path, RenderParams(media_type="image/png")))
    part = png_pixels(render(path, RenderParams(media_type="image/png", region=Region(2, 0, 3, 4))))
    assert np.array_equal(part, whole[:, 2:5])
    flipped = png_pixels(render(path, RenderParams(media_type="image/png", region=Region(5, 0, -3, 4))))
    assert np.array_equal(flipped, whole[:, 2:5][:, ::-1])
    half = png_pixels(render(path, RenderParams(media_type="image/png", region=Region(0, 0, 0.5, 1, relative=True))))
    assert np.array_equal(half, whole[:, :4])
    with pytest.raises(errors.Invalid, match="outside"):
        render(path, RenderParams(region=Region(100, 100, 5, 5)))


def test_quality_changes_the_jpeg_size() -> None:
    path = Path(str(get_testdata_file("CT_small.dcm")))
    low = render(path, RenderParams(quality=10))
    high = render(path, RenderParams(quality=100))
    assert len(low) < len(high)


def test_frames_gif_animation_and_errors(tmp_path: Path) -> None:
    ds = make_instance(UltrasoundMultiFrameImageStorage, frames=3, rows=16, cols=16, transfer_syntax=RLELossless)
    path = write(ds, tmp_path / "us.dcm").path
    gif = Image.open(io.BytesIO(render(path, RenderParams(media_type="image/gif"))))
    assert gif.format == "GIF" and gif.n_frames == 3
    still = Image.open(io.BytesIO(render(path, RenderParams(media_type="image/gif"), animate=False)))
    assert still.n_frames == 1
    assert Image.open(io.BytesIO(render(path, RenderParams(), [3]))).size == (16, 16)
    with pytest.raises(errors.Invalid, match="frame 4 does not exist"):
        render(path, RenderParams(), [4])
    with pytest.raises(errors.Invalid, match="image/gif"):
        render(path, RenderParams(), [1, 2])


def test_objects_without_an_image_are_not_renderable(tmp_path: Path) -> None:
    ct = make_instance(CTImageStorage)
    for sop_class, syntax, message in (
        (BasicTextSRStorage, ExplicitVRLittleEndian, "no pixel data"),
        (EncapsulatedPDFStorage, ExplicitVRLittleEndian, "no pixel data"),
        (TwelveLeadECGWaveformStorage, ExplicitVRLittleEndian, "no pixel data"),
        (VideoPhotographicImageStorage, MPEG4HP41, "video"),
    ):
        ds = make_instance(sop_class, transfer_syntax=syntax, references=[ct])
        path = write(ds, tmp_path / f"{sop_class}.dcm").path
        with pytest.raises(NotRenderable, match=message):
            render(path, RenderParams())


def test_deflated_source(tmp_path: Path) -> None:
    path = tmp_path / "dfl.dcm"
    shutil.copy(str(get_testdata_file("image_dfl.dcm")), path)
    assert Image.open(io.BytesIO(render(path, RenderParams()))).format == "JPEG"


def test_params_are_checked() -> None:
    with pytest.raises(errors.Invalid, match="quality"):
        RenderParams(quality=0)
    with pytest.raises(errors.Invalid, match="cannot render"):
        RenderParams(media_type="image/jp2")
    with pytest.raises(errors.Invalid, match="viewport"):
        RenderParams(viewport=(0, 10))


@pytest.mark.parametrize(
    ("dtype", "slope", "intercept", "window", "photometric", "stored_window"),
    [
        (np.int16, 1.0, -1024.0, None, "MONOCHROME2", (40.0, 400.0)),  # CT with its stored window
        (np.uint16, 1.0, 0.0, Window(600.0, 1200.0, "LINEAR_EXACT"), "MONOCHROME2", None),
        (np.uint16, 0.5, 10.0, Window(300.0, 50.0, "SIGMOID"), "MONOCHROME1", None),
        (np.int16, -2.0, 5.0, None, "MONOCHROME2", None),  # min/max fallback, a falling rescale
        (np.uint8, 1.0, 0.0, None, "MONOCHROME1", (100.0, 1.0)),  # a window of width 1
    ],
)
def test_mapping_the_value_range_renders_what_mapping_every_pixel_does(
    dtype: type, slope: float, intercept: float, window: Window | None, photometric: str,
    stored_window: tuple[float, float] | None,
) -> None:  # fmt: skip
    """`to_display` maps the range of stored values once and looks each pixel up; the image is unchanged."""
    from pydicom import Dataset

    from pergamon.archive import rendering

    rng = np.random.default_rng(7)
    info = np.iinfo(dtype)
    arr = rng.integers(max(info.min, -2000), min(info.max, 3000), size=(128, 96), endpoint=True).astype(dtype)
    header = Dataset()
    header.PhotometricInterpretation = photometric
    header.RescaleSlope, header.RescaleIntercept = slope, intercept
    if stored_window:
        header.WindowCenter, header.WindowWidth = stored_window
    assert rendering._lookup_range(arr, rendering.frame_attributes(header, 0)) is not None
    direct = rendering._gray(arr, rendering.frame_attributes(header, 0), window, photometric)
    assert np.array_equal(rendering.to_display(header, arr, 0, window), direct)
