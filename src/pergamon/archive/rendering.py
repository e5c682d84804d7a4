"""Rendering: the pixels of a stored instance turned into an 8-bit JPEG, PNG or GIF image.

Protocol-free back end of DICOMweb Retrieve Rendered / Thumbnail (PS3.18 8.3.5, 10.4.1.1.3) and
of WADO-URI (PS3.18 9). The grayscale pipeline follows PS3.3 C.11 (Figure C.11-1a):

1. Modality LUT (PS3.3 C.11.1): Rescale Slope / Intercept or the Modality LUT Sequence, taken
   from the top level or, for enhanced multi-frame objects, from the Pixel Value Transformation
   functional group of the frame (PS3.3 C.7.6.16.2.9).
2. VOI LUT (PS3.3 C.11.2): the window asked for; else the object's first Window Center / Width
   (top level or Frame VOI LUT functional group); else its first VOI LUT Sequence item; else the
   frame's own minimum and maximum. The window functions LINEAR, LINEAR_EXACT and SIGMOID are the
   formulas of PS3.3 C.11.2.1.2 with an output range of 0..255.
3. Presentation LUT: MONOCHROME1 is inverted (PS3.3 C.7.6.3.1.2: the minimum is white).

Color images leave the decoder as RGB (pydicom converts YBR_FULL / YBR_FULL_422 and the codecs
undo YBR_ICT / YBR_RCT) and are scaled to 8 bits; PALETTE COLOR goes through its lookup tables
(PS3.3 C.7.6.3.1.5, `pydicom.pixels.apply_color_lut`). A requested window is ignored on color.

Geometry: an optional source region (in source pixels, PS3.18 8.3.5.1.3 `viewport` sx,sy,sw,sh;
a negative width or height flips) or a relative region (WADO-URI `region`, PS3.18 9),
then scaling to fit a viewport with the aspect ratio kept. Pixel Aspect Ratio is not applied.

Pillow encodes; `quality` applies to JPEG only. GIF may hold several frames (an animation).
Decoding is CPU work: the callers run `render` in a worker thread.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydicom import Dataset, dcmread
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, pixel_array
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, MPEGTransferSyntaxes

from pergamon.archive import codecs, errors

MEDIA_TYPES: dict[str, str] = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF"}
"""Rendered media types Pergamon produces (PS3.18 Table 8.7.4-1) and their Pillow format."""

VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
"""VOI LUT Function values (PS3.3 C.11.2.1.3)."""

DEFAULT_JPEG_QUALITY = 90
MAX_DIMENSION = 16384
"""Largest width or height a caller may ask for (a guard against memory exhaustion)."""

_VIDEO_SYNTAXES = frozenset(
    str(ts) for ts in MPEGTransferSyntaxes
)  # MPEG-2, MPEG-4 AVC/H.264 and HEVC/H.265 (PS3.5 A.4.5, A.4.6, A.4.7)

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_FRAME_KEYWORDS = (
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "ModalityLUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "VOILUTSequence",
)
_FRAME_GROUPS = ("PixelValueTransformationSequence", "FrameVOILUTSequence")


class NotRenderable(errors.Invalid):
    """The object has no image to render (SR, document, waveform), or its pixels cannot be decoded."""

    code = "not-renderable"


@dataclass(frozen=True)
class Window:
    """A VOI window (PS3.3 C.11.2.1.2): center, width and function, in modality units."""

    center: float
    width: float
    function: str = "LINEAR"

    def __post_init__(self) -> None:
        if self.function not in VOI_FUNCTIONS:
            raise errors.Invalid(f"VOI LUT function {self.function!r} is not one of {', '.join(VOI_FUNCTIONS)}")
        if not (math.isfinite(self.center) and math.isfinite(self.width)):
            raise errors.Invalid("window center and width must be finite numbers")
        minimum = 1.0 if self.function == "LINEAR" else 0.0
        if self.width < minimum or (minimum == 0.0 and self.width <= 0):
            bound = ">= 1" if self.function == "LINEAR" else "> 0"
            raise errors.Invalid(f"window width {self.width:g} must be {bound} for {self.function} (PS3.3 C.11.2.1.2)")


@dataclass(frozen=True)
class Region:
    """A part of the source image: x, y, width, height in source pixels, or fractions if `relative`.

    A negative width or height selects leftwards or upwards and flips the result (PS3.18 8.3.5.1.3).
    """

    x: float
    y: float
    width: float
    height: float
    relative: bool = False


@dataclass(frozen=True)
class RenderParams:
    """How to render: media type, VOI window, region, viewport (fit into), JPEG quality."""

    media_type: str = "image/jpeg"
    window: Window | None = None
    region: Region | None = None
    viewport: tuple[int | None, int | None] | None = None
    quality: int | None = None
    upscale: bool = True
    warnings: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.media_type not in MEDIA_TYPES:
            raise errors.Invalid(f"cannot render as {self.media_type}; supported: {', '.join(MEDIA_TYPES)}")
        if self.quality is not None and not 1 <= self.quality <= 100:
            raise errors.Invalid(f"quality {self.quality} is not in 1..100")
        if self.viewport is not None:
            for size in self.viewport:
                if size is not None and not 1 <= size <= MAX_DIMENSION:
                    raise errors.Invalid(f"viewport size {size} is not in 1..{MAX_DIMENSION}")


def read_header(source: Path | Dataset) -> Dataset:
    """The data set without its pixel data (a Dataset is returned as is)."""
    if isinstance(source, Dataset):
        return source
    try:
        return dcmread(source, stop_before_pixels=True)
    except Exception as exc:
        raise NotRenderable(f"{source.name}: unreadable DICOM file: {exc}") from exc


def number_of_frames(header: Dataset) -> int:
    """Number of Frames (PS3.3 C.7.6.6), 1 when absent."""
    try:
        return max(1, int(header.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def is_image(header: Dataset) -> bool:
    """Whether the object carries an image Pergamon can try to render (not SR, document, waveform, video)."""
    if not all(k in header for k in ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation")):
        return False
    return _transfer_syntax(header) not in _VIDEO_SYNTAXES


def check_renderable(header: Dataset) -> None:
    """Raise `NotRenderable` with a message saying what the object is, if it has no image to render.

    PS3.18 Table 8.7.4-1 ties rendered media types to resource categories: image media types exist
    for single- and multi-frame images only (video, text, SR, PDF have other media types).
    """
    name = UID(str(header.get("SOPClassUID", ""))).name or "unknown SOP class"
    if _transfer_syntax(header) in _VIDEO_SYNTAXES:
        raise NotRenderable(
            f"{name} is video ({UID(_transfer_syntax(header)).name}): Pergamon does not render video as an "
            "image; retrieve it with WADO-RS"
        )
    if not is_image(header):
        raise NotRenderable(f"{name} has no pixel data: it cannot be rendered as an image")


def encapsulated_document(source: Path | Dataset) -> tuple[bytes, str] | None:
    """The Encapsulated Document and its MIME type (PS3.3 C.24.2), or None if there is none."""
    ds = source if isinstance(source, Dataset) else dcmread(source)
    if "EncapsulatedDocument" not in ds:
        return None
    data = bytes(ds.EncapsulatedDocument)
    length = ds.get("EncapsulatedDocumentLength")
    if length and int(length) <= len(data):  # the value is padded to even length (PS3.3 C.24.2.1)
        data = data[: int(length)]
    return data, str(ds.get("MIMETypeOfEncapsulatedDocument", "") or "application/octet-stream")


def render(
    source: Path | Dataset,
    params: RenderParams,
    frames: Sequence[int] | None = None,
    *,
    pick: Literal["first", "middle"] = "first",
    animate: bool = True,
) -> bytes:
    """The image of one or more frames (1-based `frames`) encoded as `params.media_type`.

    Without `frames`: every frame for GIF if `animate` (an animation), else the first or middle
    one (`pick`).

    Raises:
        NotRenderable: no image in the object, or its pixel data cannot be decoded.
        errors.Invalid: a frame number out of range, several frames for a single-image media type,
            an empty region.
    """
    header = read_header(source)
    check_renderable(header)
    if isinstance(source, Dataset) and not any(k in source for k in _PIXEL_KEYWORDS):
        raise NotRenderable("the data set has no pixel data: it cannot be rendered as an image")
    count = number_of_frames(header)
    if frames is None:
        if params.media_type == "image/gif" and animate:
            frames = range(1, count + 1)
        else:
            frames = [count // 2 + 1 if pick == "middle" else 1]
    frames = list(frames)
    bad = [n for n in frames if not 1 <= n <= count]
    if bad:
        raise errors.Invalid(f"frame {bad[0]} does not exist: the instance has {count} frame(s)")
    if len(frames) > 1 and params.media_type != "image/gif":
        raise errors.Invalid(f"{params.media_type} holds one frame; ask for image/gif to get {len(frames)} frames")
    pixels_source: Path | Dataset = source
    if isinstance(source, Path) and _transfer_syntax(header) == DeflatedExplicitVRLittleEndian:
        pixels_source = dcmread(source)  # the whole body is deflated: no frame-by-frame reading
    images = [
        _shape(to_display(header, decode_frame(pixels_source, n - 1), n - 1, params.window), params) for n in frames
    ]
    duration = _frame_duration_ms(header)
    return encode(images, params.media_type, params.quality, duration_ms=duration)


def decode_frame(source: Path | Dataset, index: int) -> np.ndarray:
    """Frame `index` (0-based) decoded, colour as RGB; only that frame is read from a file.

    Raises:
        NotRenderable: no decoder for the transfer syntax, or corrupt pixel data.
    """
    try:
        src: Dataset | str = source if isinstance(source, Dataset) else str(source)
        codecs.load()
        return pixel_array(src, index=index)
    except Exception as exc:  # decoders raise many kinds (NotImplementedError, ValueError, RuntimeError...)
        raise NotRenderable(f"cannot decode the pixel data: {type(exc).__name__}: {exc}") from exc


def frame_attributes(header: Dataset, index: int) -> Dataset:
    """Rescale and VOI attributes of frame `index`: top level, overridden by the Shared then the
    Per-frame Functional Groups (PS3.3 C.7.6.16.2.9 Pixel Value Transformation, C.7.6.16.2.10 Frame VOI LUT).
    """
    attrs = Dataset()
    for keyword in _FRAME_KEYWORDS:
        if keyword in header:
            attrs[keyword] = header[keyword]
    groups = []
    shared = header.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    per_frame = header.get("PerFrameFunctionalGroupsSequence")
    if per_frame and index < len(per_frame):
        groups.append(per_frame[index])
    for group in groups:
        for keyword in _FRAME_GROUPS:
            items = group.get(keyword)
            if items:
                for elem in items[0]:
                    attrs[elem.tag] = elem
    return attrs


def to_display(header: Dataset, arr: np.ndarray, index: int, window: Window | None) -> np.ndarray:
    """One decoded frame as 8-bit gray (rows, cols) or RGB (rows, cols, 3), PS3.3 C.11."""
    photometric = str(header.get("PhotometricInterpretation", "")).strip().upper()
    if photometric == "PALETTE COLOR":
        try:
            rgb = apply_color_lut(arr, header)
        except Exception as exc:
            raise NotRenderable(f"cannot apply the palette color lookup tables: {exc}") from exc
        bits = int(header.RedPaletteColorLookupTableDescriptor[2])
        if bits == 16 and rgb.max() <= 255:  # 16-bit descriptor with 8-bit entries (a known quirk)
            bits = 8
        return _scale_to_8bit(rgb, bits)
    if arr.ndim == 3:  # RGB (YBR already converted)
        return _scale_to_8bit(arr, int(header.get("BitsStored", 8) or 8))
    attrs = frame_attributes(header, index)
    value_range = _lookup_range(arr, attrs)
    if value_range is not None:
        # Every step is per pixel, so map each stored value present once and look the frame up:
        # one pass over a 512x512 CT slice instead of a dozen float64 ones (~6 of its ~10 ms).
        low, high = value_range
        domain = np.arange(low, high + 1, dtype=np.int64).astype(arr.dtype)
        return _gray(domain, attrs, window, photometric)[arr.astype(np.int64) - low]
    return _gray(arr, attrs, window, photometric)


def _gray(arr: np.ndarray, attrs: Dataset, window: Window | None, photometric: str) -> np.ndarray:
    """Stored values to 8-bit gray: Modality LUT, VOI, MONOCHROME1 inversion (PS3.3 C.11)."""
    values = np.asarray(apply_modality_lut(arr, attrs), dtype=np.float64)
    gray = _voi(values, attrs, window)
    if photometric == "MONOCHROME1":
        gray = 255.0 - gray
    return np.clip(np.rint(gray), 0, 255).astype(np.uint8)


def _lookup_range(arr: np.ndarray, attrs: Dataset) -> tuple[int, int] | None:
    """The (lowest, highest) stored value when `to_display` may map that range instead of every pixel.

    Integer pixels of at most 16 bits, a range smaller than the frame, and a linear Modality LUT:
    then the range's ends are the frame's ends, so the min/max fallback window of `_voi` is the same.
    """
    if arr.dtype.kind not in "iu" or arr.dtype.itemsize > 2 or arr.size < 4096 or "ModalityLUTSequence" in attrs:
        return None
    low, high = int(arr.min()), int(arr.max())
    return (low, high) if high - low < arr.size else None


def _voi(values: np.ndarray, attrs: Dataset, window: Window | None) -> np.ndarray:
    """Modality values to 0..255 by the first VOI that applies (see the module docstring)."""
    if window is not None:
        return apply_window(values, window)
    stored = _stored_window(attrs)
    if stored is not None:
        return apply_window(values, stored)
    if attrs.get("VOILUTSequence"):
        try:
            out = np.asarray(apply_voi(values, attrs, index=0), dtype=np.float64)
            bits = int(attrs.VOILUTSequence[0].LUTDescriptor[2])
            return out * 255.0 / max(1, 2**bits - 1)
        except Exception:  # an unusable LUT: fall back to min/max rather than fail
            pass
    low, high = float(np.min(values)), float(np.max(values))
    if high <= low:
        return np.zeros_like(values)
    return apply_window(values, Window((low + high) / 2, high - low, "LINEAR_EXACT"))


def _stored_window(attrs: Dataset) -> Window | None:
    """The object's first Window Center / Width and its VOI LUT Function (PS3.3 C.11.2.1.2), if usable."""
    if "WindowCenter" not in attrs or "WindowWidth" not in attrs:
        return None
    try:
        center, width = (float(_first(attrs.WindowCenter)), float(_first(attrs.WindowWidth)))
        function = str(attrs.get("VOILUTFunction", "") or "LINEAR").strip().upper()
        return Window(center, width, function if function in VOI_FUNCTIONS else "LINEAR")
    except (errors.Invalid, TypeError, ValueError, IndexError):
        return None


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else value  # type: ignore[index]


