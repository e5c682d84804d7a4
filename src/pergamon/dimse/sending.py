"""Sending stored instances as C-STORE sub-operations (PS3.4 B.2; C.4.2.3, C.4.3.3), bit-preserving.

Shared by C-MOVE (to the move destination, on associations opened here), C-GET (back to the
requestor, on its own association) and later by routing. An instance leaves as its stored file,
streamed by pynetdicom (`STORE_SEND_CHUNKED_DATASET`, set at startup) without being decoded, when
the receiver accepted its stored transfer syntax; otherwise `archive.retrieve.outgoing` converts
it to Explicit or Implicit VR Little Endian, and an instance that cannot be converted fails on
its own while the others go on.

Presentation contexts (PS3.7 D.3.2, PS3.8 9.3.2.2): for each SOP class, one context per stored
transfer syntax holding that syntax alone, so a receiver that supports it cannot pick another one,
plus one context with the uncompressed fallbacks not already proposed. At most 128 contexts fit
in one association (context IDs are the odd numbers 1-255); a move with more is split into
several associations, each SOP class wholly in one.
"""

from __future__ import annotations

import enum
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.dsutils import split_dataset
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.status import code_to_category

from pergamon.archive import errors
from pergamon.archive.retrieve import UNCOMPRESSED_FALLBACK, CannotConvert, StoredInstance, outgoing
from pergamon.archive.service import Archive
from pergamon.config import RemoteAE
from pergamon.dimse import network

log = logging.getLogger(__name__)

MAX_PRESENTATION_CONTEXTS = 128
"""PS3.8 9.3.2.2: presentation context IDs are odd integers 1-255."""


class Outcome(enum.Enum):
    """How a C-STORE sub-operation ended, as the retrieve counters count it (PS3.4 C.4.2.1.5)."""

    COMPLETED = "completed"
    WARNING = "warning"
    FAILED = "failed"


@dataclass(frozen=True)
class SubOperationResult:
    """The outcome of sending one instance, with the receiver's status and a reason when not clean."""

    outcome: Outcome
    status: int | None = None
    reason: str = ""
    transcoded_to: str = ""

    @classmethod
    def failed(cls, reason: str, status: int | None = None) -> SubOperationResult:
        return cls(Outcome.FAILED, status, reason)


@dataclass
class AssociationPlan:
    """The presentation contexts of one outgoing association and the instances sent over it."""

    contexts: list[PresentationContext]
    instances: list[StoredInstance] = field(default_factory=list)


def proposed_contexts(sop_class: str, stored_syntaxes: Sequence[str]) -> list[PresentationContext]:
    """The contexts proposed for one SOP class: each stored syntax alone, then the fallbacks."""
    singles = list(dict.fromkeys(stored_syntaxes))
    contexts = [build_context(sop_class, [ts]) for ts in singles]
    fallback = [ts for ts in UNCOMPRESSED_FALLBACK if ts not in singles]
    if fallback:
        contexts.append(build_context(sop_class, fallback))
    return contexts


def plan_associations(
    instances: Sequence[StoredInstance], *, limit: int = MAX_PRESENTATION_CONTEXTS
) -> list[AssociationPlan]:
    """Group instances into associations of at most `limit` contexts, keeping each SOP class whole.

    Raises:
        ValueError: one SOP class alone needs more than `limit` contexts (more distinct stored
            transfer syntaxes than DICOM defines; cannot happen with valid data).
    """
    syntaxes: dict[str, list[str]] = {}
    for stored in instances:
        known = syntaxes.setdefault(stored.sop_class_uid, [])
        if stored.transfer_syntax not in known:
            known.append(stored.transfer_syntax)
    plans: list[AssociationPlan] = []
    plan_of_class: dict[str, AssociationPlan] = {}
    for sop_class, stored_syntaxes in syntaxes.items():
        contexts = proposed_contexts(sop_class, stored_syntaxes)
        if len(contexts) > limit:
            raise ValueError(f"{UID(sop_class).name} alone needs {len(contexts)} presentation contexts (> {limit})")
        if not plans or len(plans[-1].contexts) + len(contexts) > limit:
            plans.append(AssociationPlan(contexts=[]))
        plans[-1].contexts.extend(contexts)
        plan_of_class[sop_class] = plans[-1]
    for stored in instances:
        plan_of_class[stored.sop_class_uid].instances.append(stored)
    return plans


