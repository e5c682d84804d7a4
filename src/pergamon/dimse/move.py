"""Retrieve SCP door (C-MOVE), PS3.4 C.4.2; IHE RAD-16/17/31/45. Also the retrieve machinery C-GET shares.

A C-MOVE names a destination AE title; Pergamon looks it up in `[[dicom.remote]]` (unknown:
0xA801), locates the instances the identifier designates (`archive.retrieve`), sends them with
C-STORE sub-operations over its own association(s) to the destination (`dimse.sending`), and
answers with Pending responses carrying the sub-operation counts, then one final response
(PS3.4 C.4.2.1.5, C.4.2.3.1): Success 0x0000 when every sub-operation succeeded, Warning 0xB000
when some failed or ended in a warning, Failure 0xA702 when all failed, Cancel 0xFE00 after a
C-CANCEL (checked between sub-operations), each non-success one with the Failed SOP Instance UID
List (0008,0058).

Why the handlers send their responses themselves: pynetdicom's Query/Retrieve service performs the
sub-operations for a handler, but only from Datasets it re-encodes in memory, over a single
association it opens, and it counts only what it sent itself. Bit-preserving retrieve streams the
stored file (`send_c_store(path)`), a move may need several associations, and the counts must say
what happened. `install_retrieve_responses` therefore lets a handler marked `@responds_itself` run
the whole operation and yield every C-MOVE / C-GET response as a `RetrieveResponse`, which the
service sends unchanged; handlers without the mark keep pynetdicom's behaviour.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any, TypeVar

from pydicom import Dataset
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.dsutils import encode
from pynetdicom.events import Event
from pynetdicom.service_class import QueryRetrieveServiceClass

from pergamon.archive import errors
from pergamon.archive.events import InstancesSent
from pergamon.archive.retrieve import StoredInstance, locate, parse_identifier
from pergamon.archive.service import Archive
from pergamon.dimse.sending import DestinationSender, Outcome, Sender, SubOperationResult
from pergamon.dimse.status import (
    CANCEL,
    MOVE_DESTINATION_UNKNOWN,
    PENDING,
    PENDING_WARNING,
    RETRIEVE_IDENTIFIER_DOES_NOT_MATCH,
    RETRIEVE_OUT_OF_RESOURCES_SUBOPS,
    RETRIEVE_SUBOPS_WARNING,
    RETRIEVE_UNABLE_TO_PROCESS,
    SUCCESS,
)
from pergamon.dimse.store import origin_of

log = logging.getLogger(__name__)

PATIENT_ROOT_MODELS = frozenset(
    {
        "1.2.840.10008.5.1.4.1.2.1.2",  # Patient Root Query/Retrieve Information Model - MOVE
        "1.2.840.10008.5.1.4.1.2.1.3",  # Patient Root Query/Retrieve Information Model - GET
    }
)
MAX_SUBOPERATIONS = 0xFFFF
"""The sub-operation counts are US (PS3.7 E.1): a retrieve cannot report more instances."""

_MARK = "pergamon_responds_itself"
_Handler = TypeVar("_Handler", bound=Callable[..., Any])


@dataclass(frozen=True)
class RetrieveResponse:
    """One C-MOVE / C-GET response (PS3.7 9.1.4.1 / 9.1.3.1): status, counts, failed UIDs, comment."""

    status: int
    remaining: int | None = None
    completed: int | None = None
    failed: int | None = None
    warning: int | None = None
    failed_uids: tuple[str, ...] | None = None
    comment: str = ""

    @property
    def is_final(self) -> bool:
        return self.status not in (PENDING, PENDING_WARNING)


class SubOperations:
    """The counters of PS3.4 C.4.2.1.5 and the responses they make."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.remaining = total
        self.completed = 0
        self.failed = 0
        self.warning = 0
        self.transcoded = 0
        self.failed_uids: list[str] = []
        self.sent_uids: list[str] = []

    def record(self, stored: StoredInstance, result: SubOperationResult) -> None:
        self.remaining -= 1
        if result.outcome is Outcome.FAILED:
            self.failed += 1
            self.failed_uids.append(stored.sop_instance_uid)
            return
        if result.outcome is Outcome.WARNING:
            self.warning += 1
        else:
            self.completed += 1
        self.sent_uids.append(stored.sop_instance_uid)
        if result.transcoded_to:
            self.transcoded += 1

    def pending(self) -> RetrieveResponse:
        return RetrieveResponse(PENDING, self.remaining, self.completed, self.failed, self.warning)

    def final(self) -> RetrieveResponse:
        """Success, Warning (some failed or warned) or Failure A702 (all failed), PS3.4 C.4.2.1.5."""
        if not self.failed and not self.warning:
            return RetrieveResponse(SUCCESS, None, self.completed, 0, 0)
        status = RETRIEVE_OUT_OF_RESOURCES_SUBOPS if self.failed == self.total else RETRIEVE_SUBOPS_WARNING
        return RetrieveResponse(status, None, self.completed, self.failed, self.warning, tuple(self.failed_uids))

    def cancelled(self) -> RetrieveResponse:
        return RetrieveResponse(
            CANCEL, self.remaining, self.completed, self.failed, self.warning, tuple(self.failed_uids)
        )


