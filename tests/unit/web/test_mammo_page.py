"""The /mammo/ page and its assets are served, pointing at the configured DICOMweb base path."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
from conftest import make_settings

from pergamon.runtime import Pergamon


def test_page_and_assets_are_served(server: Any) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{server.settings.http.port}") as client:
        page = client.get("/mammo/")
        assert page.status_code == 200 and '<meta name="dicomweb" content="/dicom-web">' in page.text
        assert page.headers["cache-control"] == "no-cache"
        script = client.get("/mammo/static/mammo.js")
        assert script.status_code == 200 and "flipsFor" in script.text
        assert script.headers["content-type"].startswith(("text/javascript", "application/javascript"))
        assert client.get("/mammo/static/mammo.css").status_code == 200
        assert client.get("/mammo", follow_redirects=False).status_code in (307, 308)
        assert client.get("/mammo/static/missing.js").status_code == 404


def test_page_follows_the_base_path(tmp_path: Any, database_url: str) -> None:
    settings = make_settings(tmp_path / "data", database_url)
    settings = dataclasses.replace(settings, http=dataclasses.replace(settings.http, base_path="/pacs/web"))
    app = Pergamon(settings)
    app.start()
    try:
        page = httpx.get(f"http://127.0.0.1:{settings.http.port}/mammo/")
    finally:
        app.stop()
    assert '<meta name="dicomweb" content="/pacs/web">' in page.text
