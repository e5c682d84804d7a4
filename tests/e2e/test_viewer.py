"""The study list and the bundled viewer (OHIF at /viewer/) in a real browser, with no request off the origin."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import make_settings
from e2e.browser import Browser, require_viewer
from samples import ct_series

from pergamon.archive.origin import Origin
from pergamon.runtime import Pergamon

SLICES = 6


@pytest.fixture(scope="session")
def viewer_site() -> Path:
    """The installed viewer (installed now when missing and npm can fetch it)."""
    return require_viewer()


@pytest.fixture
def ct_study(viewer_site: Path, server: Any, tmp_path: Path) -> Iterator[str]:
    """A running Pergamon holding one CT series; yields its Study Instance UID."""
    samples = ct_series(tmp_path / "ct", SLICES, size=128, patient_name="VIEWER^TEST", patient_id="E2E-CT-1")
    for sample in samples:
        server.archive.store_file(sample.path, Origin.from_import(str(sample.path)))
    yield samples[0].study_uid


def origin(server: Any) -> str:
    return f"http://127.0.0.1:{server.settings.http.port}"


def test_study_list_opens_the_ct_in_the_viewer_in_one_click(server: Any, ct_study: str, tmp_path: Path) -> None:
    with Browser(origin(server)) as browser:
        browser.goto("/")
        browser.wait_for_selector(f'tr[data-study-instance-uid="{ct_study}"]')
        browser.screenshot(tmp_path / "study-list.png")
        row = browser.text(f'tr[data-study-instance-uid="{ct_study}"]')
        assert "VIEWER, TEST" in row and "E2E-CT-1" in row and "CT" in row
        url = browser.click(f'tr[data-study-instance-uid="{ct_study}"] a.open')
        assert url.startswith(f"{origin(server)}/viewer/viewer?StudyInstanceUIDs={ct_study}")
        first = browser.wait_for_text(rf"I:\d+ \(1/{SLICES}\)", timeout=90)
        browser.screenshot(tmp_path / "viewer-first.png")
        assert browser.text("#pergamon-logo") == "Pergamon"  # our name in the header, not OHIF's logo
        browser.wheel(".cornerstone-viewport-element", steps=2)
        later = browser.wait_for_text(rf"I:\d+ \([2-9]/{SLICES}\)")
        browser.screenshot(tmp_path / "viewer-scrolled.png")
        assert re.search(r"\((\d)/", later).group(1) != "1", (first, later)  # type: ignore[union-attr]
        log = browser.log()
    assert log["offOrigin"] == []
    assert log["httpErrors"] == []
    assert log["pageErrors"] == []
    paths = {re.sub(r"^https?://[^/]+", "", r["url"]).split("?")[0] for r in log["requests"]}
    assert any(p.endswith("/frames/1") for p in paths)  # pixels came from Pergamon's WADO-RS
    assert all(p == "/" or p.startswith(("/viewer/", "/dicom-web/", "/ui/")) for p in paths), paths


def test_viewer_deep_link_and_caching(server: Any, ct_study: str) -> None:
    base = origin(server)
    with httpx.Client(base_url=base) as client:
        index = client.get(f"/viewer/viewer?StudyInstanceUIDs={ct_study}", headers={"Accept-Encoding": "gzip"})
        assert index.status_code == 200 and index.headers["cache-control"] == "no-cache"
        assert 'window.PUBLIC_URL="/viewer/"' in index.text and 'src="/viewer/app-config.js"' in index.text
        config = client.get("/viewer/app-config.js")
        assert config.headers["cache-control"] == "no-cache"
        assert 'window.location.origin + "/dicom-web"' in config.text and "ohif.tours" in config.text
        assert "amazonaws" not in config.text and "cloudfront" not in config.text
        bundle = re.search(r'src="(/viewer/app\.bundle\.[0-9a-f]+\.js)"', index.text)
        assert bundle is not None
        chunk = client.get(bundle.group(1), headers={"Accept-Encoding": "gzip"})
        assert chunk.status_code == 200 and chunk.headers["content-encoding"] == "gzip"
        assert "immutable" in chunk.headers["cache-control"]
        assert '__webpack_require__.p = "/viewer/";' in chunk.text
        assert client.get("/viewer/ort/ort-wasm-simd-threaded.wasm").status_code == 404  # slimmed away
        assert client.get("/viewer/segmentation").headers["content-type"].startswith("text/html")  # an app route
        assert client.get("/viewer/../pyproject.toml").status_code in (200, 404)  # never a file outside the site
        assert "[project]" not in client.get("/viewer/%2e%2e/%2e%2e/pyproject.toml").text


def test_viewer_not_installed_answers_503_and_the_archive_still_serves(tmp_path: Path, database_url: str) -> None:
    base = make_settings(tmp_path / "data", database_url)
    settings = dataclasses.replace(base, viewer=dataclasses.replace(base.viewer, path=str(tmp_path / "no-viewer")))
    app = Pergamon(settings)
    app.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{settings.http.port}") as client:
            page = client.get("/viewer/")
            assert page.status_code == 503 and "pergamon viewer install" in page.text
            assert client.get("/ui/studies").status_code == 200
            assert client.get("/dicom-web/studies").status_code in (200, 204)
    finally:
        app.stop()
