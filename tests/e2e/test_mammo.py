"""The mammography / tomosynthesis display page (/mammo/) in a real browser, checked from screenshots.

The data (`mammo_data`) has markers burnt into the pixels at known anatomical positions and some
images stored mirrored or upside down. Each check maps a canonical position (distance from the
chest wall, height) to the screen through the displayed box of the view and looks at the pixels
there, so a mirrored, flipped or swapped view, a view hung from For Processing data, unequal
physical sizes or a misplaced CAD mark fails the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import mammo_data as md
import numpy as np
import pytest
from conftest import index_database, make_settings
from e2e.browser import Browser, require_browser
from PIL import Image

from pergamon.archive import rendering
from pergamon.runtime import Pergamon

SLOTS = [f"{role}-{lat}{view}" for role in ("current", "prior") for view in ("CC", "MLO") for lat in ("R", "L")]
WIDTH, HEIGHT = 1600, 1000


@dataclass
class Loaded:
    origin: str
    data: md.MammoData
    study: str


def stow(base: str, data: md.MammoData) -> None:
    """Store every object with one STOW-RS request (PS3.18 10.5)."""
    boundary = "pergamon-mammo-test"
    parts = [
        b"--%s\r\nContent-Type: application/dicom\r\n\r\n%s\r\n" % (boundary.encode(), part)
        for part in md.iter_part10(data)
    ]
    body = b"".join(parts) + b"--%s--\r\n" % boundary.encode()
    response = httpx.post(
        f"{base}/dicom-web/studies",
        content=body,
        headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'},
        timeout=60,
    )
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    """One Pergamon for the module, holding the current and prior studies (loaded by STOW-RS)."""
    require_browser()
    tmp = tmp_path_factory.mktemp("mammo")
    with index_database(tmp) as url:
        app = Pergamon(make_settings(tmp / "data", url))
        app.start()
        try:
            origin = f"http://127.0.0.1:{app.settings.http.port}"
            data = md.build()
            stow(origin, data)
            yield Loaded(origin, data, str(data.hung["current-RCC"][0].StudyInstanceUID))
        finally:
            app.stop()


# --- page and screenshot helpers ---------------------------------------------------------------

TILES_JS = """JSON.stringify([...document.querySelectorAll('.tile')].map((t) => {
  const f = t.querySelector('.frame'); const r = f ? f.getBoundingClientRect() : null;
  const b = t.getBoundingClientRect();
  return {slot: t.dataset.slot, sop: t.dataset.sop || null, frame: Number(t.dataset.frame || 0),
    ready: t.dataset.ready || '', marks: Number(t.dataset.marks || 0), text: t.innerText,
    box: r && [r.left, r.top, r.width, r.height], tile: [b.left, b.top, b.width, b.height]};
}))"""


def tiles(browser: Browser) -> dict[str, dict[str, Any]]:
    import json

    return {t["slot"]: t for t in json.loads(browser.evaluate(TILES_JS))}


def wait_ready(browser: Browser) -> None:
    browser.wait_for_selector('body[data-state="ready"]', timeout=60)


def shot(browser: Browser, path: Path) -> np.ndarray:
    browser.screenshot(path)
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)


def to_screen(box: list[float], laterality: str, d: float, v: float) -> tuple[float, float]:
    """Canonical (d from the chest wall, v from the top) to screen coordinates in the displayed box."""
    left, top, width, height = box
    u = 1.0 - d if laterality == "R" else d
    return left + u * width, top + v * height


def content_box(box: list[float], laterality: str, plan: md.StudyPlan | None) -> list[float]:
    """The screen box of the drawn breast area inside an image's displayed box (`plan.content`)."""
    if plan is None or plan.content is None:
        return box
    left, top, width, height = box
    crows, ccols = plan.content
    sx, sy = width / plan.columns, height / plan.rows
    x0, y0 = md.content_origin(md.View(laterality, "CC", 0), plan.rows, plan.columns, plan.content)
    return [left + x0 * sx, top + y0 * sy, ccols * sx, crows * sy]


