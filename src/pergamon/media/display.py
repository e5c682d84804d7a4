"""`pergamon view PATH`: show CD/DVD/USB media in the viewer without importing it (IHE PDI Image Display).

The DICOMDIR's files are indexed through the normal ingest path into a throw-away SQLite index
in a temporary folder, with a `MediaBlobStore` whose keys are the media's own file paths: nothing
is copied, nothing is written to the media, no archive is touched. An HTTP-only Pergamon on
127.0.0.1 then serves the media as a read-only DICOMweb source, the bundled viewer at `/viewer/`,
and at `/` a page that shows the patient's identity prominently (name, ID and issuer, birth date,
sex), one viewer link per study, and every file that cannot be displayed, with the reason.

References: IHE RAD TF-1 PDI (Image Display actor, DVD and USB options), RAD TF-3 RAD-47.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import signal
import socket
import sys
import tempfile
import threading
import webbrowser
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.valuerep import PersonName
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from pergamon.archive import errors
from pergamon.archive.index.database import Database
from pergamon.archive.origin import Origin
from pergamon.archive.service import Archive
from pergamon.config import Settings
from pergamon.media.fileset import MediaError, MediaFile, find_dicomdir, referenced_files
from pergamon.media.readonly import MediaBlobStore

log = logging.getLogger(__name__)

_PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# SOP classes without pixel data that the bundled OHIF build displays (its SOP class handlers).
_DISPLAYED_WITHOUT_PIXELS = {
    "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR",
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR",
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT Structure Set",
    "1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF",
    "1.2.840.10008.5.1.4.1.1.9.1.1": "12-lead ECG",
    "1.2.840.10008.5.1.4.1.1.9.1.2": "General ECG",
}
_NOT_ON_THEIR_OWN = {
    "1.2.840.10008.5.1.4.1.1.88.59": "a key object selection (it selects images; not shown on its own)",
    "1.2.840.10008.5.1.4.1.1.11.1": "a presentation state (it applies to images; not shown on its own)",
}
_LEFT_OUT = {
    "1.2.840.10008.5.1.4.1.1.77.1.6": "whole-slide microscopy (left out of Pergamon's viewer)",
}


@dataclass
class Study:
    uid: str
    date: str = ""
    description: str = ""
    accession: str = ""
    modalities: set[str] = field(default_factory=set)
    instances: int = 0


@dataclass
class Patient:
    name: str
    patient_id: str
    issuer: str
    birth_date: str
    sex: str
    studies: dict[str, Study] = field(default_factory=dict)


@dataclass(frozen=True)
class Problem:
    file_id: str
    reason: str


@dataclass
class MediaReport:
    """What the media holds and what of it cannot be displayed."""

    root: Path
    patients: dict[tuple[str, str], Patient] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    displayed: int = 0


def display_problem(ds: Dataset) -> str | None:
    """Why the viewer cannot show this object, or None when it can."""
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class in _LEFT_OUT:
        return _LEFT_OUT[sop_class]
    if any(tag in ds for tag in _PIXEL_TAGS) or sop_class in _DISPLAYED_WITHOUT_PIXELS:
        return None
    if sop_class in _NOT_ON_THEIR_OWN:
        return _NOT_ON_THEIR_OWN[sop_class]
    name = getattr(ds.SOPClassUID, "name", sop_class) if "SOPClassUID" in ds else "unknown"
    return f"unknown SOP class for the viewer: {name} ({sop_class})"


def index_media(archive: Archive, root: Path, files: list[MediaFile]) -> MediaReport:
    """Index each referenced file (read-only) and gather patients, studies and problems."""
    report = MediaReport(root=root)
    for item in files:
        if item.path is None:
            report.problems.append(Problem(item.file_id, "missing: listed in the DICOMDIR but not on the media"))
            continue
        try:
            archive.store_file(item.path, Origin("media", path=str(item.path)))
            ds = dcmread(item.path, defer_size=256)
        except errors.PergamonError as exc:
            report.problems.append(Problem(item.file_id, f"unreadable: {exc}"))
            continue
        except Exception as exc:  # pydicom raises many kinds on corrupt input
            report.problems.append(Problem(item.file_id, f"unreadable: {exc}"))
            continue
        problem = display_problem(ds)
        if problem is not None:
            report.problems.append(Problem(item.file_id, problem))
        else:
            report.displayed += 1
        _add_to_patient(report, ds)
    return report


def _add_to_patient(report: MediaReport, ds: Dataset) -> None:
    key = (str(ds.get("PatientID", "")), str(ds.get("IssuerOfPatientID", "")))
    patient = report.patients.get(key)
    if patient is None:
        patient = report.patients[key] = Patient(
            name=_person_name(ds.get("PatientName")),
            patient_id=key[0],
            issuer=key[1],
            birth_date=_date(str(ds.get("PatientBirthDate", ""))),
            sex={"M": "Male", "F": "Female", "O": "Other"}.get(str(ds.get("PatientSex", "")), "unknown"),
        )
    uid = str(ds.StudyInstanceUID)
    study = patient.studies.setdefault(uid, Study(uid))
    study.date = study.date or _date(str(ds.get("StudyDate", "")))
    study.description = study.description or str(ds.get("StudyDescription", ""))
    study.accession = study.accession or str(ds.get("AccessionNumber", ""))
    if ds.get("Modality"):
        study.modalities.add(str(ds.Modality))
    study.instances += 1


def _person_name(value: Any) -> str:
    if not value:
        return "(no name)"
    name = PersonName(value) if not isinstance(value, PersonName) else value
    given = " ".join(p for p in (name.given_name, name.middle_name) if p)
    text = ", ".join(p for p in (name.family_name, given) if p)
    return " ".join(p for p in (name.name_prefix, text, name.name_suffix) if p) or str(value)


def _date(text: str) -> str:
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 and text.isdigit() else text


def media_settings(settings: Settings, workdir: Path, port: int) -> Settings:
    """Settings of the throw-away instance: index in `workdir`, HTTP on 127.0.0.1 only, no audit trail."""
    return dataclasses.replace(
        settings,
        server=dataclasses.replace(settings.server, data_dir=workdir),
        database=dataclasses.replace(settings.database, url=f"sqlite:///{workdir / 'index.sqlite'}"),
        http=dataclasses.replace(settings.http, host="127.0.0.1", port=port, cors_origins=""),
        dicom=dataclasses.replace(settings.dicom, duplicate_policy="ignore"),
        storage=dataclasses.replace(settings.storage, fsync=False),
        audit=dataclasses.replace(settings.audit, enabled=False),
    )


def open_media(settings: Settings, media: Path, workdir: Path, port: int = 0) -> tuple[Archive, MediaReport]:
    """An archive over the media (index in `workdir`) and the report of what it holds.

    Raises:
        MediaError: no readable DICOMDIR.
    """
    dicomdir = find_dicomdir(media)
    files = referenced_files(dicomdir)
    local = media_settings(settings, workdir, port)
    db = Database(local.database_url, pool_size=1)
    db.migrate()
    archive = Archive(local, db, MediaBlobStore(dicomdir.parent))
    return archive, index_media(archive, dicomdir.parent.resolve(), files)


def build_media_app(archive: Archive, report: MediaReport) -> Starlette:
    """Pergamon's HTTP door over the media, with the media page at `/`."""
    from pergamon.web.app import build_app

    app = build_app(archive)
    page = render_page(report)

    async def media_page(request: Request) -> Response:
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    app.router.routes.insert(0, Route("/", media_page, methods=["GET", "HEAD"]))
    return app