def apply_window(x: np.ndarray, window: Window, y_min: float = 0.0, y_max: float = 255.0) -> np.ndarray:
    """The VOI LUT Function of PS3.3 C.11.2.1.2 (LINEAR C.11.2.1.2.1, LINEAR_EXACT C.11.2.1.3.2,
    SIGMOID C.11.2.1.3.1), as floats in y_min..y_max.
    """
    c, w = window.center, window.width
    x = np.asarray(x, dtype=np.float64)
    span = y_max - y_min
    if window.function == "SIGMOID":
        return span / (1.0 + np.exp(-4.0 * (x - c) / w)) + y_min
    if window.function == "LINEAR_EXACT":
        y = ((x - c) / w + 0.5) * span + y_min
        y = np.where(x <= c - w / 2, y_min, y)
        return np.where(x > c + w / 2, y_max, y)
    if w == 1:  # a step at c - 0.5 (the formula divides by w - 1)
        return np.where(x <= c - 0.5, y_min, y_max)
    y = ((x - (c - 0.5)) / (w - 1) + 0.5) * span + y_min
    y = np.where(x <= c - 0.5 - (w - 1) / 2, y_min, y)
    return np.where(x > c - 0.5 + (w - 1) / 2, y_max, y)


def _scale_to_8bit(arr: np.ndarray, bits: int) -> np.ndarray:
    if arr.dtype == np.uint8 and bits <= 8:
        return arr
    top = float(2**bits - 1) if bits > 0 else 255.0
    return np.clip(np.rint(arr.astype(np.float64) * 255.0 / top), 0, 255).astype(np.uint8)