def patch(image: np.ndarray, box: list[float], laterality: str, d0: float, v0: float, d1: float, v1: float) -> float:
    """Mean gray of a canonical rectangle (shrunk a little so edges and resampling do not count)."""
    x0, y0 = to_screen(box, laterality, d0, v0)
    x1, y1 = to_screen(box, laterality, d1, v1)
    xa, xb = sorted((x0, x1))
    ya, yb = sorted((y0, y1))
    mx, my = (xb - xa) * 0.2, (yb - ya) * 0.2
    region = image[int(ya + my) : int(np.ceil(yb - my)) + 1, int(xa + mx) : int(np.ceil(xb - mx)) + 1, :3]
    assert region.size, (box, d0, v0, d1, v1)
    return float(region.mean())


def spot(image: np.ndarray, box: list[float], laterality: str, d: float, v: float, size: float = 0.02) -> float:
    return patch(image, box, laterality, d - size, v - size, d + size, v + size)


def expected_gray(value: float, function: str, preset: int = 0) -> float:
    center, width = md.WINDOWS[preset]
    return float(rendering.apply_window(np.array([value]), rendering.Window(center, width, function))[0])


def check_oriented(
    image: np.ndarray,
    tile: dict[str, Any],
    view: md.View,
    tissue: float,
    function: str,
    plan: md.StudyPlan | None = None,
) -> None:
    """Chest wall toward the centre, nipple outward, the top block at the top, and this view's tissue level."""
    box, lat, slot = content_box(tile["box"], view.laterality, plan), view.laterality, tile["slot"]
    level = patch(image, box, lat, *md.TISSUE_PROBE)
    assert abs(level - expected_gray(tissue, function)) < 8, f"{slot}: tissue {level:.0f} is not this view's"
    d0, v0, d1, v1 = md.CHEST_WALL_BAR
    bar = patch(image, box, lat, d0, 0.3, d1, 0.7)
    mirrored_bar = patch(image, box, lat, 1 - d1, 0.3, 1 - d0, 0.7)
    assert bar > level + 40 and mirrored_bar < level, f"{slot}: chest wall not toward the centre"
    nipple_d, nipple_v, _ = md.NIPPLE
    assert spot(image, box, lat, nipple_d, nipple_v) > level + 40, f"{slot}: no nipple marker where expected"
    assert spot(image, box, lat, 1 - nipple_d, nipple_v) < level + 10, f"{slot}: nipple marker on the chest-wall side"
    d0, v0, d1, v1 = md.TOP_BLOCK
    assert patch(image, box, lat, d0, v0, d1, v1) > level + 40, f"{slot}: top block not at the top"
    assert patch(image, box, lat, d0, 1 - v1, d1, 1 - v0) < level + 10, f"{slot}: image upside down"


def magenta(image: np.ndarray, tile: dict[str, Any]) -> tuple[float, float] | None:
    """Centroid of the CAD mark colour inside a tile, or None."""
    left, top, width, height = (round(c) for c in tile["tile"])
    region = image[top : top + height, left : left + width]
    mask = (region[..., 0] > 180) & (region[..., 1] < 90) & (region[..., 2] > 180)
    if mask.sum() < 10:
        return None
    ys, xs = np.nonzero(mask)
    return left + float(xs.mean()), top + float(ys.mean())


def breast_width(image: np.ndarray, tile: dict[str, Any]) -> int:
    """Screen pixels across the breast along its middle row (the tissue is brighter than air)."""
    left, top, width, height = tile["box"]
    y = int(top + height * 0.5)
    row = image[y, int(left) : int(left + width), :].mean(axis=1)
    return int((row > 50).sum())


# --- tests --------------------------------------------------------------------------------------


