"""WADO-RS (PS3.18 10.4): instances, metadata, frames and bulk data of stored studies.

Routes (PS3.18 10.4.1, Table 10.4.1-1), relative to the DICOMweb base:

- `/studies/{study}[/series/{series}[/instances/{instance}]]`: `multipart/related;
  type="application/dicom"` of Part-10 objects (PS3.18 8.7.3.5.1), streamed from the stored files
  in 1 MiB chunks read in the thread pool. Transfer syntax (PS3.18 8.7.3.5.2 and Table 8.7.3-2):
  without a `transfer-syntax` parameter the default, Explicit VR Little Endian, is sent (DICOM
  2016c+; an object that cannot be decoded, e.g. video, goes as stored rather than not at all);
  `transfer-syntax=*` sends every object as stored, bit for bit; a named syntax is produced
  by `archive.retrieve.transcode` (the stored one, Explicit/Implicit VR LE, or a lossless
  RLE / JPEG-LS / JPEG 2000) or the request is refused with 406. In a study or series an object
  that fails to convert is left out and logged (the status line is already sent).
- `.../metadata`: `application/dicom+json` (PS3.18 10.4.1.1.2, F.2), one object per instance,
  values over 1 KiB and Pixel Data as BulkDataURI to the bulkdata route; weak ETag over the
  instances' SOP UIDs, sha256 and index update times, `If-None-Match` answered with 304.
- `.../instances/{instance}/frames/{list}`: frames (PS3.18 10.4.1.1.3) as
  `application/octet-stream` (native, little endian; compressed ones decoded) or in their
  stored compressed media type (PS3.18 Table 8.7.3-2: image/jpeg, image/jls, image/jp2, ...).
- `.../instances/{instance}/bulkdata/{tagpath}`: bulk data (PS3.18 10.4.1.1.4); the tag path is
  `TTTTTTTT[/item/TTTTTTTT...]` with items numbered from 1 (see `archive.frames`). One HTTP byte
  range (RFC 9110 14) is honoured on single-value responses (206 / 416).

Every object passes `archive.retrieve.prepare_outgoing` (coercion on retrieve). A whole-object
retrieve emits `InstancesSent`; every retrieve is logged at INFO.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset, dcmwrite
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.uid import ExplicitVRLittleEndian
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from pergamon.archive import errors, frames
from pergamon.archive.events import InstancesSent
from pergamon.archive.index.schema import Level, patient, series, study
from pergamon.archive.index.schema import instance as instance_table
from pergamon.archive.origin import Origin
from pergamon.archive.retrieve import (
    TRANSCODE_TARGETS,
    CannotConvert,
    RetrieveRequest,
    StoredInstance,
    build_locate_query,
    locate,
    parse_identifier,
    prepare_outgoing,
    transcode,
)
from pergamon.archive.service import Archive
from pergamon.web.dicomweb import media, metadata_cache, multipart

log = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
OCTET = "application/octet-stream"
FRAME_MEDIA_TYPES: dict[str, tuple[str, ...]] = {
    # PS3.18 Table 8.7.3-2 (frames / bulk data): media type -> transfer syntaxes, default first.
    "image/jpeg": tuple(f"1.2.840.10008.1.2.4.{n}" for n in (50, 51, 57, 70)),
    "image/dicom-rle": ("1.2.840.10008.1.2.5",),
    "image/x-dicom-rle": ("1.2.840.10008.1.2.5",),
    "image/jls": ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"),
    "image/x-jls": ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"),
    "image/jp2": ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"),
    "image/jpx": ("1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93"),
    "image/jxl": ("1.2.840.10008.1.2.4.110", "1.2.840.10008.1.2.4.111", "1.2.840.10008.1.2.4.112"),
    "video/mpeg2": ("1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.101"),
    "video/mp4": tuple(f"1.2.840.10008.1.2.4.{n}" for n in range(102, 107)),
    "video/H265": ("1.2.840.10008.1.2.4.107", "1.2.840.10008.1.2.4.108"),
}
_UID_TEXT = re.compile(r"[0-9]+(\.[0-9]+)*")


# --- content negotiation (PS3.18 8.7.4 / RFC 9110 12.5.1) ----------------------------------------


@dataclass(frozen=True)
class MediaRange:
    """One acceptable media type: for `multipart/related` the part `type`, with its parameters."""

    type: str
    multipart: bool
    transfer_syntax: str | None
    q: float


def accepted(request: Request) -> list[MediaRange]:
    """The `accept` query parameter or Accept header (PS3.18 8.3.3.1) as media ranges, best first.

    No header accepts anything (`*/*`), which takes each resource's default, multipart form.
    """
    header = ",".join(request.query_params.getlist("accept")) or request.headers.get("accept", "").strip() or "*/*"
    ranges: list[MediaRange] = []
    for item in re.split(r",(?=(?:[^\"]*\"[^\"]*\")*[^\"]*$)", header):
        if not item.strip():
            continue
        main, params, q = media.parse_media_range(item)
        is_multipart = main in ("multipart/related", "multipart/*", "*/*")
        part = params.get("type", "*/*").lower() if main != "*/*" and is_multipart else main
        if q > 0:
            ranges.append(MediaRange(part, is_multipart, params.get("transfer-syntax"), q))
    return sorted(ranges, key=lambda r: -r.q)


def _not_acceptable(what: str, request: Request, offer: str) -> HTTPException:
    accept = request.headers.get("accept", "")
    return HTTPException(406, f"{what} cannot be sent as {accept!r}; available: {offer}")


# --- locating ------------------------------------------------------------------------------------


def _request_of(params: dict[str, str]) -> RetrieveRequest:
    """The retrieve keys of a WADO-RS path, checked like a C-MOVE identifier (PS3.4 C.4.2.2.1)."""
    ident = Dataset()
    keys = (("study", "StudyInstanceUID", "STUDY"), ("series", "SeriesInstanceUID", "SERIES"),
            ("instance", "SOPInstanceUID", "IMAGE"))  # fmt: skip
    for name, keyword, level in keys:
        if name in params:
            value = params[name]
            if not _UID_TEXT.fullmatch(value) or len(value) > 64:
                raise errors.Invalid(f"{keyword} {value!r} in the path is not a UID")
            setattr(ident, keyword, value)
            ident.QueryRetrieveLevel = level
    return parse_identifier(ident, patient_root=False)


def _what(request: RetrieveRequest) -> str:
    level = {Level.STUDY: "study", Level.SERIES: "series", Level.IMAGE: "instance"}[request.level]
    return f"{level} {request.keys[next(reversed(request.keys))][0]}"


def _locate(archive: Archive, request: RetrieveRequest) -> list[StoredInstance]:
    found = locate(archive, request)
    if not found:
        raise errors.NotFound(f"no {_what(request)} in this archive")
    return found


def _etag(archive: Archive, request: RetrieveRequest) -> str:
    """A weak validator of the metadata: it changes when an instance or an index update does."""
    query = build_locate_query(request).add_columns(
        instance_table.c.sha256,
        patient.c.updated_at,
        study.c.updated_at,
        series.c.updated_at,
    )
    digest = hashlib.sha256()
    with archive.db.read() as conn:
        for row in conn.execute(query):
            digest.update("|".join(str(v) for v in (row.sop_uid, *tuple(row)[-4:])).encode() + b"\n")
    return f'W/"{digest.hexdigest()[:32]}"'


def _origin(request: Request) -> Origin:
    client = request.client
    return Origin.from_http(user="", peer=f"{client.host}:{client.port}" if client else "")


# --- instances (PS3.18 10.4.1.1.1) ---------------------------------------------------------------


def _dicom_target(ranges: list[MediaRange], stored_syntaxes: set[str]) -> str | None:
    """The transfer syntax to send: "" = the default (Explicit VR LE), "*" = as stored, or a UID.

    Raises:
        HTTPException: 406 when no acceptable range can be produced.
    """
    for r in ranges:
        if not r.multipart or r.type not in ("application/dicom", "*/*", "*"):
            continue
        ts = r.transfer_syntax
        if ts is None or ts == "":
            return ""
        if ts == "*" or ts in TRANSCODE_TARGETS or stored_syntaxes == {ts}:
            return ts
    return None


def _dicom_parts(
    archive: Archive, instances: list[StoredInstance], target: str, failed: list[str]
) -> Iterator[multipart.Part]:
    """One part per instance, built lazily in the thread pool (file chunks or an encoded object)."""
    for stored in instances:
        try:
            yield _dicom_part(archive, stored, target)
        except (CannotConvert, errors.PergamonError) as exc:
            log.warning("WADO-RS: %s left out: %s", stored.sop_instance_uid, exc)
            failed.append(stored.sop_instance_uid)


def _dicom_part(archive: Archive, stored: StoredInstance, target: str) -> multipart.Part:
    syntax = stored.transfer_syntax if target == "*" else (target or str(ExplicitVRLittleEndian))
    if syntax != stored.transfer_syntax:
        try:
            leaving = transcode(archive, stored, syntax)
        except CannotConvert:
            if target:
                raise
            syntax = stored.transfer_syntax  # the default cannot be reached (video ...): as stored
            leaving = transcode(archive, stored, syntax)
        content = leaving.content
    else:
        content = prepare_outgoing(archive, stored)
    media = f"application/dicom; transfer-syntax={syntax}"
    if isinstance(content, Dataset):
        buffer = io.BytesIO()
        dcmwrite(buffer, content, enforce_file_format=True)
        return multipart.Part(media, buffer.getvalue(), label=stored.sop_instance_uid)
    size = content.stat().st_size
    return multipart.Part(
        media, multipart.file_chunks(str(content)), {"Content-Length": str(size)}, label=stored.sop_instance_uid
    )


async def retrieve_instances(request: Request) -> Response:
    """Study, series or instance retrieve (PS3.18 10.4.1.1.1)."""
    archive: Archive = request.app.state.archive
    wanted = _request_of(dict(request.path_params))
    instances = await run_in_threadpool(_locate, archive, wanted)
    target = _dicom_target(accepted(request), {s.transfer_syntax for s in instances})
    if target is None:
        offer = 'multipart/related; type="application/dicom"; transfer-syntax=' + "|".join(["*", *TRANSCODE_TARGETS])
        raise _not_acceptable(_what(wanted), request, offer)
    first: multipart.Part | None = None
    if wanted.level is Level.IMAGE:  # one object: convert before the status line, so failure is a 406
        try:
            first = await run_in_threadpool(_dicom_part, archive, instances[0], target)
        except CannotConvert as exc:
            raise HTTPException(406, str(exc)) from exc
    boundary = multipart.new_boundary()
    sent: list[str] = []
    failed: list[str] = []
    origin = _origin(request)
    log.info("WADO-RS %s: %d instance(s) to %s, transfer syntax %s", _what(wanted), len(instances),
             origin.peer, target or "default (Explicit VR LE)")  # fmt: skip
    parts: Any = [first] if first is not None else _dicom_parts(archive, instances, target, failed)

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in multipart.write(parts, boundary, sent=sent):
                yield chunk
        finally:
            archive.bus.emit(
                InstancesSent(destination=origin.peer, sop_instance_uids=tuple(sent), failed=len(failed), origin=origin)
            )

    media = multipart.content_type("application/dicom", boundary)
    return StreamingResponse(body(), media_type=media)


# --- metadata (PS3.18 10.4.1.1.2, F.2) -----------------------------------------------------------


def _vr_of(raw: RawDataElement) -> str:
    vr = str(raw.VR) if raw.VR else ""
    if not vr:
        try:
            vr = dictionary_VR(raw.tag)
        except KeyError:
            vr = "UN"
    if " or " in vr:
        vr = "OW" if "OW" in vr else vr.split(" or ")[0]
    return vr


def instance_json(header: frames.InstanceHeader, bulk_base: str) -> dict[str, Any]:
    """One instance's metadata (PS3.18 F.2) rendered by `media.to_json`, with BulkDataURIs (F.2.7).

    Values deferred by `frames.read_header` (longer than the threshold, top level) become
    BulkDataURIs without being read; Pixel Data too; (0008,3002) Available Transfer Syntax UID
    tells the stored syntax (what `transfer-syntax=*` returns).
    """

    def uri(path: tuple[int, ...]) -> str:  # media.to_json numbers items from 0, our URIs from 1
        return f"{bulk_base}/{frames.format_tag_path([v + 1 if i % 2 else v for i, v in enumerate(path)])}"

    ds = header.dataset
    deferred: dict[int, RawDataElement] = {}
    for tag in ds.keys():  # noqa: SIM118 - iterating the Dataset itself would read deferred values
        raw: Any = ds.get_item(tag, keep_deferred=True)
        # A long sequence is left to `to_json`: it reads it from the file and renders it item by item.
        if isinstance(raw, RawDataElement) and raw.value is None and raw.length and _vr_of(raw) != "SQ":
            deferred[int(tag)] = raw
    out = media.to_json(ds, bulk_uri=uri, bulk_threshold=frames.BULK_THRESHOLD, leave_out=deferred)
    for number, element in deferred.items():
        out[f"{number:08X}"] = {"vr": _vr_of(element), "BulkDataURI": uri((number,))}
    pixel_tag = header.pixel_tag
    if pixel_tag is not None:
        vr = header.pixel.vr if header.pixel else ("OB" if header.encapsulated else "OW")
        out[f"{pixel_tag:08X}"] = {"vr": vr, "BulkDataURI": uri((pixel_tag,))}
    out["00083002"] = {"vr": "UI", "Value": [str(header.transfer_syntax)]}
    return dict(sorted(out.items()))


def _base_url(request: Request) -> str:
    path = request.url.path
    return f"{request.url.scheme}://{request.url.netloc}{path[: path.index('/studies/')]}"


_METADATA_CHUNK = 256 * 1024


def _metadata_texts(archive: Archive, instances: list[StoredInstance], base: str) -> Iterator[str]:
    """Each instance's metadata as JSON text (from `metadata_cache`); an unreadable object is left out."""
    return metadata_cache.texts(archive, instances, base, instance_json)


