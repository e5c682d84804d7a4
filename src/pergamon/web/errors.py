"""HTTP status for every archive error: the one table of the web door (Starlette's MRO lookup).

Endpoints raise `archive.errors` exceptions (or Starlette's `HTTPException`); the handlers here
turn them into a status and a plain-text body that says what was wrong.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from pergamon.archive import errors
from pergamon.archive.retrieve import CannotConvert

log = logging.getLogger(__name__)

STATUS: dict[type[errors.PergamonError], int] = {
    errors.NotFound: 404,
    CannotConvert: 406,  # the object cannot leave in any media type / transfer syntax asked for
    errors.Conflict: 409,
    errors.InvalidQuery: 400,
    errors.Invalid: 400,
    errors.NotAuthorized: 403,
    errors.StorageFull: 507,
    errors.Unavailable: 503,
}


def status_of(exc: errors.PergamonError) -> int:
    """The most specific status for the exception's class."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


async def archive_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.PergamonError)
    status = status_of(exc)
    log.info("%s %s -> %d: %s", request.method, request.url.path, status, exc)
    return PlainTextResponse(f"{exc}\n", status_code=status)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return PlainTextResponse(f"{exc.detail}\n", status_code=exc.status_code, headers=exc.headers)


EXCEPTION_HANDLERS = {errors.PergamonError: archive_error, HTTPException: http_error}