def test_four_view_hanging_orientation_size_cad_and_no_processing(loaded: Loaded, tmp_path: Path) -> None:
    data = loaded.data
    with Browser(loaded.origin, width=WIDTH, height=HEIGHT) as browser:
        browser.goto(f"/mammo/?study={loaded.study}")
        wait_ready(browser)
        image = shot(browser, tmp_path / "four-view.png")
        shown = tiles(browser)
        log = browser.log()
    assert log["offOrigin"] == [] and log["httpErrors"] == [] and log["pageErrors"] == [], log

    processing = {str(ds.SOPInstanceUID) for ds in data.processing}
    assert processing.isdisjoint(t["sop"] for t in shown.values()), "a For Processing image was hung"
    for slot in SLOTS:
        ds, view, plan = data.hung[slot]
        tile = shown[slot]
        assert tile["sop"] == str(ds.SOPInstanceUID), f"{slot} shows another image"
        assert tile["text"].split("\n")[0] == view.label
        function = "SIGMOID" if plan is md.CURRENT else "LINEAR"
        check_oriented(image, tile, view, view.tissue, function, plan)
        assert "29 kV" in tile["text"] and "98 mAs" in tile["text"] and "52 mm" in tile["text"]
        assert "110 N" in tile["text"] and "W/Rh" in tile["text"]
        assert f"{function} C 2000 W 4000" in tile["text"]

    # Chest walls face each other: each R view sits left of its L partner, touching at the centre.
    for role in ("current", "prior"):
        for view in ("CC", "MLO"):
            right, left = shown[f"{role}-R{view}"]["box"], shown[f"{role}-L{view}"]["box"]
            assert right[0] < left[0] and abs((right[0] + right[2]) - left[0]) < 2

    # Same size: 0.1 mm (current) and 0.162 mm / 1.08 (prior) pixels give the same physical size on screen:
    # equal breasts, and the prior's 45 mm wide field 1.25 times as wide as the current's 36 mm.
    widths = {slot: breast_width(image, shown[slot]) for slot in SLOTS}
    assert max(widths.values()) - min(widths.values()) <= 3, widths
    for view in ("RCC", "LCC", "RMLO", "LMLO"):
        ratio = shown[f"prior-{view}"]["box"][2] / shown[f"current-{view}"]["box"][2]
        assert abs(ratio - 1.25) < 0.01, (view, ratio)

    # CAD marks on their findings, and nowhere else.
    for slot in SLOTS:
        ds, view, plan = data.hung[slot]
        found = magenta(image, shown[slot])
        if not view.findings:
            assert found is None, f"{slot}: a CAD mark where the SR puts none"
            continue
        assert found is not None, f"{slot}: CAD mark missing"
        box = content_box(shown[slot]["box"], view.laterality, plan)
        expected = to_screen(box, view.laterality, *view.findings[0])
        assert abs(found[0] - expected[0]) < 4 and abs(found[1] - expected[1]) < 4, (slot, found, expected)
        assert spot(image, box, view.laterality, *view.findings[0], size=0.01) > 150

    # The implant-displaced view is shown with its label and indication; the partial view is flagged.
    implant = shown["extra-RCCID"]
    assert implant["sop"] == str(data.extra["current-RCCID"][0].SOPInstanceUID)
    assert implant["text"].startswith("RCCID") and "IMPLANT PRESENT" in implant["text"]
    assert "PARTIAL VIEW: Breast superior" in shown["current-RMLO"]["text"]
    assert "PARTIAL VIEW" not in shown["current-RCC"]["text"]


