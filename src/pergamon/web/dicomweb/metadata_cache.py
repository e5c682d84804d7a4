"""Each stored instance's WADO-RS metadata, rendered once and kept as a file.

Rendering an instance's DICOM JSON from its file costs milliseconds (header parse, element
conversion), and viewers ask for a series' metadata again and again. A stored object never changes
(blob keys are never reused), so its rendering is kept under `<data_dir>/cache/metadata-v1/`, with
BulkDataURIs relative to the DICOMweb root. When it is served, patient values reconciled later (IHE
PIR) and the request's own base URL are put in. The folder may be deleted at any time: a missing
entry is rendered again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pydicom import dcmread

from pergamon.archive import frames, patients
from pergamon.archive.retrieve import StoredInstance
from pergamon.archive.service import Archive

log = logging.getLogger(__name__)

VERSION = "metadata-v1"  # a change to the rendering needs a new folder name
_BULK_KEY = '"BulkDataURI": "'  # json.dumps escapes quotes in values, so this only matches the key


def folder(archive: Archive) -> Path:
    return archive.settings.server.data_dir / "cache" / VERSION


def texts(
    archive: Archive,
    instances: Sequence[StoredInstance],
    base: str,
    render: Callable[[frames.InstanceHeader, str], dict[str, Any]],
) -> Iterator[str]:
    """Each instance's metadata as JSON text with absolute BulkDataURIs under `base`; unreadable ones left out.

    `render(header, bulk_base)` builds one instance's model (`wado.instance_json`). Patient values are
    looked up once per study: every instance of a study belongs to the same patient.
    """
    patches: dict[str, dict[str, Any] | None] = {}
    for stored in instances:
        try:
            text = _cached(archive, stored, render)
        except Exception as exc:
            log.warning("metadata of %s left out: %s", stored.sop_instance_uid, exc)
            continue
        if stored.study_uid not in patches:
            patches[stored.study_uid] = patients.outgoing_patch(archive, stored.sop_instance_uid)
        patch = patches[stored.study_uid]
        if patch is not None:
            model = patients.apply_patch_json(json.loads(text), patch)
            text = json.dumps(model, ensure_ascii=False, allow_nan=False)
        yield text.replace(_BULK_KEY, f"{_BULK_KEY}{base}/")


def prepare(
    archive: Archive, stored: StoredInstance, render: Callable[[frames.InstanceHeader, str], dict[str, Any]]
) -> bool:
    """Render `stored` into the cache unless it is there; whether it was rendered now."""
    if _path(archive, stored).exists():
        return False
    _render(archive, stored, render)
    return True


def _path(archive: Archive, stored: StoredInstance) -> Path:
    return folder(archive) / f"{hashlib.sha256(stored.blob_key.encode()).hexdigest()}.json"


def _cached(
    archive: Archive, stored: StoredInstance, render: Callable[[frames.InstanceHeader, str], dict[str, Any]]
) -> str:
    """The stored rendering, made now if missing."""
    try:
        return _path(archive, stored).read_text(encoding="utf-8")
    except FileNotFoundError:
        return _render(archive, stored, render)


def _render(
    archive: Archive, stored: StoredInstance, render: Callable[[frames.InstanceHeader, str], dict[str, Any]]
) -> str:
    """Render `stored` and keep it (written whole by rename: readers never see half)."""
    path = _path(archive, stored)
    directory = path.parent
    content = archive.blobs.path(stored.blob_key)
    if content is None:  # a store without local files
        with archive.blobs.open(stored.blob_key) as f:
            source: Path | Any = dcmread(f)
    else:
        source = content
    instance = f"studies/{stored.study_uid}/series/{stored.series_uid}/instances/{stored.sop_instance_uid}"
    text = json.dumps(render(frames.read_header(source), f"{instance}/bulkdata"), ensure_ascii=False, allow_nan=False)
    directory.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=directory, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(temporary, path)
    return text
