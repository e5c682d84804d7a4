"""Operator REST view of patient reconciliation (PIR, RAD-12): what each ADT update, merge or identifier change did.

`GET /api/patients/{id}/history?issuer=` lists every change that named the patient (as it is
now, or as the obsolete / former patient of a merge or identifier change), oldest first, each
with the patient-level attributes before and after as DICOM JSON. `GET /api/reconciliations`
pages through all changes, newest first.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from pergamon.archive import patients
from pergamon.archive.patients import PatientKey
from pergamon.archive.service import Archive

MAX_LIMIT = 1000


def routes(archive: Archive) -> list[BaseRoute]:
    """Routes relative to the `/api` mount."""

    async def patient_history(request: Request) -> Response:
        """The reconciliation history of one patient, oldest first.

        Query parameters:
            issuer: the Issuer of Patient ID (empty: the patient without an issuer)
        Media types: application/json
        """
        key = PatientKey(_text(request.path_params["patient_id"], "patient ID"),
                         _text(request.query_params.get("issuer", ""), "issuer"))  # fmt: skip
        if not key.patient_id:
            raise HTTPException(400, "a patient ID is required")
        changes = await run_in_threadpool(patients.history, archive, key)
        return JSONResponse({"patient_id": key.patient_id, "issuer": key.issuer, "history": changes})

    async def list_reconciliations(request: Request) -> Response:
        """Every patient update, merge and identifier change, newest first.

        Query parameters:
            limit: the most changes to return (default 100, at most 1000)
            offset: changes to skip, for paging
        Media types: application/json
        """
        limit = _integer(request.query_params.get("limit"), "limit", 100, 1, MAX_LIMIT)
        offset = _integer(request.query_params.get("offset"), "offset", 0, 0, 2**31 - 1)

        def read() -> tuple[int, list[dict[str, Any]]]:
            return patients.reconciliations(archive, limit=limit, offset=offset)

        total, items = await run_in_threadpool(read)
        return JSONResponse({"total": total, "limit": limit, "offset": offset, "reconciliations": items})

    return [
        Route("/patients/{patient_id:path}/history", patient_history, methods=["GET"]),
        Route("/reconciliations", list_reconciliations, methods=["GET"]),
    ]


def _text(value: str, name: str) -> str:
    """A Patient ID or issuer as the index holds them (LO: at most 64 characters, no control characters)."""
    if len(value) > 64 or any(ord(c) < 0x20 for c in value):
        raise HTTPException(400, f"{name} must be at most 64 characters without control characters")
    return value


def _integer(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    """A paging parameter: `default` when absent, 400 when not an integer, clamped to [low, high]."""
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit():
        raise HTTPException(400, f"{name} must be a non-negative integer")
    return max(low, min(int(raw), high))