def perform_retrieve(
    event: Event,
    archive: Archive,
    operation: str,
    make_sender: Callable[[Sequence[StoredInstance]], Sender],
) -> Iterator[RetrieveResponse]:
    """Locate, send and report one C-MOVE or C-GET: the responses to send, final one last."""
    origin = origin_of(event)
    started = time.monotonic()
    who = f"{origin.calling_ae}@{origin.peer}"
    try:
        request = parse_identifier(event.identifier, patient_root=event.context.abstract_syntax in PATIENT_ROOT_MODELS)
    except errors.InvalidQuery as exc:
        log.info("%s from %s refused (0x%04X): %s", operation, who, RETRIEVE_IDENTIFIER_DOES_NOT_MATCH, exc)
        yield RetrieveResponse(RETRIEVE_IDENTIFIER_DOES_NOT_MATCH, comment=str(exc))
        return
    try:
        instances = locate(archive, request)
    except Exception as exc:
        log.exception("%s %s from %s: locating instances failed", operation, request.describe(), who)
        yield RetrieveResponse(RETRIEVE_UNABLE_TO_PROCESS, comment=f"cannot read the index: {type(exc).__name__}")
        return
    if len(instances) > MAX_SUBOPERATIONS:
        comment = f"{len(instances)} instances match; at most {MAX_SUBOPERATIONS} per request"
        log.info("%s %s from %s refused: %s", operation, request.describe(), who, comment)
        yield RetrieveResponse(RETRIEVE_OUT_OF_RESOURCES_SUBOPS, comment=comment)
        return
    counts = SubOperations(len(instances))
    if not instances:
        log.info("%s %s from %s: no matching instances", operation, request.describe(), who)
        yield counts.final()
        return

    sender = make_sender(instances)
    response: RetrieveResponse | None = None
    outcome = ""
    try:
        for stored in sender.ordered():
            if event.is_cancelled:
                response = counts.cancelled()
                break
            result = sender.send(stored)
            counts.record(stored, result)
            if result.outcome is Outcome.FAILED:
                log.warning(
                    "%s of %s to %s failed: %s", operation, stored.sop_instance_uid, sender.destination, result.reason
                )
            if counts.remaining:
                yield counts.pending()
        response = response or counts.final()
        outcome = f"0x{response.status:04X}"
        if response.status == CANCEL:
            outcome += f" (cancelled, {counts.remaining} remaining)"
    except GeneratorExit:
        outcome = f"abandoned: the requestor's association ended with {counts.remaining} remaining"
        raise
    finally:
        sender.close()
        log.info(
            "%s %s from %s to %s: %d instance(s), %d completed, %d warning, %d failed, %d transcoded -> %s in %.2f s",
            operation,
            request.describe(),
            who,
            sender.destination,
            counts.total,
            counts.completed,
            counts.warning,
            counts.failed,
            counts.transcoded,
            outcome or "error",
            time.monotonic() - started,
        )
        archive.bus.emit(
            InstancesSent(
                destination=sender.destination,
                sop_instance_uids=tuple(counts.sent_uids),
                failed=counts.failed,
                origin=origin,
            )
        )
    yield response


def responds_itself(handler: _Handler) -> _Handler:
    """Mark a C-MOVE / C-GET handler that yields `RetrieveResponse`s (see the module docstring)."""
    setattr(handler, _MARK, True)
    return handler