def _metadata_models(archive: Archive, instances: list[StoredInstance], base: str) -> Iterator[dict[str, Any]]:
    """Each instance's metadata model, one at a time; an unreadable object is left out."""
    for text in _metadata_texts(archive, instances, base):
        yield json.loads(text)


def _metadata_chunks(archive: Archive, instances: list[StoredInstance], base: str) -> Iterator[bytes]:
    """A JSON array (PS3.18 F.2), streamed in pieces of about `_METADATA_CHUNK` bytes.

    Pieces rather than one per instance: a synchronous iterator costs a thread-pool hop per piece.
    """
    pending: list[bytes] = [b"["]
    size = 0
    separator = b""
    for item in _metadata_texts(archive, instances, base):
        encoded = item.encode("utf-8")
        pending += [separator, encoded]
        separator = b","
        size += len(encoded)
        if size >= _METADATA_CHUNK:
            yield b"".join(pending)
            pending, size = [], 0
    pending.append(b"]")
    yield b"".join(pending)


def _metadata_xml_parts(archive: Archive, instances: list[StoredInstance], base: str, boundary: str) -> Iterator[bytes]:
    """multipart/related of one Native DICOM Model document per instance (PS3.18 8.7.3.3, PS3.19 A.1)."""
    for model in _metadata_models(archive, instances, base):
        head = f"--{boundary}\r\nContent-Type: {media.XML}\r\n\r\n".encode("ascii")
        yield head + media.json_to_xml(model) + b"\r\n"
    yield f"--{boundary}--\r\n".encode("ascii")


