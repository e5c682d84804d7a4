"""Storage SCP door (C-STORE), PS3.4 Annex B; IHE RAD-8, RAD-9, RAD-18, RAD-29, RAD-43, RAD-66.

pynetdicom streams the received dataset into a temporary file inside the archive's data folder
(STORE_RECV_CHUNKED_DATASET), so an object of any size is never held whole in memory; that file,
with the dataset bytes exactly as sent, is handed to the core, which moves it into the blob store.
Associations that carry only storage and verification skip pynetdicom's receive path
(`direct_store`) but end in the same `store_received`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom import Dataset
from pynetdicom.events import Event

from pergamon.archive import errors
from pergamon.archive.events import InstanceRejectedOnIngest
from pergamon.archive.ingest import Digest
from pergamon.archive.origin import Origin
from pergamon.archive.service import Archive
from pergamon.dimse.status import (
    STORE_ERRORS,
    STORE_PROCESSING_FAILURE,
    SUCCESS,
    status_dataset,
    status_for,
)

if TYPE_CHECKING:
    from pynetdicom.association import Association

log = logging.getLogger(__name__)


def origin_of(event: Event) -> Origin:
    """The DIMSE origin of the association an event arrived on."""
    return origin_of_association(event.assoc)


def origin_of_association(assoc: Association) -> Origin:
    """The DIMSE origin of `assoc`: calling and called AE titles, peer address."""
    return Origin.from_dimse(
        calling_ae=assoc.requestor.ae_title,
        called_ae=assoc.acceptor.ae_title,
        peer=f"{assoc.requestor.address}:{assoc.requestor.port}",
    )


def handle_store(event: Event, archive: Archive) -> int | Dataset:
    """EVT_C_STORE: store the received object; success only once it is durable (fsynced and indexed)."""
    request = event.request
    status, comment = store_received(
        archive,
        event.dataset_path,
        origin_of(event),
        str(request.AffectedSOPClassUID),
        str(request.AffectedSOPInstanceUID),
    )
    return SUCCESS if status == SUCCESS else status_dataset(status, comment)


def store_received(
    archive: Archive,
    path: Path,
    origin: Origin,
    sop_class: str,
    sop_instance: str,
    *,
    digest: Digest | None = None,
    blob_key: str | None = None,
) -> tuple[int, str]:
    """Hand a received file (moved, not copied) to the core; the C-STORE status and error comment.

    Shared by pynetdicom's C-STORE event and `direct_store`'s own receive loop, which hashed the
    file as it wrote it (`digest`) and may have written it in place as blob `blob_key`.
    """
    try:
        result = archive.store_file(
            path,
            origin,
            expected_sop_class=sop_class,
            expected_sop_instance=sop_instance,
            move=True,
            digest=digest,
            blob_key=blob_key,
        )
    except errors.PergamonError as exc:
        status = status_for(exc, STORE_ERRORS, STORE_PROCESSING_FAILURE)
        log.warning("C-STORE of %s from %s refused (0x%04X): %s", sop_instance, origin.calling_ae, status, exc)
        return status, str(exc)
    except Exception as exc:
        log.exception("C-STORE of %s from %s failed", sop_instance, origin.calling_ae)
        return STORE_PROCESSING_FAILURE, f"internal error: {type(exc).__name__}"
    log.debug("stored %s (%s) from %s", result.sop_instance_uid, result.outcome.value, origin.calling_ae)
    return SUCCESS, ""


def refuse_received(
    archive: Archive, origin: Origin, sop_instance: str, refusal: errors.PergamonError
) -> tuple[int, str]:
    """A data set the door could not keep (no space for its temporary file): announced and audited as
    a refused store, as `Archive.store_file` does; the C-STORE status and error comment."""
    archive.bus.emit(InstanceRejectedOnIngest(sop_instance_uid=sop_instance, reason=str(refusal), origin=origin))
    status = status_for(refusal, STORE_ERRORS, STORE_PROCESSING_FAILURE)
    log.warning("C-STORE of %s from %s refused (0x%04X): %s", sop_instance, origin.calling_ae, status, refusal)
    return status, str(refusal)


def discard_unfinished_transfer(event: Event) -> None:
    """EVT_CONN_CLOSE: delete the temporary file of a C-STORE whose data set never fully arrived.

    When a peer drops the connection in the middle of a data set, pynetdicom leaves the partly
    written temporary file (and its open handle) behind; nothing was acknowledged, so it goes.
    """
    message = getattr(event.assoc.dimse, "message", None)
    partial = getattr(message, "_data_set_file", None)
    if partial is None:
        return
    message._data_set_file = None  # type: ignore[union-attr]
    try:
        partial.close()
        os.unlink(partial.name)
    except OSError as exc:
        log.warning("cannot remove unfinished transfer %s: %s", partial.name, exc)
        return
    log.info("discarded unfinished C-STORE from %s (connection closed)", event.assoc.requestor.ae_title)
