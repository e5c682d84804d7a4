"""Storage commitment, protocol-free: does the archive really hold these instances, safely?

PS3.4 J.3.2.1.3 (and IHE RAD TF-2 RAD-10): before committing, the SCP must make sure it holds
each referenced instance. A row in the index is not enough: like dcm4chee, Pergamon re-reads
each object from the blob store and compares its SHA-256 with the digest recorded when it was
stored, so a lost or damaged blob is reported as a failure instead of being committed.

The outcome per reference is one of `CommitFailure`; the DIMSE door maps them to the Failure
Reason (0008,1197) values of PS3.4 J.3.3.1.1 / PS3.3 C.14.1.1 (processing failure, no such
object instance, class-instance conflict).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, NamedTuple

from sqlalchemy import select

from pergamon.archive.index.schema import instance

if TYPE_CHECKING:
    from pergamon.archive.service import Archive

log = logging.getLogger(__name__)

# SOP Instance UIDs per index query: well below SQLite's and PostgreSQL's bound-parameter limits.
_QUERY_CHUNK = 500
_READ_CHUNK = 1 << 20


class Reference(NamedTuple):
    """One (SOP Class UID, SOP Instance UID) pair of a Referenced SOP Sequence item."""

    sop_class_uid: str
    sop_instance_uid: str


class CommitFailure(StrEnum):
    """Why a reference cannot be committed (stable strings; doors map them to their codes)."""

    NO_SUCH_INSTANCE = "no-such-instance"
    """Not in the index (never received, or removed)."""
    CLASS_INSTANCE_CONFLICT = "class-instance-conflict"
    """Stored, but under another SOP Class UID than the reference names."""
    PROCESSING_FAILURE = "processing-failure"
    """Indexed, but its blob is missing, unreadable or no longer matches its recorded SHA-256."""


@dataclass(frozen=True)
class CommitmentResult:
    """The committed references and the failed ones with their reasons, in request order."""

    committed: list[Reference] = field(default_factory=list)
    failed: list[tuple[Reference, CommitFailure]] = field(default_factory=list)

    @property
    def all_committed(self) -> bool:
        return not self.failed


class _Stored(NamedTuple):
    sop_class_uid: str
    blob_key: str
    size: int
    sha256: str


def check_commitment(archive: Archive, references: Sequence[Reference]) -> CommitmentResult:
    """Check every reference: indexed, same SOP class, blob present and intact (PS3.4 J.3.2.1.3).

    Reads every referenced blob in full (in 1 MiB chunks) to verify its digest, so the time this
    takes grows with the bytes referenced. A reference listed twice is checked and reported
    twice. Never raises for a bad reference; database errors propagate (the caller retries).
    """
    stored = _lookup(archive, {ref.sop_instance_uid for ref in references})
    result = CommitmentResult()
    verified: dict[str, CommitFailure | None] = {}
    for ref in references:
        row = stored.get(ref.sop_instance_uid)
        if row is None:
            failure: CommitFailure | None = CommitFailure.NO_SUCH_INSTANCE
        elif row.sop_class_uid != ref.sop_class_uid:
            log.info(
                "storage commitment: %s is stored as SOP class %s, not %s",
                ref.sop_instance_uid,
                row.sop_class_uid,
                ref.sop_class_uid,
            )
            failure = CommitFailure.CLASS_INSTANCE_CONFLICT
        else:
            if ref.sop_instance_uid not in verified:
                verified[ref.sop_instance_uid] = _verify_blob(archive, ref.sop_instance_uid, row)
            failure = verified[ref.sop_instance_uid]
        if failure is None:
            result.committed.append(ref)
        else:
            result.failed.append((ref, failure))
    return result


def _lookup(archive: Archive, sop_uids: Iterable[str]) -> dict[str, _Stored]:
    """Index rows of the given SOP Instance UIDs (absent ones are simply missing from the dict)."""
    uids = sorted(sop_uids)
    found: dict[str, _Stored] = {}
    with archive.db.read() as conn:
        for start in range(0, len(uids), _QUERY_CHUNK):
            chunk = uids[start : start + _QUERY_CHUNK]
            rows = conn.execute(
                select(
                    instance.c.sop_uid,
                    instance.c.sop_class_uid,
                    instance.c.blob_key,
                    instance.c.size,
                    instance.c.sha256,
                ).where(instance.c.sop_uid.in_(chunk))
            )
            for row in rows:
                found[row.sop_uid] = _Stored(row.sop_class_uid, row.blob_key, int(row.size), row.sha256)
    return found


def _verify_blob(archive: Archive, sop_uid: str, row: _Stored) -> CommitFailure | None:
    """None when the blob is present and matches its size and SHA-256, else the failure.

    If the blob vanished because the instance was replaced meanwhile (duplicate policy
    `replace` deletes the old blob after the new row commits), the new row is checked once.
    """
    problem = _blob_problem(archive, row)
    if problem is not None and problem.startswith("unreadable"):
        again = _lookup(archive, [sop_uid]).get(sop_uid)
        if again is None:
            return CommitFailure.NO_SUCH_INSTANCE
        if again != row:
            if again.sop_class_uid != row.sop_class_uid:
                return CommitFailure.CLASS_INSTANCE_CONFLICT
            row, problem = again, _blob_problem(archive, again)
    if problem is None:
        return None
    log.error("storage commitment: %s (blob %s) cannot be committed: %s", sop_uid, row.blob_key, problem)
    return CommitFailure.PROCESSING_FAILURE


def _blob_problem(archive: Archive, row: _Stored) -> str | None:
    """What is wrong with the stored bytes, or None when they are intact."""
    digest = hashlib.sha256()
    size = 0
    try:
        with archive.blobs.open(row.blob_key) as f:
            while chunk := f.read(_READ_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        return f"unreadable ({type(exc).__name__}: {exc})"
    if size != row.size:
        return f"size {size} differs from the recorded {row.size} bytes"
    if digest.hexdigest() != row.sha256:
        return f"SHA-256 {digest.hexdigest()} differs from the recorded {row.sha256}"
    return None