async def retrieve_metadata(request: Request) -> Response:
    """Study, series or instance metadata (PS3.18 10.4.1.1.2) with ETag / If-None-Match (RFC 9110 13.1.2)."""
    archive: Archive = request.app.state.archive
    wanted = _request_of(dict(request.path_params))
    chosen = media.negotiate(request, [DICOM_JSON, "application/json", media.MULTIPART_XML])
    instances = await run_in_threadpool(_locate, archive, wanted)
    etag = await run_in_threadpool(_etag, archive, wanted)
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    match = [t.strip() for t in request.headers.get("if-none-match", "").split(",") if t.strip()]
    if "*" in match or any(t.removeprefix("W/") == etag.removeprefix("W/") for t in match):
        return Response(status_code=304, headers=headers)
    log.info("WADO-RS metadata of %s: %d instance(s)", _what(wanted), len(instances))
    if chosen == media.MULTIPART_XML:
        boundary = uuid.uuid4().hex
        parts = _metadata_xml_parts(archive, instances, _base_url(request), boundary)
        return StreamingResponse(parts, media_type=f"{media.MULTIPART_XML}; boundary={boundary}", headers=headers)
    chunks = _metadata_chunks(archive, instances, _base_url(request))
    return StreamingResponse(chunks, media_type=chosen + "; charset=utf-8", headers=headers)


