"""`/mammo/`: the mammography and tomosynthesis display page (IHE MAMMO and DBT Image Display).

A static page (HTML, JS, CSS shipped in this package, no build step) that reads Pergamon's own
DICOMweb: it hangs the For Presentation views from their metadata, shows frames rendered by
WADO-RS `/rendered` with the image's VOI presets, and draws labels, technique annotations and
Mammography CAD SR marks as SVG over the images. The page's logic is in `static/mammo.js`.
"""

from __future__ import annotations

import html
from importlib import resources

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from pergamon.archive.service import Archive

STATIC = resources.files(__package__) / "static"


def routes(archive: Archive) -> list[BaseRoute]:
    """The page at `/mammo/` and its assets under `/mammo/static/` (mounted at `/mammo`; `/mammo` redirects)."""
    base_path = archive.settings.http.base_path.rstrip("/")
    page = (STATIC / "index.html").read_text(encoding="utf-8").replace("{{DICOMWEB}}", html.escape(base_path))

    async def index(request: Request) -> Response:
        """The mammography and tomosynthesis display page (HTML; `?study=UID`, see the README)."""
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    return [
        Route("/", index, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=str(STATIC)), name="mammo-static"),
    ]