def _shape(image: np.ndarray, params: RenderParams) -> Image.Image:
    """Crop to the region (flipping for negative sizes), then fit into the viewport."""
    picture = Image.fromarray(np.ascontiguousarray(image))
    if params.region is not None:
        picture = crop(picture, params.region)
    if params.viewport is not None:
        picture = fit(picture, params.viewport, upscale=params.upscale)
    return picture


def crop(picture: Image.Image, region: Region) -> Image.Image:
    """The region of the picture (PS3.18 8.3.5.1.3 sx,sy,sw,sh; PS3.18 9 WADO-URI relative region)."""
    width, height = picture.size
    x, y, w, h = region.x, region.y, region.width, region.height
    if region.relative:
        x, y, w, h = x * width, y * height, w * width, h * height
    flip_x, flip_y = w < 0, h < 0
    left, right = sorted((x, x + w))
    top, bottom = sorted((y, y + h))
    box = (
        max(0, math.floor(left)),
        max(0, math.floor(top)),
        min(width, math.ceil(right)),
        min(height, math.ceil(bottom)),
    )
    if box[2] <= box[0] or box[3] <= box[1]:
        raise errors.Invalid(
            f"the region ({region.x:g},{region.y:g},{region.width:g},{region.height:g}) "
            f"lies outside the {width}x{height} image or is empty"
        )
    picture = picture.crop(box)
    if flip_x:
        picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if flip_y:
        picture = picture.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return picture