# --- frames and bulk data (PS3.18 10.4.1.1.3, 10.4.1.1.4) ----------------------------------------


@dataclass(frozen=True)
class FrameForm:
    """How frames leave: their media type and syntax, and whether they are decoded first."""

    media_type: str
    transfer_syntax: str
    decode: bool


def frame_form(ranges: list[MediaRange], header: frames.InstanceHeader) -> FrameForm | None:
    """The first acceptable form of the instance's frames (PS3.18 8.7.3.3, 8.7.3.4), or None."""
    stored = str(header.transfer_syntax)
    compressed = header.encapsulated
    stored_media = next((m for m, syntaxes in FRAME_MEDIA_TYPES.items() if stored in syntaxes), OCTET)
    native = FrameForm(OCTET, str(ExplicitVRLittleEndian), compressed)
    for r in ranges:
        ts = r.transfer_syntax
        if r.type in ("*/*", "*", "image/*", "video/*"):
            if ts in (None, "", "*", stored) and (compressed or r.type in ("*/*", "*")):
                return FrameForm(stored_media, stored, False) if compressed else native
            if ts == str(ExplicitVRLittleEndian):
                return native
        elif r.type == OCTET and ts in (None, "", "*", str(ExplicitVRLittleEndian)):
            return native
        elif compressed and stored in FRAME_MEDIA_TYPES.get(r.type, ()) and ts in (None, "", "*", stored):
            return FrameForm(r.type, stored, False)
    return None


