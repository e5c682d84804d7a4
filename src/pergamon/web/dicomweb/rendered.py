"""DICOMweb Retrieve Rendered and Thumbnail (PS3.18 8.3.5, 10.4.1.1.3, 10.4.1.1.4; Table 8.3.5-1).

Routes (relative to the DICOMweb base path):

- ``/studies/{s}/series/{se}/instances/{i}/rendered`` and ``.../frames/{n}/rendered``;
- ``/studies/{s}/thumbnail``, ``/studies/{s}/series/{se}/thumbnail``, ``.../instances/{i}/thumbnail``
  and ``.../frames/{n}/thumbnail``.

Media types (PS3.18 8.7.4, Table 8.7.4-1): ``image/jpeg`` (default, also for ``*/*`` and
``image/*``), ``image/png``, ``image/gif``, from the Accept header or the ``accept`` query parameter
(PS3.18 8.3.3.1); anything else is 406. An Encapsulated PDF asked for as ``application/pdf`` (or
``*/*``) is returned as its document, the PS3.18 rendering of a "text" resource.

Query parameters (PS3.18 8.3.5.1): ``window=center,width[,linear|linear-exact|sigmoid]``,
``viewport=vw,vh[,sx,sy,sw,sh]`` (vw or vh may be empty; the image is fitted, aspect ratio kept),
``quality=1..100`` (JPEG only), ``annotation=patient,technique`` and ``iccprofile`` are accepted but
not applied: the response then carries a ``Warning: 299`` header saying so. Invalid values are 400.

Choices where PS3.18 leaves room (documented for the conformance statement):

- a multi-frame instance rendered without a frame list is its first frame as JPEG/PNG, and all its
  frames as an animated GIF (the multi-frame default of Table 8.7.4-1); several frames in the path
  need ``image/gif`` (406 otherwise);
- study- and series-level ``rendered`` are not offered (those routes fall through to WADO-RS);
- a thumbnail fits in 128x128 (or the ``viewport``), is never upscaled and shows the middle frame of
  the middle image of the (first image-bearing) series;
- an object without an image (SR, PDF, waveform) or whose pixels cannot be decoded (video, a codec
  that is not installed) is 406 with a message saying which; a frame number out of range is 400.
"""

from __future__ import annotations

import logging
import re
from typing import Literal

from pydicom import Dataset
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from pergamon.archive import errors, rendering, retrieve
from pergamon.archive.retrieve import StoredInstance
from pergamon.archive.service import Archive

log = logging.getLogger(__name__)

THUMBNAIL_SIZE = 128
"""Default thumbnail box, in pixels (PS3.18 10.4.1.1.4 leaves the size to the origin server)."""

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
_MAX_THUMBNAIL_TRIES = 8
_FUNCTIONS = {"linear": "LINEAR", "linear-exact": "LINEAR_EXACT", "sigmoid": "SIGMOID"}
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _not_acceptable(message: str) -> HTTPException:
    log.info("406 Not Acceptable: %s", message)
    return HTTPException(406, message)


# --- shared with WADO-URI ---------------------------------------------------------------------


def parse_accept(values: list[str]) -> list[str]:
    """Media types from Accept-style values, best first (q-values honoured, q=0 dropped; RFC 9110 12.5.1)."""
    ranked: list[tuple[float, int, str]] = []
    for value in values:
        for position, part in enumerate(value.split(",")):
            pieces = [p.strip() for p in part.split(";")]
            media = pieces[0].lower()
            if not media:
                continue
            q = 1.0
            for param in pieces[1:]:
                name, _, val = param.partition("=")
                if name.strip().lower() == "q":
                    try:
                        q = float(val)
                    except ValueError:
                        q = 0.0
            if q > 0:
                ranked.append((-q, len(ranked) + position, media))
    return [media for _, _, media in sorted(ranked)]


def choose_media_type(acceptable: list[str], offered: tuple[str, ...]) -> str | None:
    """The first acceptable media type among `offered` (the first offered is the default for wildcards)."""
    if not acceptable:
        return offered[0]
    for media in acceptable:
        if media in offered:
            return media
        kind = media.split("/")[0]
        if media in ("*/*", "*") or media.endswith("/*") or media.endswith("/"):
            match = next((o for o in offered if media in ("*/*", "*") or o.startswith(kind + "/")), None)
            if match:
                return match
    return None


