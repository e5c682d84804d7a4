"""The files a media's DICOMDIR references (DICOM PS3.10 File-set, PS3.3 F.3 Basic Directory IOD).

Every directory record with a Referenced File ID (0004,1500) names one file of the File-set, as
path components relative to the DICOMDIR's folder. Media burnt on ISO 9660 are often mounted
with lower-case names, so each component is looked up case-insensitively when the exact name is
not there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError


class MediaError(Exception):
    """The folder is not readable media: no DICOMDIR, or an unreadable one."""


@dataclass(frozen=True)
class MediaFile:
    """One file the DICOMDIR lists."""

    file_id: str
    """The Referenced File ID as written, components joined with `/`."""
    path: Path | None
    """The file on the media; None when it is missing."""
    record_type: str
    sop_class_uid: str


def find_dicomdir(media: Path) -> Path:
    """The DICOMDIR of a media folder (or the DICOMDIR file itself).

    Raises:
        MediaError: there is none.
    """
    if media.is_file():
        return media
    if not media.is_dir():
        raise MediaError(f"{media}: no such folder")
    for name in ("DICOMDIR", "dicomdir"):
        if (media / name).is_file():
            return media / name
    found = [p for p in media.iterdir() if p.name.upper() == "DICOMDIR" and p.is_file()]
    if not found:
        raise MediaError(f"{media}: no DICOMDIR (not DICOM media; use `pergamon import` for a plain folder)")
    return found[0]


def referenced_files(dicomdir: Path) -> list[MediaFile]:
    """Every file the DICOMDIR references, in record order, once each.

    Raises:
        MediaError: the DICOMDIR cannot be read.
    """
    try:
        ds = dcmread(dicomdir)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise MediaError(f"{dicomdir}: not a readable DICOMDIR ({exc})") from exc
    root = dicomdir.parent
    files: list[MediaFile] = []
    seen: set[str] = set()
    for record in ds.get("DirectoryRecordSequence", []):
        file_id = record.get("ReferencedFileID")
        if not file_id:
            continue
        parts = [str(file_id)] if isinstance(file_id, str) else [str(p) for p in file_id]
        key = "/".join(parts)
        if key in seen:
            continue
        seen.add(key)
        files.append(
            MediaFile(
                file_id=key,
                path=_lookup(root, parts),
                record_type=str(record.get("DirectoryRecordType", "")),
                sop_class_uid=str(record.get("ReferencedSOPClassUIDInFile", "")),
            )
        )
    return files


def _lookup(root: Path, parts: list[str]) -> Path | None:
    """The file at `parts` under `root`, matching each component case-insensitively if needed."""
    path = root
    for part in parts:
        exact = path / part
        if exact.exists():
            path = exact
            continue
        if not path.is_dir():
            return None
        match = [p for p in path.iterdir() if p.name.upper() == part.upper()]
        if not match:
            return None
        path = match[0]
    return path if path.is_file() else None
