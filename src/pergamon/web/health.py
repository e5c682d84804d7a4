"""Operator endpoints: `/health` (is the index reachable? is the clock right?) and `/metrics` (Prometheus text).

The clock part is the IHE CT Time Client's report (ITI TF-2 3.1, see `pergamon.clock.monitor`):
its state never turns the answer into a 503, which is kept for an unreachable index.
"""

from __future__ import annotations

from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from pergamon.archive.index.schema import job
from pergamon.archive.service import Archive
from pergamon.clock.monitor import status_for


def routes(archive: Archive) -> list[Route]:
    async def health(request: Request) -> Response:
        try:
            counts = await run_in_threadpool(archive.counts)
        except Exception as exc:  # the index is down: say so, with 503 for load balancers
            return JSONResponse({"status": "unavailable", "reason": f"index: {type(exc).__name__}"}, status_code=503)
        clock = status_for(archive).as_json()
        return JSONResponse({"status": "ok", "ae_title": archive.settings.dicom.ae_title, **counts, "clock": clock})

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
    lines += _clock_metrics(archive)
    return "\n".join(lines) + "\n"


def _clock_metrics(archive: Archive) -> list[str]:
    """Clock offset (seconds, server minus local) and time of the last check; nothing when unconfigured."""
    clock = status_for(archive)
    if not clock.configured:
        return []
    lines = ["# TYPE pergamon_clock_offset_seconds gauge"]
    if clock.offset is not None:
        lines.append(f"pergamon_clock_offset_seconds {clock.offset:.6f}")
    lines += ["# TYPE pergamon_clock_last_check_timestamp_seconds gauge"]
    if clock.last_check is not None:
        lines.append(f"pergamon_clock_last_check_timestamp_seconds {clock.last_check:.3f}")
    lines.append("# TYPE pergamon_clock_server_reachable gauge")
    lines += [
        f'pergamon_clock_server_reachable{{server="{_label(s.server)}"}} {int(s.reachable)}' for s in clock.servers
    ]
    return lines


def _label(value: str) -> str:
    """A Prometheus label value, escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