async def locate_instance(archive: Archive, study: str, series: str, instance: str) -> StoredInstance:
    """The stored instance with these UIDs (PS3.18 10.4.1.1).

    Raises:
        errors.InvalidQuery: a malformed UID (400).
        errors.NotFound: no such instance (404).
    """
    for name, uid in (("Study", study), ("Series", series), ("SOP Instance", instance)):
        if not uid or "\\" in uid:
            raise errors.InvalidQuery(f"{name} UID {uid!r} is not a single UID")
    request = _identifier(StudyInstanceUID=study, SeriesInstanceUID=series, SOPInstanceUID=instance)
    found = await run_in_threadpool(retrieve.locate, archive, request)
    if not found:
        raise errors.NotFound(f"no instance {instance} in series {series} of study {study}")
    return found[0]


def _identifier(**keys: str) -> retrieve.RetrieveRequest:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = (
        "IMAGE" if "SOPInstanceUID" in keys else "SERIES" if "SeriesInstanceUID" in keys else "STUDY"
    )
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    return retrieve.parse_identifier(identifier, patient_root=False)


def parse_number(name: str, text: str) -> float:
    """A decimal number of a query parameter (400 when it is not one)."""
    if not _NUMBER.fullmatch(text.strip()):
        raise errors.Invalid(f"{name}: {text!r} is not a number")
    return float(text)


def parse_int(name: str, text: str, low: int, high: int) -> int:
    """An integer query parameter in low..high (400 otherwise)."""
    if not re.fullmatch(r"\s*\+?\d+\s*", text):
        raise errors.Invalid(f"{name}: {text!r} is not a positive integer")
    value = int(text)
    if not low <= value <= high:
        raise errors.Invalid(f"{name}: {value} is not in {low}..{high}")
    return value


def single(request: Request, name: str) -> str | None:
    """A query parameter given at most once (400 if repeated)."""
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise errors.Invalid(f"query parameter {name} is given {len(values)} times")
    return values[0] if values else None


def render_response(content: bytes, media_type: str, warnings: list[str]) -> Response:
    """The image response; each warning becomes a ``Warning: 299`` header (RFC 7234 5.5, as PS3.18 8.4.3 uses it)."""
    response = Response(content, media_type=media_type)
    for text in warnings:
        response.headers.append("Warning", f'299 pergamon "{text}"')
    return response


# --- rendered query parameters (PS3.18 Table 8.3.5-1) ----------------------------------------


def parse_window(text: str) -> rendering.Window:
    """``center,width[,function]`` (PS3.18 8.3.5.1.4)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 3):
        raise errors.Invalid(f"window={text!r}: expected center,width[,function]")
    function = "LINEAR"
    if len(parts) == 3:
        if parts[2].lower() not in _FUNCTIONS:
            raise errors.Invalid(f"window function {parts[2]!r} is not one of {', '.join(_FUNCTIONS)}")
        function = _FUNCTIONS[parts[2].lower()]
    return rendering.Window(parse_number("window center", parts[0]), parse_number("window width", parts[1]), function)


def parse_viewport(text: str) -> tuple[tuple[int | None, int | None], rendering.Region | None]:
    """``vw,vh[,sx,sy,sw,sh]`` (PS3.18 8.3.5.1.3): the viewport and the source region, if any."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 6) or not (parts[0] or parts[1]):
        raise errors.Invalid(f"viewport={text!r}: expected vw,vh or vw,vh,sx,sy,sw,sh")
    size = tuple(
        parse_int(f"viewport {name}", part, 1, rendering.MAX_DIMENSION) if part else None
        for name, part in zip(("vw", "vh"), parts[:2], strict=True)
    )
    region = None
    if len(parts) == 6:
        sx, sy = (parse_number("viewport sx", parts[2] or "0"), parse_number("viewport sy", parts[3] or "0"))
        if sx < 0 or sy < 0:
            raise errors.Invalid(f"viewport={text!r}: sx and sy must not be negative")
        if not parts[4] or not parts[5]:
            raise errors.Invalid(f"viewport={text!r}: sw and sh are required with sx,sy")
        sw, sh = parse_number("viewport sw", parts[4]), parse_number("viewport sh", parts[5])
        if sw == 0 or sh == 0:
            raise errors.Invalid(f"viewport={text!r}: sw and sh must not be 0")
        region = rendering.Region(sx, sy, sw, sh)
    return (size[0], size[1]), region


