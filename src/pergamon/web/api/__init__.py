"""Operator REST API under `/api`: orders, MPPS, the HL7 message log, patient reconciliation
history and the outbound job queue. One module per view; JSON in and out."""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor
from starlette.routing import BaseRoute

from pergamon.archive.service import Archive
from pergamon.web.api import hl7_messages, jobs, mpps, orders, patients


class RowKeyConvertor(Convertor[int]):
    """`{pk:pk}`: a row key, 1 to 18 ASCII digits (so it fits SQL's 64-bit integers); anything else is a 404."""

    regex = "[0-9]{1,18}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("pk", RowKeyConvertor())


def routes(archive: Archive) -> list[BaseRoute]:
    return [
        *hl7_messages.routes(archive),
        *patients.routes(archive),
        *orders.routes(archive),
        *mpps.routes(archive),
        *jobs.routes(archive),
    ]
