"""Pergamon's own pages: the study list at `/ui/studies` (QIDO-RS from the browser), `/` leading to it.

Each study row opens the study in the bundled viewer in one click
(`/viewer/viewer?StudyInstanceUIDs=...`), and mammography studies also in `/mammo/`.
"""

from __future__ import annotations

import html
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from pergamon.config import Settings

STATIC = Path(__file__).parent / "static"


def routes(settings: Settings) -> list[BaseRoute]:
    """`/` (redirect) and `/ui/studies`."""
    page = (STATIC / "studies.html").read_text(encoding="utf-8")
    page = page.replace("{{BASE_PATH}}", html.escape(settings.http.base_path.rstrip("/"), quote=True))

    async def studies(request: Request) -> Response:
        """The study list page: searches QIDO-RS from the browser; each row opens its study in the viewer."""
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    async def home(request: Request) -> Response:
        """Leads to the study list."""
        return RedirectResponse("/ui/studies", status_code=302)

    return [Route("/", home, methods=["GET", "HEAD"]), Route("/ui/studies", studies, methods=["GET", "HEAD"])]