def run_view(settings: Settings, media: Path, *, port: int = 0, open_browser: bool = False) -> int:
    """`pergamon view`: serve the media until Ctrl-C / SIGTERM; the temporary index goes with it."""
    with tempfile.TemporaryDirectory(prefix="pergamon-view-") as tmp:
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            print(f"pergamon view: cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        port = int(sock.getsockname()[1])
        try:
            archive, report = open_media(settings, media, Path(tmp), port)
        except MediaError as exc:
            sock.close()
            print(f"pergamon view: {exc}", file=sys.stderr)
            return 2
        try:
            url = f"http://127.0.0.1:{port}/"
            patients = ", ".join(f"{p.name} ({p.patient_id})" for p in report.patients.values()) or "none"
            print(f"Media {report.root}: patient(s) {patients}; {report.displayed} object(s) to display")
            for problem in report.problems:
                print(f"  cannot display {problem.file_id}: {problem.reason}")
            print(f"Pergamon media viewer: {url} (read-only; Ctrl-C to stop)", flush=True)
            if open_browser:
                webbrowser.open(url)
            sock.listen(64)
            serve_until_signalled(build_media_app(archive, report), sock)
        finally:
            sock.close()
            archive.close()
    return 0


def serve_until_signalled(app: Starlette, sock: socket.socket) -> None:
    """Serve on `sock` until SIGTERM or SIGINT, then return (so the temporary index is removed).

    uvicorn runs on a thread: on the main thread it would re-raise the signal after its shutdown,
    ending the process before the caller could clean up.
    """
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="pergamon-view", daemon=True)
    thread.start()
    try:
        while not stop.wait(0.5) and thread.is_alive():
            pass
    finally:
        server.should_exit = True
        thread.join(10)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 0; background: #f5f6f8; color: #1d2330; }
