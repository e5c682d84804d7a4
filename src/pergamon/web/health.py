"""Operator endpoints: `/health` (is the index reachable?) and `/metrics` (Prometheus text format)."""

from __future__ import annotations

from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from pergamon.archive.index.schema import job
from pergamon.archive.service import Archive


def routes(archive: Archive) -> list[Route]:
    async def health(request: Request) -> Response:
        try:
            counts = await run_in_threadpool(archive.counts)
        except Exception as exc:  # the index is down: say so, with 503 for load balancers
            return JSONResponse({"status": "unavailable", "reason": f"index: {type(exc).__name__}"}, status_code=503)
        return JSONResponse({"status": "ok", "ae_title": archive.settings.dicom.ae_title, **counts})

    async def metrics(request: Request) -> Response:
        return PlainTextResponse(
            await run_in_threadpool(_metrics_text, archive), media_type="text/plain; version=0.0.4"
        )

    return [Route("/health", health, methods=["GET"]), Route("/metrics", metrics, methods=["GET"])]


def _metrics_text(archive: Archive) -> str:
    lines: list[str] = []
    for name, value in archive.counts().items():
        lines += [f"# TYPE pergamon_{name} gauge", f"pergamon_{name} {value}"]
    with archive.db.read() as conn:
        rows = conn.execute(select(job.c.state, func.count()).group_by(job.c.state)).all()
    lines.append("# TYPE pergamon_jobs gauge")
    lines += [f'pergamon_jobs{{state="{state}"}} {count}' for state, count in rows]
    return "\n".join(lines) + "\n"