def rendered_params(request: Request, media_type: str, *, thumbnail: bool = False) -> rendering.RenderParams:
    """The rendering asked for by the query (a thumbnail takes only ``viewport``, PS3.18 10.4 Thumbnail resources)."""
    warnings: list[str] = []
    window = None
    quality = None
    viewport: tuple[int | None, int | None] | None = (THUMBNAIL_SIZE, THUMBNAIL_SIZE) if thumbnail else None
    region = None
    if (text := single(request, "viewport")) is not None:
        viewport, region = parse_viewport(text)
    if not thumbnail:
        if (text := single(request, "window")) is not None:
            window = parse_window(text)
        if (text := single(request, "quality")) is not None:
            quality = parse_int("quality", text, 1, 100)
            if media_type != "image/jpeg":
                warnings.append(f"quality applies to lossy media types only; ignored for {media_type}")
        if (text := single(request, "annotation")) is not None:
            bad = [v for v in text.split(",") if v.strip().lower() not in ("patient", "technique")]
            if bad:
                raise errors.Invalid(f"annotation: {bad[0]!r} is not patient or technique")
            warnings.append("annotation is not supported and was not burned in")
        if (text := single(request, "iccprofile")) is not None:
            if text.strip().lower() not in ("no", "yes", "srgb", "adobergb", "rommrgb"):
                raise errors.Invalid(f"iccprofile: {text!r} is not no, yes, srgb, adobergb or rommrgb")
            if text.strip().lower() != "no":
                warnings.append("iccprofile is not supported: no ICC profile is embedded")
    return rendering.RenderParams(
        media_type=media_type,
        window=window,
        region=region,
        viewport=viewport,
        quality=quality,
        upscale=not thumbnail,
        warnings=tuple(warnings),
    )


def parse_frames(text: str) -> list[int]:
    """A frame list ``1,2,3`` (PS3.18 8.3.3.1 / 10.4.1.1.3), numbers from 1."""
    frames = [parse_int("frame number", part, 1, 2**31 - 1) for part in text.split(",")]
    if not frames:
        raise errors.Invalid("empty frame list")
    return frames


# --- endpoints --------------------------------------------------------------------------------


def routes(archive: Archive) -> list[BaseRoute]:
    """Rendered and thumbnail routes of the Studies Service (PS3.18 10.4)."""
    instance_path = "/studies/{study}/series/{series}/instances/{instance}"

    async def instance_rendered(request: Request) -> Response:
        return await _render(archive, request, frames=None, thumbnail=False)

    async def frames_rendered(request: Request) -> Response:
        return await _render(archive, request, frames=parse_frames(request.path_params["frames"]), thumbnail=False)

    async def instance_thumbnail(request: Request) -> Response:
        return await _render(archive, request, frames=None, thumbnail=True)

    async def frames_thumbnail(request: Request) -> Response:
        frames = parse_frames(request.path_params["frames"])[:1]
        return await _render(archive, request, frames=frames, thumbnail=True)

    async def series_thumbnail(request: Request) -> Response:
        return await _collection_thumbnail(archive, request)

    return [
        Route(instance_path + "/rendered", instance_rendered, methods=["GET"]),
        Route(instance_path + "/frames/{frames}/rendered", frames_rendered, methods=["GET"]),
        Route(instance_path + "/thumbnail", instance_thumbnail, methods=["GET"]),
        Route(instance_path + "/frames/{frames}/thumbnail", frames_thumbnail, methods=["GET"]),
        Route("/studies/{study}/series/{series}/thumbnail", series_thumbnail, methods=["GET"]),
        Route("/studies/{study}/thumbnail", series_thumbnail, methods=["GET"]),
    ]


def _acceptable(request: Request) -> list[str]:
    return parse_accept(request.query_params.getlist("accept") or request.headers.getlist("accept"))


