"""Operator REST view of performed procedure steps (MPPS and GP-PPS) and their state.

`GET /api/mpps` lists steps, newest first; `GET /api/mpps/{uid}` shows one with its attributes
(DICOM JSON), the instances it references, how far each forwarding destination got and whether
its Instance Availability Notification was queued.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from pergamon.archive import mpps
from pergamon.archive.service import Archive
from pergamon.web.api.jobs import page, text_param


def routes(archive: Archive) -> list[BaseRoute]:
    async def list_steps(request: Request) -> Response:
        """Performed procedure steps (MPPS, GP-PPS), newest first.

        Query parameters:
            state: only steps with this status (IN PROGRESS, COMPLETED, DISCONTINUED)
            sop_class: only steps of this SOP Class UID (MPPS or GP-PPS)
            limit: the most steps to return (default 100, at most 1000)
            offset: steps to skip, for paging
        """
        params = request.query_params
        state = params.get("state") or None
        if state is not None and state not in mpps.STATES:
            raise HTTPException(400, f"state must be one of {', '.join(mpps.STATES)}")
        limit, offset = page(params.get("limit"), params.get("offset"))
        steps, total = await run_in_threadpool(
            mpps.search,
            archive,
            status=state,
            sop_class_uid=text_param("sop_class", params.get("sop_class")),
            limit=limit,
            offset=offset,
        )
        return JSONResponse({"total": total, "items": [summary(step) for step in steps]})

    async def show_step(request: Request) -> Response:
        """One performed procedure step: state, attributes, references, forwarding and IAN progress."""
        uid = request.path_params["uid"]
        if "\x00" in uid or len(uid) > 64:  # cannot be a SOP Instance UID (PS3.5 9.1)
            raise HTTPException(404, f"no performed procedure step {uid!r}")
        try:
            body = await run_in_threadpool(_detail, archive, uid)
        except mpps.NoSuchStep:
            raise HTTPException(404, f"no performed procedure step {uid}") from None
        return JSONResponse(body)

    return [Route("/mpps", list_steps, methods=["GET"]), Route("/mpps/{uid}", show_step, methods=["GET"])]


def summary(step: mpps.ProcedureStep) -> dict[str, Any]:
    return {
        "sop_instance_uid": step.sop_uid,
        "sop_class_uid": step.sop_class_uid,
        "status": step.status,
        "patient_id": step.patient_id,
        "issuer_of_patient_id": step.issuer,
        "study_instance_uid": step.study_uid,
        "calling_ae": step.calling_ae,
        "messages": step.last_seq,
        "created_at": step.created_at,
        "updated_at": step.updated_at,
        "ian_queued_at": step.ian_queued_at,
    }


def _detail(archive: Archive, uid: str) -> dict[str, Any]:
    step = mpps.get(archive, uid)
    return {
        **summary(step),
        "forwarding": [
            {"destination": destination, "delivered": delivered, "pending": step.last_seq - delivered}
            for destination, delivered in mpps.forwarding(archive, uid).items()
        ],
        "references": [
            {"series_instance_uid": series, "sop_class_uid": sop_class, "sop_instance_uid": sop_uid}
            for series, sop_class, sop_uid in mpps.references(archive, uid)
        ],
        "attributes": step.attrs,
    }