@responds_itself
def handle_move(event: Event, archive: Archive) -> Iterator[RetrieveResponse]:
    """C-MOVE SCP (PS3.4 C.4.2.2): send the designated instances to the named destination."""
    destination = (event.move_destination or "").strip()
    remote = archive.settings.remote_ae(destination)
    if remote is None:
        origin = origin_of(event)
        log.info(
            "C-MOVE from %s@%s refused (0x%04X): unknown move destination %r",
            origin.calling_ae,
            origin.peer,
            MOVE_DESTINATION_UNKNOWN,
            destination,
        )
        yield RetrieveResponse(MOVE_DESTINATION_UNKNOWN, comment=f"unknown move destination {destination!r}")
        return
    originator = (str(event.assoc.requestor.ae_title).strip(), int(event.request.MessageID or 0))

    def make_sender(instances: Sequence[StoredInstance]) -> Sender:
        return DestinationSender(event.assoc.ae, archive, remote, instances, move_originator=originator)

    yield from perform_retrieve(event, archive, "C-MOVE", make_sender)


# --- pynetdicom plumbing: send the responses a marked handler yields -----------------------------


def install_retrieve_responses() -> None:
    """Route C-MOVE / C-GET requests whose bound handler is marked `@responds_itself` to `_serve`.

    Idempotent; process-wide, like the other pynetdicom settings made at startup.
    """
    if getattr(QueryRetrieveServiceClass, "_pergamon_installed", False):
        return
    stock_move = QueryRetrieveServiceClass._move_scp
    stock_get = QueryRetrieveServiceClass._get_scp

    def move_scp(self: QueryRetrieveServiceClass, req: C_MOVE, context: Any) -> None:
        if not _serve(self, req, context, evt.EVT_C_MOVE, C_MOVE):
            stock_move(self, req, context)

    def get_scp(self: QueryRetrieveServiceClass, req: C_GET, context: Any) -> None:
        if not _serve(self, req, context, evt.EVT_C_GET, C_GET):
            stock_get(self, req, context)

    QueryRetrieveServiceClass._move_scp = move_scp  # type: ignore[method-assign]
    QueryRetrieveServiceClass._get_scp = get_scp  # type: ignore[method-assign]
    QueryRetrieveServiceClass._pergamon_installed = True  # type: ignore[attr-defined]


def _serve(
    service: QueryRetrieveServiceClass,
    req: C_MOVE | C_GET,
    context: Any,
    event_type: evt.InterventionEvent,
    response_type: type[C_MOVE] | type[C_GET],
) -> bool:
    """Run a marked handler and send what it yields; False if the bound handler is not marked."""
    handler, _args = service.assoc.get_handlers(event_type)
    if not getattr(handler, _MARK, False):
        return False
    assoc = service.assoc
    responses: Iterator[RetrieveResponse] | None = None

    def send(response: RetrieveResponse) -> None:
        rsp = response_type()
        rsp.MessageIDBeingRespondedTo = req.MessageID
        rsp.AffectedSOPClassUID = req.AffectedSOPClassUID
        rsp.Status = response.status
        rsp.NumberOfRemainingSuboperations = response.remaining
        rsp.NumberOfCompletedSuboperations = response.completed
        rsp.NumberOfFailedSuboperations = response.failed
        rsp.NumberOfWarningSuboperations = response.warning
        if response.comment:
            rsp.ErrorComment = response.comment.encode("ascii", "replace").decode("ascii")[:64]  # type: ignore[assignment]
        if response.failed_uids is not None:
            identifier = Dataset()
            identifier.FailedSOPInstanceUIDList = list(response.failed_uids)
            syntax = context.transfer_syntax[0]
            encoded = encode(identifier, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
            rsp.Identifier = BytesIO(encoded or b"")
        service.dimse.send_msg(rsp, context.context_id)

    try:
        responses = evt.trigger(
            assoc,
            event_type,
            {"request": req, "context": context.as_tuple, "_is_cancelled": service.is_cancelled},
        )
        for response in responses or ():
            if not assoc.is_established or assoc.acse.is_aborted() or assoc.acse.is_release_requested():
                return True  # the requestor went away: closing the handler releases what it holds
            send(response)
            if response.is_final:
                return True
        if assoc.is_established:
            send(RetrieveResponse(RETRIEVE_UNABLE_TO_PROCESS, comment="no final response from the handler"))
    except Exception as exc:
        log.exception("%s handler failed", event_type.name)
        if assoc.is_established:
            send(RetrieveResponse(RETRIEVE_UNABLE_TO_PROCESS, comment=f"internal error: {type(exc).__name__}"))
    finally:
        close = getattr(responses, "close", None)
        if close is not None:
            close()
    return True


install_retrieve_responses()