def accepted_syntaxes(assoc: Association, sop_class: str) -> list[str]:
    """Transfer syntaxes the peer accepted for `sop_class` with us in the Storage SCU role."""
    return [
        str(cx.transfer_syntax[0])
        for cx in assoc.accepted_contexts
        if cx.abstract_syntax == sop_class and cx.as_scu and cx.transfer_syntax
    ]


def send_instance(
    assoc: Association,
    archive: Archive,
    stored: StoredInstance,
    *,
    msg_id: int,
    move_originator: tuple[str, int] | None = None,
) -> SubOperationResult:
    """One C-STORE sub-operation: the stored file if its syntax was accepted, else a conversion.

    `move_originator` is (AE title, Message ID) of the C-MOVE this sub-operation serves
    (PS3.7 9.1.1.1: Move Originator Application Entity Title and Message ID).
    """
    accepted = accepted_syntaxes(assoc, stored.sop_class_uid)
    if not accepted:
        return SubOperationResult.failed(f"no presentation context accepted for {UID(stored.sop_class_uid).name}")
    try:
        leaving = outgoing(archive, stored, accepted)
    except (CannotConvert, errors.NotFound) as exc:
        return SubOperationResult.failed(str(exc))
    except Exception as exc:  # an unreadable stored object fails its sub-operation only
        log.exception("cannot prepare %s for sending", stored.sop_instance_uid)
        return SubOperationResult.failed(f"cannot read stored object: {type(exc).__name__}: {exc}")
    if leaving.is_stored_file and not _config.STORE_SEND_CHUNKED_DATASET:
        log.warning("STORE_SEND_CHUNKED_DATASET is off: %s is decoded and re-encoded", stored.sop_instance_uid)
    originator = {}
    if move_originator is not None:
        originator = {"originator_aet": move_originator[0], "originator_id": move_originator[1]}
    content = leaving.content
    padded: Path | None = None
    if leaving.is_stored_file and leaving.transfer_syntax == DeflatedExplicitVRLittleEndian:
        padded = _even_length_copy(Path(str(content)))
        content = padded or content
    try:
        response = assoc.send_c_store(content, msg_id=msg_id, **originator)  # type: ignore[arg-type]
    except Exception as exc:  # no context, lost association, unreadable file: this sub-operation fails
        return SubOperationResult.failed(f"C-STORE not sent: {type(exc).__name__}: {exc}")
    finally:
        if padded is not None:
            padded.unlink(missing_ok=True)
    status = response.get("Status") if response else None
    transcoded = "" if leaving.transfer_syntax == stored.transfer_syntax else leaving.transfer_syntax
    if status is None:
        return SubOperationResult.failed("no C-STORE response (timeout or association lost)")
    category = code_to_category(int(status))
    if category == "Success":
        return SubOperationResult(Outcome.COMPLETED, int(status), transcoded_to=transcoded)
    comment = str(response.get("ErrorComment", "") or "")
    if category == "Warning":
        return SubOperationResult(Outcome.WARNING, int(status), comment, transcoded)
    return SubOperationResult.failed(f"receiver answered 0x{int(status):04X} {comment}".strip(), int(status))


def _even_length_copy(path: Path) -> Path | None:
    """A copy of a deflated object padded to even length, or None when it already is even.

    PS3.5 A.5 pads an odd-length deflated stream with one trailing zero byte; some senders
    omit it (pydicom's image_dfl.dcm), and dcmtk receivers abort on the odd PDV. The stored
    original is left as received; only the copy that leaves is padded.
    """
    _meta, offset = split_dataset(path)
    if (path.stat().st_size - offset) % 2 == 0:
        return None
    handle, name = tempfile.mkstemp(suffix=".dcm")
    with os.fdopen(handle, "wb") as copy, open(path, "rb") as source:
        shutil.copyfileobj(source, copy)
        copy.write(b"\x00")
    return Path(name)


