"""Storage Commitment Push Model SCP (N-ACTION / N-EVENT-REPORT), PS3.4 Annex J: being written."""

from __future__ import annotations

from typing import Any

from pydicom import Dataset
from pynetdicom.events import Event

from pergamon.archive.jobs import JobHandler
from pergamon.archive.service import Archive
from pergamon.dimse.status import N_PROCESSING_FAILURE


def handle_n_action(event: Event, archive: Archive) -> tuple[int, Dataset | None]:
    return N_PROCESSING_FAILURE, None


def job_handlers(archive: Archive, dicom_server: Any) -> dict[str, JobHandler]:
    """Durable job kinds this service runs (kind -> handler)."""
    return {}
