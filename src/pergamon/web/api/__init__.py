"""Operator REST API under `/api`: orders, MPPS, the HL7 message log, patient reconciliation
history and the outbound job queue. One module per view; JSON in and out."""

from __future__ import annotations

from starlette.routing import BaseRoute

from pergamon.archive.service import Archive
from pergamon.web.api import hl7_messages, jobs, mpps, orders, patients


def routes(archive: Archive) -> list[BaseRoute]:
    return [
        *hl7_messages.routes(archive),
        *patients.routes(archive),
        *orders.routes(archive),
        *mpps.routes(archive),
        *jobs.routes(archive),
    ]