class Sender(Protocol):
    """Sends the instances of one retrieve, in the order it chooses, over whatever associations it needs."""

    @property
    def destination(self) -> str: ...

    def ordered(self) -> list[StoredInstance]: ...

    def send(self, stored: StoredInstance) -> SubOperationResult: ...

    def close(self) -> None: ...


class _MessageIds:
    """Message IDs for requests on one association: 1-65535, wrapping (PS3.7 9.3.1.1 US)."""

    def __init__(self, start: int = 1) -> None:
        self._next = start

    def take(self) -> int:
        value = (self._next - 1) % 0xFFFF + 1
        self._next = value + 1
        return value


class DestinationSender:
    """C-STOREs to a configured peer (C-MOVE, routing): one association per plan, opened on demand."""

    def __init__(
        self,
        ae: AE,
        archive: Archive,
        remote: RemoteAE,
        instances: Sequence[StoredInstance],
        *,
        move_originator: tuple[str, int] | None = None,
    ) -> None:
        self.ae = ae
        self.archive = archive
        self.remote = remote
        self.move_originator = move_originator
        self.plans = plan_associations(instances)
        self._plan_index = {s.sop_instance_uid: i for i, plan in enumerate(self.plans) for s in plan.instances}
        self._current = -1
        self._assoc: Association | None = None
        self._refusal = ""
        self._ids = _MessageIds()

    @property
    def destination(self) -> str:
        return self.remote.ae_title

    def ordered(self) -> list[StoredInstance]:
        return [stored for plan in self.plans for stored in plan.instances]

    def send(self, stored: StoredInstance) -> SubOperationResult:
        index = self._plan_index[stored.sop_instance_uid]
        if index != self._current:
            self._open(index)
        if self._assoc is None:
            return SubOperationResult.failed(self._refusal)
        if not self._assoc.is_established:
            return SubOperationResult.failed(f"association with {self.remote.ae_title} was lost")
        return send_instance(
            self._assoc, self.archive, stored, msg_id=self._ids.take(), move_originator=self.move_originator
        )

    def _open(self, index: int) -> None:
        self.close()
        self._current = index
        self._ids = _MessageIds()
        plan = self.plans[index]
        remote = self.remote
        assoc = self.ae.associate(
            remote.host,
            remote.port,
            contexts=plan.contexts,
            ae_title=remote.ae_title,
            evt_handlers=network.CONNECTION_HANDLERS,
            tls_args=network.tls_args(self.archive, remote),
        )
        if assoc.is_established:
            self._assoc = assoc
            log.debug(
                "association %d/%d with %s: %d contexts proposed, %d accepted",
                index + 1,
                len(self.plans),
                remote.ae_title,
                len(plan.contexts),
                len(assoc.accepted_contexts),
            )
            return
        if assoc.is_rejected:
            self._refusal = f"{remote.ae_title} rejected the association"
        else:
            over = " over TLS" if remote.tls else ""
            self._refusal = f"cannot associate with {remote.ae_title} at {remote.host}:{remote.port}{over}"
        log.warning("%s (%d instance(s) fail)", self._refusal, len(plan.instances))

    def close(self) -> None:
        """Release the open association, if any (safe to call more than once)."""
        assoc, self._assoc = self._assoc, None
        if assoc is not None and assoc.is_established:
            assoc.release()


class RequestorSender:
    """C-STOREs back over the requestor's own association (C-GET, PS3.4 C.4.3.3)."""

    def __init__(
        self, assoc: Association, archive: Archive, instances: Sequence[StoredInstance], first_id: int
    ) -> None:
        self.assoc = assoc
        self.archive = archive
        self.instances = list(instances)
        self._ids = _MessageIds(first_id)

    @property
    def destination(self) -> str:
        return str(self.assoc.requestor.ae_title).strip()

    def ordered(self) -> list[StoredInstance]:
        return self.instances

    def send(self, stored: StoredInstance) -> SubOperationResult:
        if not self.assoc.is_established:
            return SubOperationResult.failed("the requestor's association was lost")
        return send_instance(self.assoc, self.archive, stored, msg_id=self._ids.take())

    def close(self) -> None:
        """Nothing to release: the association belongs to the requestor."""