def _offer(header: frames.InstanceHeader) -> str:
    stored = str(header.transfer_syntax)
    media = next((m for m, s in FRAME_MEDIA_TYPES.items() if stored in s), None) if header.encapsulated else None
    return OCTET + (f" or {media}; transfer-syntax={stored}" if media else "")


def _parse_frames(text: str) -> list[int]:
    try:
        numbers = [int(n) for n in text.split(",")]
    except ValueError:
        numbers = []
    if not numbers or any(n < 1 for n in numbers):
        raise errors.Invalid(f"{text!r} is not a list of frame numbers (1, 2, ... separated by commas)")
    return numbers


async def _instance_header(archive: Archive, wanted: RetrieveRequest) -> frames.InstanceHeader:
    instances = await run_in_threadpool(_locate, archive, wanted)
    content = await run_in_threadpool(prepare_outgoing, archive, instances[0])
    return await run_in_threadpool(frames.read_header, content)


def _frames_response(
    request: Request, header: frames.InstanceHeader, numbers: list[int], form: FrameForm, first: bytes
) -> Response:
    """The frames: `first` (already read, so that errors could still change the status) then the others."""
    media = f"{form.media_type}; transfer-syntax={form.transfer_syntax}"
    if len(numbers) == 1 and not any(r.multipart for r in accepted(request)):
        return Response(first, media_type=media)  # a single part was asked for (PS3.18 8.7.3.4)

    def parts() -> Iterator[multipart.Part]:
        yield multipart.Part(media, first)
        for data in frames.iter_frames(header, numbers[1:], decode=form.decode):
            yield multipart.Part(media, data)

    boundary = multipart.new_boundary()
    content = multipart.content_type(form.media_type, boundary, transfer_syntax=form.transfer_syntax)
    return StreamingResponse(multipart.write(parts(), boundary), media_type=content)


async def _send_frames(
    request: Request, header: frames.InstanceHeader, numbers: list[int], form: FrameForm
) -> Response:
    read = frames.decode_frame if form.decode else frames.read_frame
    first = await run_in_threadpool(read, header, numbers[0])
    return _frames_response(request, header, numbers, form, first)


async def retrieve_frames(request: Request) -> Response:
    """Frames of one instance (PS3.18 10.4.1.1.3)."""
    archive: Archive = request.app.state.archive
    params = dict(request.path_params)
    numbers = _parse_frames(params.pop("frames"))
    wanted = _request_of(params)
    header = await _instance_header(archive, wanted)
    frames.check_frame_numbers(header, numbers)
    form = frame_form(accepted(request), header)
    if form is None:
        raise _not_acceptable(f"frames of {_what(wanted)}", request, _offer(header))
    log.info("WADO-RS frames %s of %s as %s", ",".join(map(str, numbers)), _what(wanted), form.media_type)
    return await _send_frames(request, header, numbers, form)