def fit(picture: Image.Image, viewport: tuple[int | None, int | None], *, upscale: bool = True) -> Image.Image:
    """The picture scaled, aspect ratio kept, to the largest size within `viewport` (width, height).

    A missing width or height leaves that side free (PS3.18 8.3.5.1.3 allows vw or vh alone).
    """
    width, height = picture.size
    scales = [size / own for size, own in zip(viewport, (width, height), strict=True) if size is not None]
    if not scales:
        return picture
    scale = min(scales)
    if not upscale:
        scale = min(scale, 1.0)
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    if target == picture.size:
        return picture
    return picture.resize(target, Image.Resampling.LANCZOS)


def encode(images: Sequence[Image.Image], media_type: str, quality: int | None, *, duration_ms: int = 100) -> bytes:
    """The pictures as one JPEG / PNG, or one (animated) GIF."""
    out = io.BytesIO()
    fmt = MEDIA_TYPES[media_type]
    first = images[0]
    if fmt == "JPEG":
        first.save(out, format="JPEG", quality=quality or DEFAULT_JPEG_QUALITY)
    elif fmt == "PNG":
        first.save(out, format="PNG", compress_level=6)
    else:
        frames = [im if im.mode == "L" else im.quantize(256) for im in images]
        frames[0].save(
            out, format="GIF", save_all=len(frames) > 1, append_images=frames[1:], duration=duration_ms, loop=0
        )
    return out.getvalue()


def _frame_duration_ms(header: Dataset) -> int:
    """Frame Time (PS3.3 C.7.6.5) in ms for GIF animations; 100 ms when absent."""
    try:
        value = float(header.get("FrameTime", 0) or 0)
    except (TypeError, ValueError):
        value = 0.0
    return max(20, round(value)) if value > 0 else 100


def _transfer_syntax(header: Dataset) -> str:
    meta = getattr(header, "file_meta", None)
    return str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