def test_voi_presets_and_true_size(loaded: Loaded, tmp_path: Path) -> None:
    data = loaded.data
    with Browser(loaded.origin, width=WIDTH, height=HEIGHT) as browser:
        browser.goto(f"/mammo/?study={loaded.study}")
        wait_ready(browser)
        before = shot(browser, tmp_path / "preset-1.png")
        first = tiles(browser)
        browser.evaluate(
            "(() => { const s = document.getElementById('preset'); s.value = '1';"
            " s.dispatchEvent(new Event('change')); return true; })()"
        )
        wait_ready(browser)
        after = shot(browser, tmp_path / "preset-2.png")
        second = tiles(browser)
        options = browser.evaluate("[...document.querySelectorAll('#preset option')].map((o) => o.textContent)")

        browser.goto(f"/mammo/?study={loaded.study}&size=true&pitch=0.2")
        wait_ready(browser)
        true_size = shot(browser, tmp_path / "true-size.png")
        actual = tiles(browser)
        log = browser.log()
    assert log["offOrigin"] == [] and log["httpErrors"] == [], log
    assert options == ["1: NORMAL", "2: BRIGHT"]
    for slot in SLOTS:
        _, view, plan = data.hung[slot]
        function = "SIGMOID" if plan is md.CURRENT else "LINEAR"
        level1 = patch(
            before, content_box(first[slot]["box"], view.laterality, plan), view.laterality, *md.TISSUE_PROBE
        )
        level2 = patch(
            after, content_box(second[slot]["box"], view.laterality, plan), view.laterality, *md.TISSUE_PROBE
        )
        assert abs(level2 - expected_gray(view.tissue, function, 1)) < 8, (slot, level2)
        assert level2 > level1 + 10, f"{slot}: the second preset did not brighten the tissue"
        assert f"{function} C 1200 W 2000 · BRIGHT" in second[slot]["text"]
    requests = [r["url"] for r in log["requests"] if "/rendered" in r["url"]]
    assert any("window=1200%2C2000%2Csigmoid" in u for u in requests)
    assert any("window=1200%2C2000%2Clinear" in u for u in requests)

    # True size at 0.2 mm per CSS pixel: 36 mm (current) and 45 mm (prior) wide fields are 180 and 225 px wide,
    # and every 34.2 mm wide breast is 171 px wide.
    for slot in SLOTS:
        _, view, plan = data.hung[slot]
        width_mm = plan.columns * plan.spacing / plan.magnification
        assert abs(actual[slot]["box"][2] - width_mm / 0.2) < 1, (slot, actual[slot]["box"])
        function = "SIGMOID" if plan is md.CURRENT else "LINEAR"
        check_oriented(true_size, actual[slot], view, view.tissue, function, plan)
    widths = [breast_width(true_size, actual[slot]) for slot in SLOTS]
    assert max(widths) - min(widths) <= 3 and abs(np.mean(widths) - 0.95 * 180) < 6, widths