def _byte_range(request: Request, size: int) -> tuple[int, int] | None:
    """The single byte range asked (RFC 9110 14.1.2), as (start, end exclusive); None for the whole value.

    Raises:
        HTTPException: 416 when the range lies outside the value.
    """
    text = request.headers.get("range", "").strip()
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", text)
    if not match or match.group(1) == match.group(2) == "":
        return None  # no, several or malformed ranges: the whole value (RFC 9110 14.2 allows ignoring)
    first, last = match.groups()
    if first == "":
        start, end = max(size - int(last), 0), size
    else:
        start, end = int(first), min(int(last) + 1, size) if last else size
    if start >= size or end <= start:
        unsatisfied = {"Content-Range": f"bytes */{size}"}
        raise HTTPException(416, f"range {text} is outside the value ({size} bytes)", unsatisfied)
    return start, end


async def retrieve_bulkdata(request: Request) -> Response:
    """One bulk data value (PS3.18 10.4.1.1.4): multipart or single part, with one byte range."""
    archive: Archive = request.app.state.archive
    params = dict(request.path_params)
    path = frames.parse_tag_path(params["tagpath"])
    wanted = _request_of(params)
    header = await _instance_header(archive, wanted)
    ranges = accepted(request)
    if path == (0x7FE00010,) and header.encapsulated:  # encapsulated Pixel Data: its frames
        form = frame_form(ranges, header)
        if form is None:
            raise _not_acceptable(f"pixel data of {_what(wanted)}", request, _offer(header))
        numbers = list(range(1, header.number_of_frames + 1))
        log.info("WADO-RS bulk data %s of %s: %d frame(s)", "7FE00010", _what(wanted), len(numbers))
        return await _send_frames(request, header, numbers, form)
    if not any(r.type in (OCTET, "*/*", "*", "application/*") for r in ranges):
        raise _not_acceptable(f"bulk data of {_what(wanted)}", request, OCTET)
    value = await run_in_threadpool(frames.bulk_value, header, path)
    span = _byte_range(request, value.size)
    start, end = span or (0, value.size)
    if value.data is not None:
        body: Any = value.data[start:end]
    else:
        assert value.path is not None
        body = multipart.file_chunks(str(value.path), start=value.offset + start, length=end - start)
    status, headers = 200, {"Accept-Ranges": "bytes"}
    if span is not None:
        status, headers["Content-Range"] = 206, f"bytes {start}-{end - 1}/{value.size}"
    log.info("WADO-RS bulk data %s of %s: bytes %d-%d", params["tagpath"], _what(wanted), start, end)
    multi = next((r.multipart for r in ranges if r.type in (OCTET, "*/*", "*", "application/*")), True)
    if not multi:
        headers["Content-Length"] = str(end - start)
        content: Any = [body] if isinstance(body, bytes) else iterate_in_threadpool(body)
        return StreamingResponse(content, status_code=status, media_type=OCTET, headers=headers)
    boundary = multipart.new_boundary()
    part_headers = {k: v for k, v in headers.items() if k == "Content-Range"}
    parts = [multipart.Part(f"{OCTET}; transfer-syntax={ExplicitVRLittleEndian}", body, part_headers)]
    media = multipart.content_type(OCTET, boundary)
    return StreamingResponse(multipart.write(parts, boundary), status_code=status, media_type=media, headers=headers)


def routes(archive: Archive) -> list[BaseRoute]:
    """The WADO-RS resources of PS3.18 Table 10.4.1-1 (rendered ones live in `rendered.py`)."""
    instance = "/studies/{study}/series/{series}/instances/{instance}"
    return [
        Route("/studies/{study}", retrieve_instances, methods=["GET"]),
        Route("/studies/{study}/metadata", retrieve_metadata, methods=["GET"]),
        Route("/studies/{study}/series/{series}", retrieve_instances, methods=["GET"]),
        Route("/studies/{study}/series/{series}/metadata", retrieve_metadata, methods=["GET"]),
        Route(instance, retrieve_instances, methods=["GET"]),
        Route(instance + "/metadata", retrieve_metadata, methods=["GET"]),
        Route(instance + "/frames/{frames}", retrieve_frames, methods=["GET"]),
        Route(instance + "/bulkdata/{tagpath:path}", retrieve_bulkdata, methods=["GET"]),
    ]
