"""The ASGI application: DICOMweb under `http.base_path`, operator endpoints at the root.

Routes are declared lists joined here (Starlette style); errors map in `web/errors.py`.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import DEFAULT_EXCLUDED_CONTENT_TYPES, GZipMiddleware
from starlette.routing import BaseRoute, Mount

from pergamon.archive.service import Archive
from pergamon.web import api, dicomweb, fhir, health, mammo, openapi, ui, viewer
from pergamon.web.errors import EXCEPTION_HANDLERS


def build_app(archive: Archive) -> Starlette:
    """The whole HTTP door for one archive."""
    settings = archive.settings.http
    routes: list[BaseRoute] = [
        *health.routes(archive),
        *openapi.routes(archive),  # before the Mount: OPTIONS {base_path} (PS3.18 8.9)
        Mount("/fhir", routes=fhir.routes(archive)),  # IHE ITI-81 RESTful ATNA on the audit repository
        Mount("/api", routes=api.routes(archive)),  # operator views: orders, MPPS, HL7 log, jobs
        Mount("/mammo", routes=mammo.routes(archive)),  # mammography / tomosynthesis display page
        Mount(settings.base_path, routes=dicomweb.routes(archive)),
    ]
    if archive.settings.viewer.enabled:  # the study list and the bundled viewer (OHIF) at /viewer/
        routes += [*ui.routes(archive.settings), *viewer.routes(archive.settings)]
    # gzip helps JSON metadata and query results; pixel data (mostly compressed already) and
    # Part-10 streams cost ten times the time for ~10 % fewer bytes, so they go as they are.
    binary = ("multipart/related", "application/dicom", "application/octet-stream", "image/*", "video/*")
    middleware = [
        Middleware(
            GZipMiddleware,
            minimum_size=1024,
            compresslevel=6,
            exclude_content_types=(*DEFAULT_EXCLUDED_CONTENT_TYPES, *binary),
        )
    ]
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=origins,
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                allow_headers=["*"],
                expose_headers=["Warning", "Content-Type", "Content-Length", "ETag"],
            )
        )
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=EXCEPTION_HANDLERS)  # type: ignore[arg-type]
    app.state.archive = archive
    return app