header { background: #1d2330; color: #fff; padding: 0.8em 1.5em; }
header h1 { font-size: 1.2em; margin: 0 0 0.2em; }
main { padding: 1em 1.5em; }
.patient { background: #fff; border-left: 0.5em solid #2457c5; padding: 1em 1.5em; margin-bottom: 1.2em; }
.patient .name { font-size: 2em; font-weight: 700; margin: 0; }
.patient dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; font-size: 1.15em; }
.patient dt { color: #4b5466; } .patient dd { margin: 0; font-weight: 600; }
.warning { background: #fff3cd; border: 1px solid #e0b400; padding: 0.6em 1em; margin-bottom: 1em; }
table { border-collapse: collapse; width: 100%; background: #fff; margin: 0.5em 0 1em; }
th, td { text-align: left; padding: 0.4em 0.7em; border-bottom: 1px solid #e1e4ea; }
th { background: #e9ecf1; }
"""


def render_page(report: MediaReport) -> str:
    """The media page: patient identity first, the studies with viewer links, then what cannot be shown."""
    e = html.escape
    parts = [
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Media - Pergamon</title>'
        f"<style>{_STYLE}</style></head><body>",
        f"<header><h1>Pergamon: media {e(str(report.root))}</h1>"
        "Shown read-only from the media: nothing is imported into any archive.</header><main>",
    ]
    if len(report.patients) > 1:
        parts.append(f'<p class="warning">This media holds studies of {len(report.patients)} different patients.</p>')
    if not report.patients:
        parts.append('<p class="warning">No displayable DICOM object was found on this media.</p>')
    for patient in report.patients.values():
        parts.append(
            f'<section class="patient" data-patient-id="{e(patient.patient_id)}">'
            f'<p class="name">{e(patient.name)}</p><dl>'
            f"<dt>Patient ID</dt><dd>{e(patient.patient_id) or '(none)'}</dd>"
            f"<dt>Issuer of Patient ID</dt><dd>{e(patient.issuer) or '(not given)'}</dd>"
            f"<dt>Birth date</dt><dd>{e(patient.birth_date) or '(not given)'}</dd>"
            f"<dt>Sex</dt><dd>{e(patient.sex)}</dd></dl>"
            "<table><thead><tr><th>Study date</th><th>Description</th><th>Modalities</th><th>Accession</th>"
            "<th>Objects</th><th>Open</th></tr></thead><tbody>"
        )
        for study in patient.studies.values():
            modalities = ", ".join(sorted(study.modalities))
            links = f'<a class="open" href="/viewer/viewer?StudyInstanceUIDs={e(study.uid)}">Open in viewer</a>'
            if "MG" in study.modalities:
                links += f' <a class="mammo" href="/mammo/?study={e(study.uid)}">Mammography</a>'
            parts.append(
                f'<tr data-study-instance-uid="{e(study.uid)}"><td>{e(study.date)}</td><td>{e(study.description)}</td>'
                f"<td>{e(modalities)}</td><td>{e(study.accession)}</td><td>{study.instances}</td><td>{links}</td></tr>"
            )
        parts.append("</tbody></table></section>")
    if report.problems:
        parts.append(
            '<section id="not-displayed"><h2>Cannot be displayed</h2><table><thead><tr><th>File</th><th>Why</th>'
            "</tr></thead><tbody>"
        )
        for problem in report.problems:
            parts.append(f"<tr><td>{e(problem.file_id)}</td><td>{e(problem.reason)}</td></tr>")
        parts.append("</tbody></table></section>")
    parts.append("</main></body></html>")
    return "".join(parts)
