"""Operator REST view of the outbound job queue (storage commitment reports, MPPS forwarding, IAN...).

`GET /api/jobs` lists jobs, newest first, `GET /api/jobs/{pk}` shows one with its payload and last
error, `POST /api/jobs/{pk}/retry` makes a failed (or backing-off) job due now.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from pergamon.archive.index.schema import job
from pergamon.archive.jobs import JobState
from pergamon.archive.service import Archive

MAX_LIMIT = 1000
MAX_OFFSET = 2**62  # beyond any table; keeps SQLite's 64-bit integers from overflowing


def routes(archive: Archive) -> list[BaseRoute]:
    async def list_jobs(request: Request) -> Response:
        """Jobs of the durable queue, newest first.

        Query parameters:
            state: only jobs in this state (pending, running, done, failed)
            kind: only jobs of this kind (e.g. mpps-forward, ian-send, storage-commitment-report)
            limit: the most jobs to return (default 100, at most 1000)
            offset: jobs to skip, for paging
        """
        params = request.query_params
        state = params.get("state") or None
        if state is not None and state not in {s.value for s in JobState}:
            raise HTTPException(400, f"state must be one of {', '.join(s.value for s in JobState)}")
        limit, offset = page(params.get("limit"), params.get("offset"))
        body = await run_in_threadpool(_list, archive, state, text_param("kind", params.get("kind")), limit, offset)
        return JSONResponse(body)

    async def show_job(request: Request) -> Response:
        """One job: kind, state, attempts, next run, last error and payload."""
        found = await run_in_threadpool(_get, archive, request.path_params["pk"])
        if found is None:
            raise HTTPException(404, f"no job {request.path_params['pk']}")
        return JSONResponse(found)

    async def retry_job(request: Request) -> Response:
        """Put a failed (or backing-off) job back to pending, due now; 409 when it is running or done."""
        pk = request.path_params["pk"]
        found = await run_in_threadpool(_get, archive, pk)
        if found is None:
            raise HTTPException(404, f"no job {pk}")
        if not await run_in_threadpool(archive.jobs.retry_now, pk):
            raise HTTPException(409, f"job {pk} is {found['state']}: only failed or pending jobs can be retried")
        return JSONResponse(await run_in_threadpool(_get, archive, pk))

    return [
        Route("/jobs", list_jobs, methods=["GET"]),
        Route("/jobs/{pk:pk}", show_job, methods=["GET"]),
        Route("/jobs/{pk:pk}/retry", retry_job, methods=["POST"]),
    ]


def text_param(name: str, value: str | None, max_length: int = 64) -> str | None:
    """A free-text query parameter, None when empty; 400 when it cannot be a stored value (NUL, too long)."""
    if not value:
        return None
    if "\x00" in value or len(value) > max_length:
        raise HTTPException(400, f"{name}: not a valid value")
    return value


def page(limit: str | None, offset: str | None) -> tuple[int, int]:
    """Validated paging parameters (400 when not non-negative integers)."""
    values = []
    for name, raw, default in (("limit", limit, 100), ("offset", offset, 0)):
        if raw is None or raw == "":
            values.append(default)
            continue
        if not raw.isascii() or not raw.isdigit():
            raise HTTPException(400, f"{name} must be a non-negative integer")
        values.append(int(raw))
    return min(values[0], MAX_LIMIT), min(values[1], MAX_OFFSET)


def _list(archive: Archive, state: str | None, kind: str | None, limit: int, offset: int) -> dict[str, Any]:
    query = select(job)
    counting = select(func.count()).select_from(job)
    for column, value in ((job.c.state, state), (job.c.kind, kind)):
        if value is not None:
            query, counting = query.where(column == value), counting.where(column == value)
    with archive.db.read() as conn:
        total = int(conn.execute(counting).scalar_one())
        rows = conn.execute(query.order_by(job.c.pk.desc()).limit(limit).offset(offset))
        return {"total": total, "jobs": [_json(row) for row in rows]}


def _get(archive: Archive, pk: int) -> dict[str, Any] | None:
    with archive.db.read() as conn:
        row = conn.execute(select(job).where(job.c.pk == pk)).first()
    return None if row is None else _json(row)


def _json(row: Any) -> dict[str, Any]:
    return {
        "pk": row.pk,
        "kind": row.kind,
        "state": row.state,
        "attempts": row.attempts,
        "next_run_at": row.next_run_at,
        "last_error": row.last_error,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "payload": json.loads(row.payload),
    }
