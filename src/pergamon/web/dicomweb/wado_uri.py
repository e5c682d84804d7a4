"""WADO-URI: ``GET {base}?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..`` (PS3.18 9, IHE RAD-55).

Answered at the DICOMweb base path (``/dicom-web/?requestType=WADO``, the Mount's own root); the
exact base path without a trailing slash (``/dicom-web?...``) and ``/wado`` need the routes of
`root_routes` at the application level (Starlette's Mount would otherwise redirect).

Parameters (PS3.18 9, URI Service; names are case-sensitive, each at most once):

- ``requestType=WADO``, ``studyUID``, ``seriesUID``, ``objectUID``: required (400 when missing;
  404 when no such instance).
- ``contentType``: a list of media types with optional q-values. Offered: ``application/dicom``
  for every object; ``image/jpeg``, ``image/png``, ``image/gif`` for images; ``application/pdf``
  for Encapsulated PDF. Without it: ``image/jpeg`` for images (PS3.18 Table 8.7.4-1
  single-frame default; a multi-frame image gives its first frame or ``frameNumber``), else
  ``application/dicom``. An image type asked for a non-image object is 406 with a message.
- ``application/dicom`` only: ``transferSyntax`` (default: Explicit VR Little Endian, PS3.18
  9.4.2.4, or as stored when the object cannot be decoded, e.g. video; ``*`` gives the stored file
  bit for bit; otherwise converted by `archive.retrieve.transcode`: Explicit / Implicit VR Little
  Endian and the lossless syntaxes with an installed encoder; anything else is 406). ``anonymize`` is refused
  with 400 (not supported: refused rather than silently ignored).
  ``imageQuality`` is accepted and has no effect (no lossy transcoding is done).
- images only (400 with ``application/dicom``): ``frameNumber``, ``rows``, ``columns`` (the image is
  fitted inside, aspect ratio kept), ``region=xmin,ymin,xmax,ymax`` (fractions 0..1),
  ``windowCenter`` + ``windowWidth`` (together; LINEAR function), ``imageQuality`` (1..100, JPEG),
  ``annotation`` (accepted, not burned in; a ``Warning: 299`` header says so).
- ``presentationUID`` / ``presentationSeriesUID``: 400, presentation states are not applied.
- ``charset``: accepted and ignored (images and Part-10 objects carry their own character set).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from pydicom.uid import UID, ExplicitVRLittleEndian
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

from pergamon.archive import errors, rendering, retrieve
from pergamon.archive.retrieve import StoredInstance
from pergamon.archive.service import Archive
from pergamon.web.dicomweb.rendered import (
    ENCAPSULATED_PDF,
    choose_media_type,
    locate_instance,
    parse_accept,
    parse_int,
    parse_number,
    render_response,
    render_stored,
    single,
)

log = logging.getLogger(__name__)

DICOM = "application/dicom"
IMAGE_TYPES = tuple(rendering.MEDIA_TYPES)
_IMAGE_ONLY = ("frameNumber", "rows", "columns", "region", "windowCenter", "windowWidth", "annotation")
_UID_CHARS = set("0123456789.")


def routes(archive: Archive) -> list[BaseRoute]:
    """The WADO-URI route inside the DICOMweb Mount: its root (``{base}/?requestType=WADO``)."""
    return [Route("/", _endpoint(archive), methods=["GET"])]


def root_routes(archive: Archive) -> list[BaseRoute]:
    """Application-level routes: the exact base path (no trailing slash) and ``/wado``.

    Add them to `web/app.py` before the DICOMweb Mount so that ``/dicom-web?requestType=WADO``
    is answered without a redirect (most WADO-URI clients do not follow one).
    """
    endpoint = _endpoint(archive)
    base = archive.settings.http.base_path.rstrip("/")
    found: list[BaseRoute] = [Route("/wado", endpoint, methods=["GET"])]
    if base and base != "/wado":
        found.insert(0, Route(base, endpoint, methods=["GET"]))
    return found


def _endpoint(archive: Archive) -> Callable[[Request], Awaitable[Response]]:
    async def wado_uri(request: Request) -> Response:
        return await handle(archive, request)

    return wado_uri


def _uid(request: Request, name: str) -> str:
    value = single(request, name)
    if value is None or not value.strip():
        raise errors.Invalid(f"{name} is required (PS3.18 9)")
    value = value.strip()
    if len(value) > 64 or not set(value) <= _UID_CHARS:
        raise errors.Invalid(f"{name}: {value!r} is not a UID")
    return value


async def handle(archive: Archive, request: Request) -> Response:
    """One WADO-URI request: check the parameters, find the object, answer in the chosen media type."""
    request_type = single(request, "requestType")
    if request_type is None:
        raise errors.Invalid("requestType=WADO is required (PS3.18 9)")
    if request_type != "WADO":
        raise errors.Invalid(f"requestType {request_type!r} is not supported; only WADO is")
    study, series, instance = (_uid(request, n) for n in ("studyUID", "seriesUID", "objectUID"))
    for name in ("presentationUID", "presentationSeriesUID"):
        if single(request, name) is not None:
            raise errors.Invalid(f"{name}: presentation states are not applied by this server")
    if (anonymize := single(request, "anonymize")) is not None:
        raise errors.Invalid(f"anonymize={anonymize}: de-identification on retrieve is not supported")
    single(request, "charset")  # accepted once, not used
    asked = parse_accept(request.query_params.getlist("contentType"))

    stored = await locate_instance(archive, study, series, instance)
    header = await run_in_threadpool(lambda: rendering.read_header(retrieve.prepare_outgoing(archive, stored)))
    image = rendering.is_image(header)
    if image:
        offered: tuple[str, ...] = (*IMAGE_TYPES, DICOM)
    elif stored.sop_class_uid == ENCAPSULATED_PDF:
        offered = (DICOM, "application/pdf")
    else:
        offered = (DICOM,)
    media_type = choose_media_type(asked, offered)
    if media_type is None:
        if any(m in IMAGE_TYPES for m in asked) and not image:
            try:
                rendering.check_renderable(header)
            except rendering.NotRenderable as exc:
                raise HTTPException(406, f"{instance}: {exc}; ask for contentType=application/dicom") from exc
        raise HTTPException(
            406, f"contentType {', '.join(asked)} is not available for {instance}; available: {', '.join(offered)}"
        )

    if media_type == DICOM:
        response = await _dicom(archive, request, stored)
    elif media_type == "application/pdf":
        response = await _pdf(archive, stored)
    else:
        response = await _image(archive, request, stored, media_type)
    log.info("WADO-URI %s/%s/%s as %s: %s", study, series, instance, media_type, response.status_code)
    return response


async def _dicom(archive: Archive, request: Request, stored: StoredInstance) -> Response:
    """The Part-10 object: stored file bit for bit, or converted to the asked transfer syntax."""
    present = [name for name in _IMAGE_ONLY if single(request, name) is not None]
    if present:
        raise errors.Invalid(f"{', '.join(present)} cannot be used with contentType=application/dicom (PS3.18 9)")
    if (quality := single(request, "imageQuality")) is not None:
        parse_int("imageQuality", quality, 1, 100)
    syntax = (single(request, "transferSyntax") or "").strip()
    if syntax and syntax != "*" and (len(syntax) > 64 or not set(syntax) <= _UID_CHARS):
        raise errors.Invalid(f"transferSyntax: {syntax!r} is not a UID")
    target = stored.transfer_syntax if syntax == "*" else (syntax or str(ExplicitVRLittleEndian))

    def work() -> Path | bytes:
        try:
            leaving = retrieve.transcode(archive, stored, target)
        except retrieve.CannotConvert:
            if syntax:
                raise
            leaving = retrieve.transcode(archive, stored, stored.transfer_syntax)  # e.g. video: as stored
        if isinstance(leaving.content, Path):
            return leaving.content
        out = io.BytesIO()
        leaving.content.save_as(out, enforce_file_format=True)
        return out.getvalue()

    try:
        content = await run_in_threadpool(work)
    except retrieve.CannotConvert as exc:
        name = UID(target).name or target
        raise HTTPException(406, f"transferSyntax {name}: {exc}") from exc
    if isinstance(content, Path):
        return FileResponse(content, media_type=DICOM)
    return Response(content, media_type=DICOM)


async def _pdf(archive: Archive, stored: StoredInstance) -> Response:
    def work() -> tuple[bytes, str] | None:
        return rendering.encapsulated_document(retrieve.prepare_outgoing(archive, stored))

    document = await run_in_threadpool(work)
    if document is None:
        raise HTTPException(406, f"{stored.sop_instance_uid}: the encapsulated document is missing")
    return Response(document[0], media_type=document[1])


async def _image(archive: Archive, request: Request, stored: StoredInstance, media_type: str) -> Response:
    """The rendered image (PS3.18 9: rows, columns, region, window, frameNumber, imageQuality)."""
    if single(request, "transferSyntax") is not None:
        raise errors.Invalid(f"transferSyntax can only be used with contentType=application/dicom, not {media_type}")
    warnings: list[str] = []
    frames = None
    if (text := single(request, "frameNumber")) is not None:
        frames = [parse_int("frameNumber", text, 1, 2**31 - 1)]
    rows = single(request, "rows")
    columns = single(request, "columns")
    viewport = None
    if rows is not None or columns is not None:
        viewport = (
            parse_int("columns", columns, 1, rendering.MAX_DIMENSION) if columns is not None else None,
            parse_int("rows", rows, 1, rendering.MAX_DIMENSION) if rows is not None else None,
        )
    region = None
    if (text := single(request, "region")) is not None:
        region = _region(text)
    window = None
    center, width = single(request, "windowCenter"), single(request, "windowWidth")
    if (center is None) != (width is None):
        raise errors.Invalid("windowCenter and windowWidth must be given together (PS3.18 9)")
    if center is not None and width is not None:
        window = rendering.Window(parse_number("windowCenter", center), parse_number("windowWidth", width))
    quality = None
    if (text := single(request, "imageQuality")) is not None:
        quality = parse_int("imageQuality", text, 1, 100)
    if single(request, "annotation") is not None:
        warnings.append("annotation is not supported and was not burned in")
    params = rendering.RenderParams(
        media_type=media_type, window=window, region=region, viewport=viewport, quality=quality
    )
    content = await render_stored(archive, stored, params, frames, animate=False)
    return render_response(content, media_type, warnings)


def _region(text: str) -> rendering.Region:
    """``xmin,ymin,xmax,ymax`` as fractions of the image, 0.0..1.0, min < max (PS3.18 9)."""
    parts = text.split(",")
    if len(parts) != 4:
        raise errors.Invalid(f"region={text!r}: expected xmin,ymin,xmax,ymax")
    x0, y0, x1, y1 = (parse_number("region", p) for p in parts)
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise errors.Invalid(f"region={text!r}: needs 0 <= xmin < xmax <= 1 and 0 <= ymin < ymax <= 1")
    return rendering.Region(x0, y0, x1 - x0, y1 - y0, relative=True)
