"""DICOMweb (PS3.18): QIDO-RS, WADO-RS, STOW-RS and WADO-URI over the archive core."""

from __future__ import annotations

from starlette.routing import BaseRoute

from pergamon.archive.service import Archive


def routes(archive: Archive) -> list[BaseRoute]:
    """Every DICOMweb route, relative to `http.base_path`; each service module adds its own."""
    found: list[BaseRoute] = []
    return found