def test_tomosynthesis_scroll_cine_projection_and_slice_cad(loaded: Loaded, tmp_path: Path) -> None:
    data = loaded.data
    with Browser(loaded.origin, width=WIDTH, height=HEIGHT) as browser:
        browser.goto(f"/mammo/?study={loaded.study}&hanging=tomo")
        wait_ready(browser)
        first = shot(browser, tmp_path / "tomo-1.png")
        at_first = tiles(browser)

        browser.wheel('[data-slot="tomo-RCC"]', steps=2)
        browser.wait_for_selector('[data-slot="tomo-RCC"][data-ready="3"]')
        wait_ready(browser)
        third = shot(browser, tmp_path / "tomo-3.png")
        at_third = tiles(browser)

        browser.evaluate(
            "document.querySelector('[data-slot=\"tomo-RCC\"]').dispatchEvent("
            "new KeyboardEvent('keydown', {key: 'ArrowDown', bubbles: true}))"
        )
        browser.wait_for_selector('[data-slot="tomo-RCC"][data-ready="4"]')
        fourth = tiles(browser)

        browser.click('[data-slot="tomo-LCC"] .cine')
        browser.wait_for_selector('[data-slot="tomo-LCC"][data-playing="true"]:not([data-frame="1"])')
        browser.click('[data-slot="tomo-LCC"] .cine')
        browser.wait_for_selector('[data-slot="tomo-LCC"][data-playing="false"]')
        stopped = tiles(browser)["tomo-LCC"]["text"]
        for key in ("Home", "ArrowDown", "ArrowDown", "ArrowDown"):
            browser.evaluate(
                "document.querySelector('[data-slot=\"tomo-LCC\"]').dispatchEvent("
                f"new KeyboardEvent('keydown', {{key: '{key}', bubbles: true}}))"
            )
        browser.wait_for_selector('[data-slot="tomo-LCC"][data-ready="4"]')
        wait_ready(browser)
        lcc4 = shot(browser, tmp_path / "tomo-lcc-4.png")
        at_lcc4 = tiles(browser)["tomo-LCC"]
        log = browser.log()
    assert log["offOrigin"] == [] and log["httpErrors"] == [] and log["pageErrors"] == [], log

    for slot in ("tomo-RCC", "tomo-LCC"):
        bto, view = data.tomo[slot.removeprefix("tomo-")]
        assert at_first[slot]["sop"] == str(bto.SOPInstanceUID) and at_first[slot]["frame"] == 1
        assert "Slice 1/5 · 10.0 mm" in at_first[slot]["text"]
        check_oriented(first, at_first[slot], view, view.tissue + 40, "LINEAR")
        synth = data.synthesized[view.label]
        flat = at_first[f"2d-{view.label}"]
        assert flat["sop"] == str(synth.SOPInstanceUID) and "Synthesized 2D" in flat["text"]
        check_oriented(first, flat, md.View(view.laterality, "CC", view.tissue + 400), view.tissue + 400, "SIGMOID")
    # The R and L slices face each other, and the 2D views hang beside them at the same scale.
    assert abs(sum(at_first["tomo-RCC"]["box"][::2]) - at_first["tomo-LCC"]["box"][0]) < 2
    assert abs(at_first["tomo-RCC"]["box"][2] - at_first["2d-RCC"]["box"][2]) < 1
    projection = at_first["projection-RCC"]
    assert projection["sop"] == str(data.projection.SOPInstanceUID) and "Frame 1/3" in projection["text"]

    # The tomosynthesis CAD mark is on slice 3 only, on its finding.
    _, rcc = data.tomo["RCC"]
    assert magenta(first, at_first["tomo-RCC"]) is None
    tile = at_third["tomo-RCC"]
    assert tile["frame"] == 3 and "Slice 3/5 · 20.0 mm" in tile["text"]
    check_oriented(third, tile, rcc, rcc.tissue + 120, "LINEAR")
    found = magenta(third, tile)
    expected = to_screen(tile["box"], "R", *md.DBT_FINDING)
    assert found is not None and abs(found[0] - expected[0]) < 4 and abs(found[1] - expected[1]) < 4
    assert at_third["tomo-LCC"]["frame"] == 1  # scrolling one view leaves the other alone
    assert fourth["tomo-RCC"]["frame"] == 4 and "Slice 4/5 · 25.0 mm" in fourth["tomo-RCC"]["text"]
    assert fourth["tomo-RCC"]["marks"] == 0
    assert "▶ Play" in stopped

    # The LCC finding is placed by SCOORD3D (patient coordinates): drawn on slice 4, the nearest one.
    _, lcc = data.tomo["LCC"]
    assert magenta(first, at_first["tomo-LCC"]) is None
    assert at_lcc4["frame"] == 4 and "Slice 4/5 · 25.0 mm" in at_lcc4["text"]
    check_oriented(lcc4, at_lcc4, lcc, lcc.tissue + 160, "LINEAR")
    found = magenta(lcc4, at_lcc4)
    expected = to_screen(at_lcc4["box"], "L", *md.DBT_FINDING_3D)
    assert found is not None and abs(found[0] - expected[0]) < 4 and abs(found[1] - expected[1]) < 4, (found, expected)


def test_dicomdir_media_folder_hangs_the_same_way(server: Any, tmp_path: Path) -> None:
    """The objects of a DICOMDIR file-set, imported as from media, hang like the STOW-RS ones."""
    from pergamon.importer import import_files

    require_browser()
    data = md.build()
    folder = tmp_path / "media"
    files = md.write(data, folder, dicomdir=True)
    assert (folder / "DICOMDIR").is_file()
    outcomes, failures, _ = import_files(server.archive, files, progress=False)
    assert not failures and sum(outcomes.values()) == len(data.datasets)
    study = str(data.hung["current-RCC"][0].StudyInstanceUID)
    with Browser(f"http://127.0.0.1:{server.settings.http.port}", width=WIDTH, height=HEIGHT) as browser:
        browser.goto(f"/mammo/?study={study}")
        wait_ready(browser)
        image = shot(browser, tmp_path / "media.png")
        shown = tiles(browser)
        assert browser.off_origin() == []
    for slot in SLOTS:
        ds, view, plan = data.hung[slot]
        assert shown[slot]["sop"] == str(ds.SOPInstanceUID)
        check_oriented(image, shown[slot], view, view.tissue, "SIGMOID" if plan is md.CURRENT else "LINEAR", plan)
