"""STOW-RS: the Studies Store transaction (PS3.18 §10.5; IHE RAD-108 for WIC).

`POST {base}/studies` and `POST {base}/studies/{study}` with a `multipart/related` body of
- `type="application/dicom"`: each part one Part-10 instance (PS3.18 §10.5.1.2.1), or
- `type="application/dicom+json"`: a first part holding a DICOM JSON array of instance metadata
  and further parts holding bulk data, referenced by `BulkDataURI` = a part's Content-Location
  (PS3.18 §10.5.1.2.2 "Metadata and Bulk Data"); `archive.wic` builds the instances.

The body is spooled part by part into the archive's temporary folder (never whole in memory) and
checked to be a complete multipart message before anything is stored, so a malformed body (400)
stores nothing. Then each instance goes through `archive.store_file(..., move=True)`, which is
durable before it returns; one bad instance fails alone. With `/studies/{study}`, an instance of
another study fails (PS3.18 §10.5.1.1: all instances must belong to the target study); the core
checks that (`expected_study`) as it reads the header, so this process never parses a part.

Response (PS3.18 §10.5.3, Annex I Store Instances Response Module), `application/dicom+json`
or, on request, `application/dicom+xml` (PS3.19 Native DICOM Model): Retrieve URL of the study,
Referenced SOP Sequence (with each instance's Retrieve URL), Failed SOP Sequence with a Failure
Reason of Table I.2-2. HTTP status of Table 10.5.3-1: 200 all stored; 202 some stored, others
failed; 409 none stored (the payload says why, instance by instance); 400 malformed body; 415
unsupported media type.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from pydicom import Dataset
from pydicom.datadict import keyword_for_tag
from pydicom.sequence import Sequence
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from pergamon.archive import errors, wic
from pergamon.archive.origin import Origin
from pergamon.archive.service import Archive
from pergamon.process import ProcessThreads
from pergamon.web.dicomweb.multipart_reader import (
    MultipartError,
    Part,
    Reserve,
    parse_content_type,
    read_multipart,
)

log = logging.getLogger(__name__)

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"
MAX_METADATA = 64 << 20
"""Largest JSON metadata part read into memory."""
STORE_THREADS = ProcessThreads(8, "pergamon-stow")
"""Stores parts: 8 at the same time over all requests (each in a store worker if any)."""

# Failure Reason (0008,1197) values, PS3.18 Table I.2-2 (and PS3.7 C for 0111).
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111  # PS3.7 C.5.8; only under the `reject` duplicate policy
STUDY_UID_MISMATCH = 0xC409
"""In the Cxxx "cannot understand" range of Table I.2-2; the value dcm4chee uses for this case."""


@dataclass
class Outcome:
    """What one request did, instance by instance."""

    stored: list[Dataset] = field(default_factory=list)
    failed: list[Dataset] = field(default_factory=list)
    studies: set[str] = field(default_factory=set)


class _Failed(Exception):
    """One instance failed: carries its Failure Reason and what is known of its identity."""

    def __init__(self, reason: int, message: str, sop_class: str = "", sop_instance: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.sop_class = sop_class
        self.sop_instance = sop_instance


def routes(archive: Archive) -> list[BaseRoute]:
    """`POST /studies` and `POST /studies/{study}` (PS3.18 Table 10.5.1-1)."""

    async def store(request: Request) -> Response:
        return await _store(archive, request)

    return [
        Route("/studies", store, methods=["POST"], name="stow_studies"),
        Route("/studies/{study}", store, methods=["POST"], name="stow_study"),
    ]


async def _store(archive: Archive, request: Request) -> Response:
    started = time.monotonic()
    study = request.path_params.get("study")
    media, params = parse_content_type(request.headers.get("content-type", ""))
    if media != "multipart/related":
        raise HTTPException(415, f"STOW-RS takes multipart/related bodies (PS3.18 §10.5.1.2), not {media or 'none'}")
    body_type = parse_content_type(params.get("type", ""))[0]
    if body_type not in ("", DICOM, DICOM_JSON):
        raise HTTPException(
            415, f"unsupported multipart type {body_type!r}: this server takes {DICOM} and {DICOM_JSON} parts"
        )
    boundary = params.get("boundary", "")
    if not boundary:
        raise HTTPException(400, "the Content-Type has no boundary parameter")
    accept_xml = _wants_xml(request.headers.get("accept", ""))
    try:
        reserve = _reserve_instance_blobs(archive) if body_type in ("", DICOM) else None
        parts = await read_multipart(request.stream(), boundary, archive.temp_dir, reserve)
    except MultipartError as exc:
        raise HTTPException(400, str(exc)) from exc
    except ClientDisconnect:
        log.info("STOW-RS %s: client disconnected during the body", request.url.path)
        return Response(status_code=400)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise errors.StorageFull("no space left for the request body") from exc
        raise
    try:
        if not body_type:  # PS3.18 requires `type`; be lenient and take the first part's
            body_type = DICOM_JSON if parts[0].media_type == DICOM_JSON else DICOM
        origin = Origin.from_http(user="", peer=_peer(request))
        base = f"{request.url.scheme}://{request.url.netloc}{request.scope.get('root_path', '')}"
        if body_type == DICOM_JSON:
            outcome = await run_in_threadpool(_store_metadata_form, archive, parts, study, origin, base)
        else:
            outcome = await run_in_threadpool(_store_part10_form, archive, parts, study, origin, base)
    finally:
        for part in parts:
            if not part.handed_over:  # a part the core took is kept or deleted by it
                with suppress(FileNotFoundError):
                    part.path.unlink()
    status = 200 if not outcome.failed else 202 if outcome.stored else 409
    log.info(
        "STOW-RS %s from %s: %d part(s), %d stored, %d failed -> %d (%.2f s)",
        request.url.path,
        _peer(request),
        len(parts),
        len(outcome.stored),
        len(outcome.failed),
        status,
        time.monotonic() - started,
    )
    response = _response_dataset(outcome, base, study)
    if accept_xml:
        return Response(to_xml(response), status_code=status, media_type=DICOM_XML)
    return Response(json.dumps(response.to_json_dict()), status_code=status, media_type=DICOM_JSON)


def _reserve_instance_blobs(archive: Archive) -> Reserve:
    """Part-10 parts are written straight into new blobs (when the blob store has local files):
    stored, they stay where they are; the rest are deleted like temporary files."""

    def reserve(headers: dict[str, str]) -> tuple[str, Path] | None:
        if parse_content_type(headers.get("content-type", ""))[0] not in ("", DICOM):
            return None
        return archive.blobs.reserve_local()

    return reserve


def _peer(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else ""


def _wants_xml(accept: str) -> bool:
    """XML only when asked for it before (or without) JSON (PS3.18 §8.7.3 media type negotiation)."""
    types = [parse_content_type(item)[0] for item in accept.split(",") if item.strip()]
    if DICOM_XML not in types:
        return False
    return DICOM_JSON not in types or types.index(DICOM_XML) < types.index(DICOM_JSON)


# --- storing (on a worker thread) ---------------------------------------------------------------


def _store_part10_form(archive: Archive, parts: list[Part], study: str | None, origin: Origin, base: str) -> Outcome:
    """PS3.18 §10.5.1.2.1: every part one Part-10 instance; each stored or failed alone.

    Parts are stored side by side (`STORE_THREADS`), so the store workers (and the disk's fsync
    waits) serve one request in parallel; the response still lists the parts in their order.
    """

    def store(numbered: tuple[int, Part]) -> Outcome:
        index, part = numbered
        outcome = Outcome()
        if part.media_type not in ("", DICOM):
            _fail(outcome, _Failed(CANNOT_UNDERSTAND, f"{part.media_type}, not {DICOM}"), f"part {index}")
        else:
            part.handed_over = part.blob_key is not None
            _store_one(archive, part.path, study, origin, base, outcome, f"part {index}", blob_key=part.blob_key)
        return outcome

    if len(parts) == 1:
        return store((1, parts[0]))
    each = list(STORE_THREADS.pool().map(store, enumerate(parts, 1)))
    outcome = Outcome()
    for one in each:
        outcome.stored += one.stored
        outcome.failed += one.failed
        outcome.studies |= one.studies
    return outcome


def _store_metadata_form(archive: Archive, parts: list[Part], study: str | None, origin: Origin, base: str) -> Outcome:
    """PS3.18 §10.5.1.2.2: a JSON metadata part, then bulk data parts it references by URI."""
    metadata_part, bulk_parts = parts[0], parts[1:]
    if metadata_part.media_type != DICOM_JSON:
        raise HTTPException(400, f"the first part must be {DICOM_JSON} metadata, not {metadata_part.media_type}")
    if metadata_part.size > MAX_METADATA:
        raise HTTPException(413, f"the metadata part is larger than {MAX_METADATA >> 20} MiB")
    try:
        items = json.loads(metadata_part.path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HTTPException(400, f"the metadata part is not valid JSON: {exc}") from exc
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list) or not items:
        raise HTTPException(400, "the metadata part must be a non-empty array of DICOM JSON objects")
    resolve = _bulk_resolver(bulk_parts, base)
    outcome = Outcome()
    for index, item in enumerate(items, 1):
        fd, name = tempfile.mkstemp(prefix="wic-", suffix=".dcm", dir=archive.temp_dir)
        os.close(fd)
        out = Path(name)
        try:
            wic.build_instance(item, resolve, out, study_uid=study)
        except errors.PergamonError as exc:
            with suppress(FileNotFoundError):
                out.unlink()
            _fail(outcome, _failure_from(exc, *_identity_of(item)), f"metadata item {index}")
            continue
        try:
            _store_one(archive, out, study, origin, base, outcome, f"metadata item {index}")
        finally:
            with suppress(FileNotFoundError):
                out.unlink()
    return outcome


def _bulk_resolver(parts: list[Part], base: str) -> Callable[[str], wic.BulkData | None]:
    """BulkDataURI -> part: by Content-Location (absolute or relative to the service) or `cid:` Content-ID."""
    by_uri: dict[str, Part] = {}
    for part in parts:
        if part.content_location:
            by_uri[part.content_location] = part
        if part.content_id:
            by_uri["cid:" + part.content_id.strip("<>")] = part

    def resolve(uri: str) -> wic.BulkData | None:
        part = by_uri.get(uri)
        if part is None and uri.startswith(base):
            part = by_uri.get(uri[len(base) :]) or by_uri.get(uri[len(base) :].lstrip("/"))
        if part is None:
            part = next((p for loc, p in by_uri.items() if loc.startswith(base) and loc[len(base) :] == uri), None)
        return wic.BulkData(part.path, part.media_type) if part else None

    return resolve


def _identity_of(item: object) -> tuple[str, str]:
    """SOP Class and Instance UIDs of a JSON metadata item, when it gives them."""
    if not isinstance(item, dict):
        return "", ""

    def value(tag: str) -> str:
        element = item.get(tag)
        if isinstance(element, dict) and isinstance(element.get("Value"), list) and element["Value"]:
            return str(element["Value"][0])
        return ""

    return value("00080016"), value("00080018")


def _store_one(
    archive: Archive,
    path: Path,
    study: str | None,
    origin: Origin,
    base: str,
    outcome: Outcome,
    what: str,
    *,
    blob_key: str | None = None,
) -> None:
    """Store one Part-10 file (moved in, or already in place as blob `blob_key`); the core refuses
    one of another study than `study`."""
    try:
        try:
            result = archive.store_file(path, origin, expected_study=study, move=True, blob_key=blob_key)
        except errors.PergamonError as exc:
            raise _failure_from(exc) from exc
        except OSError as exc:
            reason = OUT_OF_RESOURCES if exc.errno == errno.ENOSPC else PROCESSING_FAILURE
            raise _Failed(reason, f"{type(exc).__name__}: {exc}") from exc
    except _Failed as failure:
        _fail(outcome, failure, what)
        return
    item = Dataset()
    item.ReferencedSOPClassUID = result.sop_class_uid
    item.ReferencedSOPInstanceUID = result.sop_instance_uid
    item.RetrieveURL = (
        f"{base}/studies/{result.study_uid}/series/{result.series_uid}/instances/{result.sop_instance_uid}"
    )
    outcome.stored.append(item)
    outcome.studies.add(result.study_uid)


def _failure_from(exc: errors.PergamonError, sop_class: str = "", sop_instance: str = "") -> _Failed:
    """The Failure Reason (PS3.18 Table I.2-2) for an archive error; UIDs default to those it names."""
    sop_class = sop_class or exc.sop_class_uid
    sop_instance = sop_instance or exc.sop_instance_uid
    if isinstance(exc, errors.StorageFull):
        reason = OUT_OF_RESOURCES
    elif isinstance(exc, errors.SOPClassMismatch | errors.SOPInstanceMismatch | errors.MissingAttribute):
        reason = DATASET_DOES_NOT_MATCH_SOP_CLASS
    elif isinstance(exc, errors.StudyMismatch):
        reason = STUDY_UID_MISMATCH
    elif isinstance(exc, wic.UnsupportedContent):
        reason = TRANSFER_SYNTAX_NOT_SUPPORTED
    elif isinstance(exc, errors.Invalid):
        reason = CANNOT_UNDERSTAND
    elif isinstance(exc, errors.Conflict):
        reason = DUPLICATE_SOP_INSTANCE
    else:
        reason = PROCESSING_FAILURE
    return _Failed(reason, str(exc), sop_class, sop_instance)


def _fail(outcome: Outcome, failure: _Failed, what: str = "") -> None:
    log.info("STOW-RS %s failed (0x%04X): %s", what or "part", failure.reason, failure)
    item = Dataset()
    item.ReferencedSOPClassUID = failure.sop_class or None
    item.ReferencedSOPInstanceUID = failure.sop_instance or None
    item.FailureReason = failure.reason
    outcome.failed.append(item)


# --- response ------------------------------------------------------------------------------------


def _response_dataset(outcome: Outcome, base: str, study: str | None) -> Dataset:
    """PS3.18 Table I.1-1; Retrieve URL (Type 2) names the study when there is exactly one."""
    ds = Dataset()
    studies = {study} if study else outcome.studies
    ds.RetrieveURL = f"{base}/studies/{next(iter(studies))}" if len(studies) == 1 else None
    if outcome.failed:
        ds.FailedSOPSequence = Sequence(outcome.failed)
    if outcome.stored:
        ds.ReferencedSOPSequence = Sequence(outcome.stored)
    return ds


def to_xml(ds: Dataset) -> bytes:
    """The PS3.19 Annex A Native DICOM Model of a small data set (strings, numbers, sequences)."""
    root = ElementTree.Element("NativeDicomModel", xmlns="http://dicom.nema.org/PS3.19/models/NativeDICOM")
    _xml_attributes(root, ds)
    return ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)


def _xml_attributes(parent: ElementTree.Element, ds: Dataset) -> None:
    for element in ds:
        attributes = {"tag": f"{element.tag:08X}", "vr": element.VR, "keyword": keyword_for_tag(element.tag)}
        node = ElementTree.SubElement(parent, "DicomAttribute", attributes)
        if element.VR == "SQ":
            for number, item in enumerate(element.value, 1):
                _xml_attributes(ElementTree.SubElement(node, "Item", number=str(number)), item)
        elif element.value not in (None, ""):
            values = element.value if element.VM > 1 else [element.value]
            for number, value in enumerate(values, 1):
                ElementTree.SubElement(node, "Value", number=str(number)).text = str(value)
