"""Operator REST view of orders (RAD-4/RAD-13 requested procedures) and PIX cross-references (ITI-9/ITI-10).

`GET /api/orders` lists requested procedures newest first; `GET /api/orders/{pk}` adds their
scheduled steps and the studies linked to them. `GET /api/pix/xrefs?pid=&issuer=` shows the
identifiers cross-referenced to one patient identifier; `POST /api/pix/query` asks the PIX
Manager (ITI-9) for them and records the answer.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from pergamon.archive import orders, pix
from pergamon.archive.orders import OrderStatus
from pergamon.archive.service import Archive
from pergamon.hl7.pix import query_pix

MAX_LIMIT = 1000


def routes(archive: Archive) -> list[BaseRoute]:
    """Routes relative to the `/api` mount."""

    async def list_orders(request: Request) -> Response:
        """Requested procedures, newest first, with the number of studies linked to each.

        Query parameters:
            status: only orders in this status (SC, IP, CM, CA, DC, HD)
            accession: only orders with this Accession Number
            patient: only orders for this Patient ID
            limit: the most orders to return (default 100, at most 1000)
            offset: orders to skip, for paging
        Media types: application/json
        """
        params = request.query_params
        status = params.get("status", "")
        if status and status not in {s.value for s in OrderStatus}:
            raise HTTPException(400, f"status must be one of {', '.join(s.value for s in OrderStatus)}")
        limit = _integer(params.get("limit"), "limit", 100, 1, MAX_LIMIT)
        offset = _integer(params.get("offset"), "offset", 0, 0, 2**31 - 1)

        def read() -> list[dict[str, Any]]:
            with archive.db.read() as conn:
                return orders.list_orders(
                    conn,
                    status=status,
                    accession=params.get("accession", ""),
                    patient_id=params.get("patient", ""),
                    limit=limit,
                    offset=offset,
                )

        return JSONResponse({"orders": await run_in_threadpool(read)})

    async def show_order(request: Request) -> Response:
        """One requested procedure with its scheduled procedure steps and linked studies.

        Media types: application/json
        """
        pk = request.path_params["pk"]

        def read() -> dict[str, Any]:
            with archive.db.read() as conn:
                return orders.get_order(conn, pk)

        return JSONResponse(await run_in_threadpool(read))

    async def xrefs(request: Request) -> Response:
        """The identifiers cross-referenced (PIX) to one patient identifier.

        Query parameters:
            pid: the Patient ID (required)
            issuer: its assigning authority (Issuer of Patient ID)
        Media types: application/json
        """
        pid = request.query_params.get("pid", "")
        issuer = request.query_params.get("issuer", "")
        if not pid:
            raise HTTPException(400, "pid is required")

        def read() -> list[dict[str, Any]]:
            with archive.db.read() as conn:
                return pix.cross_references(conn, pid, issuer)

        return JSONResponse({"patient_id": pid, "issuer": issuer, "xrefs": await run_in_threadpool(read)})

    async def query(request: Request) -> Response:
        """Ask the PIX Manager for a patient's other identifiers (ITI-9) and record the answer.

        The body is JSON: `{"pid": "...", "issuer": "...", "domains": ["NS", "1.2.3"]}`; `issuer`
        and `domains` are optional (empty: Pergamon's domain, all domains). Answers the aliases
        found; 404 when the PIX Manager does not know the identifier or a domain, 503 when it
        cannot be reached or none is configured.
        Media types: application/json
        """
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            raise HTTPException(400, "the body must be JSON") from None
        if not isinstance(body, dict):
            raise HTTPException(400, "the body must be a JSON object")
        pid, issuer, domains = body.get("pid"), body.get("issuer", ""), body.get("domains", [])
        if not isinstance(pid, str) or not pid or not isinstance(issuer, str):
            raise HTTPException(400, "pid (a non-empty string) is required; issuer must be a string")
        if not isinstance(domains, list) or not all(isinstance(d, str) and d for d in domains):
            raise HTTPException(400, "domains must be a list of non-empty strings")
        aliases = await run_in_threadpool(query_pix, archive, pid, issuer, domains)
        return JSONResponse(
            {
                "patient_id": pid,
                "issuer": issuer,
                "aliases": [
                    {"patient_id": a.patient_id, "issuer": a.issuer, "issuer_uid": a.issuer_uid} for a in aliases
                ],
            }
        )

    return [
        Route("/orders", list_orders, methods=["GET"]),
        Route("/orders/{pk:pk}", show_order, methods=["GET"]),
        Route("/pix/xrefs", xrefs, methods=["GET"]),
        Route("/pix/query", query, methods=["POST"]),
    ]


def _integer(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    """A paging parameter: `default` when absent, 400 when not an integer, clamped to [low, high]."""
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit():
        raise HTTPException(400, f"{name} must be a non-negative integer")
    return max(low, min(int(raw), high))
