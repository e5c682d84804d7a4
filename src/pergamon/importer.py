"""`pergamon import PATH...`: index a folder tree of DICOM files through the normal ingest path.

Each file is copied into the blob store exactly as it is (the source is left untouched) and
indexed as a C-STORE would be, so the same checks and duplicate policy apply. A progress bar
shows files done; at the end a summary lists what was stored and what failed, and why.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from pergamon.archive import errors
from pergamon.archive.ingest import StoreOutcome
from pergamon.archive.origin import Origin
from pergamon.archive.service import Archive
from pergamon.audit.sender import AuditSender
from pergamon.audit.trail import AuditTrail
from pergamon.config import Settings

log = logging.getLogger(__name__)

# Files found on media and in archive copies that are not instances to import.
SKIPPED_NAMES = frozenset({"DICOMDIR", "README", "README.TXT", "INDEX.HTM", ".DS_Store", "Thumbs.db"})


def iter_files(paths: list[Path]) -> Iterator[Path]:
    """Every regular file under the given files and folders, in a stable order."""
    for path in paths:
        if path.is_file():
            yield path
            continue
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                yield Path(root) / name


def run_import(settings: Settings, paths: list[Path], *, progress: bool = True) -> int:
    """Import the files; returns 0 when every candidate file was stored, 1 when some failed."""
    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"pergamon import: no such file or folder: {missing[0]}", file=sys.stderr)
        return 2
    archive = Archive.open(settings)
    # PHI-import is audited (ITI TF-2 Table 3.20.4.1.1.1-1; PS3.15 A.5.3.8 Import): the messages go to
    # the durable audit spool, delivered now or by the next `pergamon serve`.
    sender = AuditSender(archive)
    if settings.audit.enabled:
        archive.bus.subscribe(AuditTrail(archive, sink=sender.send).handle)
    sender.start()
    try:
        outcomes, failures, skipped = import_files(archive, list(iter_files(paths)), progress=progress)
    finally:
        sender.stop()
        archive.close()
    print_summary(outcomes, failures, skipped)
    return 1 if failures else 0


def import_files(
    archive: Archive, files: list[Path], *, progress: bool = True
) -> tuple[Counter[StoreOutcome], list[tuple[Path, str]], int]:
    """Store each file; returns outcome counts, (file, reason) failures and the number skipped."""
    outcomes: Counter[StoreOutcome] = Counter()
    failures: list[tuple[Path, str]] = []
    skipped = 0
    bar = tqdm(files, unit="file", disable=not progress, file=sys.stderr, desc="import")
    for path in bar:
        if path.name.upper() in SKIPPED_NAMES or path.name in SKIPPED_NAMES:
            skipped += 1
            continue
        try:
            result = archive.store_file(path, Origin.from_import(str(path)), move=False)
        except errors.PergamonError as exc:
            failures.append((path, str(exc)))
            log.debug("import of %s failed: %s", path, exc)
            continue
        except OSError as exc:
            failures.append((path, f"cannot read: {exc}"))
            continue
        outcomes[result.outcome] += 1
        bar.set_postfix(stored=sum(outcomes.values()), failed=len(failures), refresh=False)
    return outcomes, failures, skipped


def print_summary(outcomes: Counter[StoreOutcome], failures: list[tuple[Path, str]], skipped: int) -> None:
    stored = outcomes[StoreOutcome.STORED]
    replaced = outcomes[StoreOutcome.REPLACED]
    ignored = outcomes[StoreOutcome.DUPLICATE_IGNORED]
    print(
        f"imported {stored} new, {replaced} replaced, {ignored} duplicates ignored, "
        f"{skipped} skipped, {len(failures)} failed",
        file=sys.stderr,
    )
    for path, reason in failures[:50]:
        print(f"  failed: {path}: {reason}", file=sys.stderr)
    if len(failures) > 50:
        print(f"  ... and {len(failures) - 50} more", file=sys.stderr)
