"""WADO-RS metadata is rendered once per stored object and served from the cache afterwards:
the same answer either way, later patient reconciliation included, and a deleted cache is rebuilt."""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import samples
from conftest import make_settings

from pergamon.archive.origin import Origin
from pergamon.archive.patients import PatientKey, update_demographics
from pergamon.runtime import Pergamon
from pergamon.web.dicomweb import metadata_cache, metadata_warmer, wado


@pytest.fixture
def app(tmp_path: Path, database_url: str) -> Any:
    pergamon = Pergamon(make_settings(tmp_path / "data", database_url))
    pergamon.start()
    yield pergamon
    pergamon.stop()


def metadata(app: Pergamon, study_uid: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{app.settings.http.port}{app.settings.http.base_path}/studies/{study_uid}/metadata"
    response = httpx.get(url, headers={"Accept": "application/dicom+json"}, timeout=30)
    assert response.status_code == 200, response.text
    return sorted(response.json(), key=lambda item: item["00080018"]["Value"][0])


def test_cached_metadata_is_the_same_and_follows_reconciliation(app: Pergamon, tmp_path: Path) -> None:
    series = samples.ct_series(tmp_path / "src", 3)
    for sample in series:
        app.archive.store_file(sample.path, Origin.from_import(str(sample.path)))
    study_uid = series[0].study_uid
    cache = metadata_cache.folder(app.archive)

    first = metadata(app, study_uid)
    assert len(list(cache.glob("*.json"))) == 3
    assert metadata(app, study_uid) == first  # now served from the cache
    bulk = first[0]["7FE00010"]["BulkDataURI"]
    assert bulk.startswith(f"http://127.0.0.1:{app.settings.http.port}/")
    assert httpx.get(bulk, timeout=30).status_code == 200

    patient_id = first[0]["00100020"]["Value"][0]
    update_demographics(
        app.archive, PatientKey(patient_id), {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "RENAMED^NOW"}]}}
    )
    renamed = metadata(app, study_uid)
    assert {item["00100010"]["Value"][0]["Alphabetic"] for item in renamed} == {"RENAMED^NOW"}

    shutil.rmtree(cache)
    assert metadata(app, study_uid) == renamed  # rebuilt from the stored objects
    assert len(list(cache.glob("*.json"))) == 3


def test_metadata_split_over_many_pieces_is_one_valid_array(
    app: Pergamon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wado, "_METADATA_CHUNK", 1)  # every instance in a piece of its own
    series = samples.ct_series(tmp_path / "src", 4)
    for sample in series:
        app.archive.store_file(sample.path, Origin.from_import(str(sample.path)))
    items = metadata(app, series[0].study_uid)
    assert sorted(item["00080018"]["Value"][0] for item in items) == sorted(s.sop_instance_uid for s in series)


def test_a_settled_series_is_rendered_before_anyone_asks(tmp_path: Path, database_url: str) -> None:
    delay = 1.5
    settings = make_settings(tmp_path / "data", database_url)
    settings = dataclasses.replace(settings, http=dataclasses.replace(settings.http, metadata_prepare_delay=delay))
    app = Pergamon(settings)
    app.start()
    try:
        series = samples.ct_series(tmp_path / "src", 3)
        for sample in series:
            app.archive.store_file(sample.path, Origin.from_import(str(sample.path)))
        stored_at = time.monotonic()
        cache = metadata_cache.folder(app.archive)
        if time.monotonic() - stored_at < delay:  # the series has not settled yet: nothing rendered
            assert not list(cache.glob("*.json"))
        deadline = time.monotonic() + 30
        while len(list(cache.glob("*.json"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        entries = sorted(cache.glob("*.json"))
        assert len(entries) == 3
        before = [path.stat().st_mtime_ns for path in entries]
        items = metadata(app, series[0].study_uid)
        assert sorted(item["00080018"]["Value"][0] for item in items) == sorted(s.sop_instance_uid for s in series)
        assert [path.stat().st_mtime_ns for path in sorted(cache.glob("*.json"))] == before  # read, not rendered
    finally:
        app.stop()


def _warming_app(tmp_path: Path, database_url: str, delay: float) -> Pergamon:
    settings = make_settings(tmp_path / "data", database_url)
    settings = dataclasses.replace(settings, http=dataclasses.replace(settings.http, metadata_prepare_delay=delay))
    app = Pergamon(settings)
    app.start()
    return app


def _wait_for_entries(app: Pergamon, count: int, seconds: float = 30) -> list[Path]:
    cache = metadata_cache.folder(app.archive)
    deadline = time.monotonic() + seconds
    while len(list(cache.glob("*.json"))) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return sorted(cache.glob("*.json"))


def test_settled_series_wait_while_the_archive_goes_on_storing(tmp_path: Path, database_url: str) -> None:
    """Rendering ahead must not take the processor from ingest: nothing is rendered until stores pause."""
    app = _warming_app(tmp_path, database_url, delay=0.5)
    try:
        settled = samples.ct_series(tmp_path / "a", 3, size=64)
        for sample in settled:
            app.archive.store_file(sample.path, Origin.from_import(str(sample.path)))
        stream = samples.ct_series(tmp_path / "b", 12, size=64)
        for sample in stream:  # another series, one instance every 0.25 s for 3 s
            app.archive.store_file(sample.path, Origin.from_import(str(sample.path)))
            assert not list(metadata_cache.folder(app.archive).glob("*.json")), "rendered while stores went on"
            time.sleep(0.25)
        assert len(_wait_for_entries(app, 15)) == 15  # both, once the archive was quiet
    finally:
        app.stop()


def test_a_store_interrupts_rendering_and_the_series_is_finished_later(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _warming_app(tmp_path, database_url, delay=0.3)
    try:
        series = samples.ct_series(tmp_path / "a", 4, size=64)
        late = samples.ct_series(tmp_path / "b", 1, size=64)[0]
        calls: list[tuple[float, str]] = []
        stored_late: list[float] = []
        prepare = metadata_cache.prepare

        def recording(archive: Any, stored: Any, render: Any) -> bool:
            calls.append((time.monotonic(), stored.sop_instance_uid))
            if len(calls) == 2:  # a store arrives while the series is being rendered
                app.archive.store_file(late.path, Origin.from_import(str(late.path)))
                stored_late.append(time.monotonic())
            return prepare(archive, stored, render)

        monkeypatch.setattr(metadata_cache, "prepare", recording)
        for sample in series:
            app.archive.store_file(sample.path, Origin.from_import(str(sample.path)))
        assert len(_wait_for_entries(app, 5)) == 5
        resumed = stored_late[0] + metadata_warmer.QUIET
        assert len([at for at, _sop in calls if at < resumed]) == 2, "rendering went on beside the store"
        rendered = {sop for _at, sop in calls}
        assert rendered == {s.sop_instance_uid for s in series} | {late.sop_instance_uid}
    finally:
        app.stop()
