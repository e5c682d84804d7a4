"""Storage SCP door (C-STORE), PS3.4 Annex B; IHE RAD-8, RAD-9, RAD-18, RAD-29, RAD-43, RAD-66.

pynetdicom streams the received dataset into a temporary file inside the archive's data folder
(STORE_RECV_CHUNKED_DATASET), so an object of any size is never held whole in memory; that file,
with the dataset bytes exactly as sent, is handed to the core, which moves it into the blob store.
"""

from __future__ import annotations

import logging

from pydicom import Dataset
from pynetdicom.events import Event

from pergamon.archive import errors
from pergamon.archive.origin import Origin
from pergamon.archive.service import Archive
from pergamon.dimse.status import (
    STORE_ERRORS,
    STORE_PROCESSING_FAILURE,
    SUCCESS,
    status_dataset,
    status_for,
)

log = logging.getLogger(__name__)


def origin_of(event: Event) -> Origin:
    """The DIMSE origin of the association an event arrived on."""
    assoc = event.assoc
    return Origin.from_dimse(
        calling_ae=assoc.requestor.ae_title,
        called_ae=assoc.acceptor.ae_title,
        peer=f"{assoc.requestor.address}:{assoc.requestor.port}",
    )


def handle_store(event: Event, archive: Archive) -> int | Dataset:
    """Store the received object; success only once it is durable (fsynced and indexed)."""
    request = event.request
    origin = origin_of(event)
    try:
        result = archive.store_file(
            event.dataset_path,
            origin,
            expected_sop_class=str(request.AffectedSOPClassUID),
            expected_sop_instance=str(request.AffectedSOPInstanceUID),
            move=True,
        )
    except errors.PergamonError as exc:
        status = status_for(exc, STORE_ERRORS, STORE_PROCESSING_FAILURE)
        log.warning(
            "C-STORE of %s from %s refused (0x%04X): %s",
            request.AffectedSOPInstanceUID,
            origin.calling_ae,
            status,
            exc,
        )
        return status_dataset(status, str(exc))
    except Exception as exc:
        log.exception("C-STORE of %s from %s failed", request.AffectedSOPInstanceUID, origin.calling_ae)
        return status_dataset(STORE_PROCESSING_FAILURE, f"internal error: {type(exc).__name__}")
    log.debug("stored %s (%s) from %s", result.sop_instance_uid, result.outcome.value, origin.calling_ae)
    return SUCCESS
