"""The HTTP door's operator endpoints and cross-cutting behaviour (web/app.py, web/health.py)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import httpx
from conftest import make_settings
from pydicom.data import get_testdata_file

from pergamon.archive.origin import Origin
from pergamon.runtime import Pergamon


def base_url(app: Any) -> str:
    return f"http://127.0.0.1:{app.settings.http.port}"


def test_health_reports_the_index(server: Any, tmp_path: Path) -> None:
    source = tmp_path / "ct.dcm"
    shutil.copy(str(get_testdata_file("CT_small.dcm")), source)
    server.archive.store_file(source, Origin.from_import(str(source)))
    response = httpx.get(f"{base_url(server)}/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "ae_title": "PERGAMON",
        "patients": 1,
        "studies": 1,
        "series": 1,
        "instances": 1,
        "clock": {"status": "not configured"},
    }


def test_metrics_in_prometheus_text_format(server: Any) -> None:
    response = httpx.get(f"{base_url(server)}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "pergamon_instances 0" in response.text.splitlines()


def test_unknown_path_is_404(server: Any) -> None:
    assert httpx.get(f"{base_url(server)}/no/such/thing").status_code == 404


def test_cors_only_when_configured(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path / "data", database_url)
    settings = dataclasses.replace(
        settings, http=dataclasses.replace(settings.http, cors_origins="http://viewer.example")
    )
    app = Pergamon(settings)
    app.start()
    try:
        allowed = httpx.get(f"{base_url(app)}/health", headers={"Origin": "http://viewer.example"})
        other = httpx.get(f"{base_url(app)}/health", headers={"Origin": "http://evil.example"})
    finally:
        app.stop()
    assert allowed.headers.get("access-control-allow-origin") == "http://viewer.example"
    assert "access-control-allow-origin" not in other.headers
