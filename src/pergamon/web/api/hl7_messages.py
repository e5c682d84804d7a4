"""Operator REST view of the HL7 v2 message log (`hl7.message_log`): list, read, replay.

`GET /api/hl7/messages` lists messages newest first with their outcome (AA / AE / AR, or
`received` while one is being processed or was never acknowledged); `GET /api/hl7/messages/{pk}`
adds the message text, the ACK sent and any traceback; `POST /api/hl7/messages/{pk}/replay` runs
a logged message through the handlers again (after fixing what made it fail, say) and answers the
new log row.
"""

from __future__ import annotations

import base64
import threading
from datetime import UTC, date, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from pergamon.archive.service import Archive
from pergamon.hl7.charsets import decode
from pergamon.hl7.message_log import STATUSES, MessageLog
from pergamon.hl7.receiver import Hl7Receiver, build_router

MAX_LIMIT = 1000


def routes(archive: Archive) -> list[BaseRoute]:
    """Routes relative to the `/api` mount."""
    messages = MessageLog(archive.db)
    replayer = _LazyReceiver(archive)

    async def search(request: Request) -> Response:
        """List logged HL7 messages, newest first, with their outcome.

        Query parameters:
            type: message type (`ADT`) or type and event (`ADT^A08`)
            status: `AA`, `AE`, `AR`, or `received` (not processed, or never acknowledged)
            since: only messages received at or after this date or time (ISO 8601, e.g. `2026-11-27T08:00:00Z`)
            limit: page size (default 100, at most 1000)
            offset: rows to skip (paging)
        Media types: application/json
        """
        params = request.query_params
        message_type, _, trigger = params.get("type", "").partition("^")
        status = params.get("status", "")
        if status and status not in STATUSES:
            raise HTTPException(400, f"status must be one of {', '.join(STATUSES)}")
        since = _instant(params["since"]) if params.get("since") else None
        limit = _integer(params, "limit", 100, 1, MAX_LIMIT)
        offset = _integer(params, "offset", 0, 0, 2**31 - 1)
        total, rows = await run_in_threadpool(
            messages.search,
            message_type=message_type.strip(),
            trigger_event=trigger.strip(),
            status=status,
            since=since,
            limit=limit,
            offset=offset,
        )
        return JSONResponse({"total": total, "offset": offset, "limit": limit, "messages": [_summary(r) for r in rows]})

    async def read(request: Request) -> Response:
        """One logged HL7 message: its text as received, the ACK sent, the error and any traceback.

        Media types: application/json
        """
        row = await run_in_threadpool(messages.get, request.path_params["pk"])
        if row is None:
            raise HTTPException(404, f"no HL7 message {request.path_params['pk']} in the log")
        return JSONResponse(_detail(row))

    async def replay(request: Request) -> Response:
        """Run a logged HL7 message through the handlers again; answers the new log row.

        Media types: application/json
        """
        receiver = getattr(request.app.state, "hl7_receiver", None) or replayer.get()
        receipt = await run_in_threadpool(receiver.replay, request.path_params["pk"])
        row = await run_in_threadpool(messages.get, receipt.pk) if receipt.pk is not None else None
        if row is None:
            raise HTTPException(503, "the replayed message could not be logged")
        return JSONResponse(_detail(row), status_code=201)

    return [
        Route("/hl7/messages", search, methods=["GET"]),
        Route("/hl7/messages/{pk:pk}", read, methods=["GET"]),
        Route("/hl7/messages/{pk:pk}/replay", replay, methods=["POST"]),
    ]


class _LazyReceiver:
    """A receiver of its own, for an app without the listener's (`app.state.hl7_receiver`, set by the runtime).

    Its handlers are registered on first replay, not when the web app is built.
    """

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self._receiver: Hl7Receiver | None = None
        self._lock = threading.Lock()

    def get(self) -> Hl7Receiver:
        with self._lock:
            if self._receiver is None:
                self._receiver = Hl7Receiver(self.archive, build_router(self.archive))
            return self._receiver


def _integer(params: Any, name: str, default: int, low: int, high: int) -> int:
    value = params.get(name)
    if value is None or value == "":
        return default
    if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:
        raise HTTPException(400, f"{name} must be an integer from {low} to {high}")
    return int(value)


def _instant(text: str) -> float:
    """Seconds since the epoch of an ISO 8601 date or date-time (UTC unless it says otherwise)."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC).timestamp()
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(400, f"since: {text!r} is not an ISO 8601 date or date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "pk": row["pk"],
        "received_at": _iso(row["received_at"]),
        "transport": row["transport"],
        "peer": row["peer"],
        "replay_of": row["replay_of"],
        "size": row["size"],
        "sending_application": row["sending_application"],
        "sending_facility": row["sending_facility"],
        "message_type": row["message_type"],
        "trigger_event": row["trigger_event"],
        "control_id": row["control_id"],
        "version": row["version"],
        "charset": row["charset"],
        "status": row["status"],
        "error_code": row["error_code"],
        "error_text": row["error_text"],
        "processed_at": _iso(row["processed_at"]),
    }


def _detail(row: dict[str, Any]) -> dict[str, Any]:
    raw = bytes(row["raw"])
    try:
        text = decode(raw)[0]
    except (ValueError, LookupError):  # unknown MSH-18, bytes invalid in it: show them as Latin-1
        text = raw.decode("iso8859-1")
    return {
        **_summary(row),
        "text": text,
        "raw_base64": base64.b64encode(raw).decode("ascii"),
        "ack": row["ack"],
        "detail": row["detail"],
    }
