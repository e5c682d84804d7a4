"""`/viewer/` paths that cannot name a file of the site: never a server error."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import httpx
from starlette.applications import Starlette

from pergamon.config import Settings
from pergamon.viewer.install import STAMP
from pergamon.web.viewer import routes


def test_a_name_too_long_for_the_filesystem_is_an_app_route_or_a_missing_asset(tmp_path: Path) -> None:
    site = tmp_path / "viewer"
    site.mkdir()
    (site / "index.html").write_text("<!doctype html><title>viewer</title>")
    (site / STAMP).write_text(json.dumps({"recipe": "test"}))
    base = Settings()
    settings = dataclasses.replace(base, viewer=dataclasses.replace(base.viewer, path=str(site)))
    long_name = "\u1e70\u033a" * 300  # > 255 bytes in UTF-8: stat() fails with ENAMETOOLONG
    app = Starlette(routes=routes(settings))

    async def get(path: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.get(path)

    page = asyncio.run(get(f"/viewer/{long_name}"))
    assert page.status_code == 200 and "<title>viewer</title>" in page.text  # the single-page app's route
    assert asyncio.run(get(f"/viewer/{long_name}.js")).status_code == 404
    assert asyncio.run(get("/viewer/index.html")).status_code == 200
