"""DICOMweb (PS3.18): QIDO-RS, WADO-RS, STOW-RS and WADO-URI over the archive core."""

from __future__ import annotations

from starlette.routing import BaseRoute

from pergamon.archive.service import Archive
from pergamon.web.dicomweb import qido, rendered, stow, wado, wado_uri


def routes(archive: Archive) -> list[BaseRoute]:
    """Every DICOMweb route, relative to `http.base_path`; each service module declares its own.

    WADO-URI comes first: it answers the base path itself (`?requestType=WADO`).
    """
    return [
        *wado_uri.routes(archive),
        *qido.routes(archive),
        *stow.routes(archive),
        *rendered.routes(archive),
        *wado.routes(archive),
    ]