async def _render(archive: Archive, request: Request, *, frames: list[int] | None, thumbnail: bool) -> Response:
    p = request.path_params
    acceptable = _acceptable(request)
    stored = await locate_instance(archive, p["study"], p["series"], p["instance"])
    if (
        not thumbnail
        and frames is None
        and stored.sop_class_uid == ENCAPSULATED_PDF
        and choose_media_type(acceptable, ("application/pdf",)) is not None
        and not _wants_image_only(acceptable)
    ):
        return await _native_pdf(archive, stored)
    media_type = _image_media_type(acceptable)
    if frames and len(frames) > 1 and media_type != "image/gif":
        raise _not_acceptable(f"{media_type} holds one frame; ask for image/gif to get {len(frames)} frames")
    params = rendered_params(request, media_type, thumbnail=thumbnail)
    pick: Literal["first", "middle"] = "middle" if thumbnail else "first"
    content = await render_stored(archive, stored, params, frames, pick, animate=not thumbnail)
    log.info(
        "%s %s: %s frame(s) %s as %s, %d bytes",
        "thumbnail" if thumbnail else "rendered",
        stored.sop_instance_uid,
        stored.sop_class_uid,
        ",".join(map(str, frames)) if frames else pick,
        media_type,
        len(content),
    )
    return render_response(content, media_type, list(params.warnings))


def _wants_image_only(acceptable: list[str]) -> bool:
    return bool(acceptable) and all(m.startswith("image/") for m in acceptable)


def _image_media_type(acceptable: list[str]) -> str:
    media_type = choose_media_type(acceptable, tuple(rendering.MEDIA_TYPES))
    if media_type is None:
        raise _not_acceptable(
            f"cannot render as {', '.join(acceptable)}; rendered media types: {', '.join(rendering.MEDIA_TYPES)}"
        )
    return media_type


async def render_stored(
    archive: Archive,
    stored: StoredInstance,
    params: rendering.RenderParams,
    frames: list[int] | None,
    pick: Literal["first", "middle"] = "first",
    *,
    animate: bool = True,
) -> bytes:
    """Render one stored instance in a worker thread, its way out through `prepare_outgoing`.

    `NotRenderable` becomes 406 Not Acceptable: the resource exists but has no image rendering.
    """

    def work() -> bytes:
        source = retrieve.prepare_outgoing(archive, stored)
        return rendering.render(source, params, frames, pick=pick, animate=animate)

    try:
        return await run_in_threadpool(work)
    except rendering.NotRenderable as exc:
        log.info("cannot render %s: %s", stored.sop_instance_uid, exc)
        raise _not_acceptable(f"{stored.sop_instance_uid}: {exc}") from exc


async def _native_pdf(archive: Archive, stored: StoredInstance) -> Response:
    def work() -> tuple[bytes, str] | None:
        return rendering.encapsulated_document(retrieve.prepare_outgoing(archive, stored))

    document = await run_in_threadpool(work)
    if document is None:
        raise _not_acceptable(f"{stored.sop_instance_uid}: the encapsulated document is missing")
    log.info("rendered %s: encapsulated %s, %d bytes", stored.sop_instance_uid, document[1], len(document[0]))
    return Response(document[0], media_type=document[1])


async def _collection_thumbnail(archive: Archive, request: Request) -> Response:
    """Study or series thumbnail: the middle image of the series (the first series with images)."""
    p = request.path_params
    keys = {"StudyInstanceUID": p["study"]}
    if "series" in p:
        keys["SeriesInstanceUID"] = p["series"]
    for name, uid in keys.items():
        if "\\" in uid:
            raise errors.InvalidQuery(f"{name} {uid!r} is not a single UID")
    found = await run_in_threadpool(retrieve.locate, archive, _identifier(**keys))
    if not found:
        raise errors.NotFound(f"no {'series ' + p['series'] if 'series' in p else 'study ' + p['study']}")
    media_type = _image_media_type(_acceptable(request))
    params = rendered_params(request, media_type, thumbnail=True)
    last: HTTPException | None = None
    for stored in _thumbnail_candidates(found)[:_MAX_THUMBNAIL_TRIES]:
        try:
            content = await render_stored(archive, stored, params, None, "middle", animate=False)
        except HTTPException as exc:
            last = exc
            continue
        log.info(
            "thumbnail %s: from %s, %s, %d bytes", request.url.path, stored.sop_instance_uid, media_type, len(content)
        )
        return render_response(content, media_type, [])
    raise _not_acceptable(f"no renderable image found for a thumbnail ({last.detail if last else 'no images'})")


def _thumbnail_candidates(found: list[StoredInstance]) -> list[StoredInstance]:
    """Instances in the order to try: series by series, the middle one of each series first."""
    by_series: dict[str, list[StoredInstance]] = {}
    for stored in found:
        by_series.setdefault(stored.series_uid, []).append(stored)
    ordered: list[StoredInstance] = []
    for members in by_series.values():
        middle = len(members) // 2
        ordered.extend([members[middle], *members[:middle], *members[middle + 1 :]][:2])
    return ordered
