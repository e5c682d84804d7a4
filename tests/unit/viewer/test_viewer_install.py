"""The viewer deploy step: sub-path patches with hit counts, slimming, integrity, gz siblings, app-config."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from pergamon.viewer import install as inst
from pergamon.viewer.appconfig import app_config_js

INDEX = (
    '<html><head><script>window.PUBLIC_URL="/"</script><link rel="manifest" href="/manifest.json">'
    '<script>window.PUBLIC_URL="/"</script><script src="/app-config.js"></script>'
    '<script defer src="/app.bundle.0123456789abcdef.js"></script></head></html>'
)
RUNTIME = 'x;\n__webpack_require__.p = "/";\n' + "/* padding */\n" * 200
CDN = "let u = `https://cdn.jsdelivr.net/npm/@itk-wasm/morphological-contour-interpolation@${dist_version}/dist/pipelines`;"
CSS = "".join(f"@font-face{{font-weight:{w};src:url(/a.woff2)}}" for w in (100, 300, 400, 500, 700))


def fake_ohif(dest: Path, *, runtimes: int = inst.PUBLIC_PATH_HITS) -> Path:
    """A tarball shaped like @ohif/app's, with `runtimes` webpack runtimes."""
    files = {
        "package/dist/index.html": INDEX,
        "package/dist/app-config.js": "window.config = {dataSources: ['https://d33do7qe4w26qo.cloudfront.net']};",
        "package/dist/app.bundle.css": CSS,
        "package/dist/manifest.json": '{"icons": [{"src": "/assets/a.png"}]}',
        "package/dist/7071.bundle.0123456789abcdef.js": CDN,
        "package/dist/sw.js": "self.importScripts('https://storage.googleapis.com/workbox.js')",
        "package/dist/google.js": "",
        "package/dist/ort/ort-wasm.wasm": "wasm",
        "package/dist/dicom-microscopy-viewer/index.js": "",
        "package/dist/app.bundle.0123456789abcdef.js.map": "{}",
        "package/README.md": "",
    }
    for i in range(runtimes):
        files[f"package/dist/{i}.bundle.0123456789abcdef.js"] = RUNTIME
    return _tarball(dest / "ohif-app-3.13.2.tgz", files)


def fake_itk(dest: Path) -> Path:
    files = {
        "package/dist/pipelines/morphological-contour-interpolation.js": "export {}",
        "package/dist/pipelines/morphological-contour-interpolation.wasm": "\0asm",
        "package/dist/index.js": "",
    }
    return _tarball(dest / "itk-wasm-morphological-contour-interpolation-1.1.0.tgz", files)


def _tarball(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def lock_for(tmp: Path, *tarballs: Path) -> Path:
    packages = {}
    for tgz, name in zip(tarballs, (inst.OHIF, inst.ITK_INTERPOLATION), strict=True):
        digest = base64.b64encode(hashlib.sha512(tgz.read_bytes()).digest()).decode()
        version = "3.13.2" if name == inst.OHIF else "1.1.0"
        packages[f"node_modules/{name}"] = {"version": version, "integrity": f"sha512-{digest}"}
    lock = tmp / "package-lock.json"
    lock.write_text(json.dumps({"lockfileVersion": 3, "packages": packages}))
    return lock


def test_install_slims_patches_and_compresses(tmp_path: Path) -> None:
    tarballs = tmp_path / "tgz"
    tarballs.mkdir()
    lock = lock_for(tmp_path, fake_ohif(tarballs), fake_itk(tarballs))
    site = tmp_path / "site"
    assert inst.install(site, tarballs=tarballs, lock_file=lock) is True
    index = (site / "index.html").read_text()
    assert index.count('window.PUBLIC_URL="/viewer/"') == 2
    assert 'href="/viewer/manifest.json"' in index and 'src="/viewer/app-config.js"' in index
    assert '__webpack_require__.p = "/viewer/";' in (site / "0.bundle.0123456789abcdef.js").read_text()
    assert (site / "app.bundle.css").read_text().count("url(/viewer/a.woff2)") == 5
    patched = (site / "7071.bundle.0123456789abcdef.js").read_text()
    assert "cdn.jsdelivr" not in patched
    assert "${self.location.origin}/viewer/itk-wasm/morphological-contour-interpolation/pipelines" in patched
    assert (site / inst.ITK_LOCAL_DIR / "morphological-contour-interpolation.wasm").is_file()
    for dropped in ("sw.js", "google.js", "ort", "dicom-microscopy-viewer", "app.bundle.0123456789abcdef.js.map"):
        assert not (site / dropped).exists(), dropped
    assert (site / "app-config.js").read_text() == app_config_js()
    packed = site / "0.bundle.0123456789abcdef.js.gz"
    assert gzip.decompress(packed.read_bytes()) == (site / "0.bundle.0123456789abcdef.js").read_bytes()
    assert inst.installed(site)["version"] == "3.13.2"  # type: ignore[index]
    assert inst.install(site, tarballs=tarballs, lock_file=lock) is False  # current: nothing to do


def test_a_build_with_another_number_of_runtimes_fails_loudly(tmp_path: Path) -> None:
    tarballs = tmp_path / "tgz"
    tarballs.mkdir()
    lock = lock_for(tmp_path, fake_ohif(tarballs, runtimes=7), fake_itk(tarballs))
    expected = r"__webpack_require__\.p = \"/\"; in \*\.js found 7 time\(s\), expected 8"
    with pytest.raises(inst.InstallError, match=expected):
        inst.install(tmp_path / "site", tarballs=tarballs, lock_file=lock)
    assert not (tmp_path / "site").exists()  # nothing half-installed


def test_a_tarball_not_matching_the_lock_is_refused(tmp_path: Path) -> None:
    tarballs = tmp_path / "tgz"
    tarballs.mkdir()
    lock = lock_for(tmp_path, fake_ohif(tarballs), fake_itk(tarballs))
    fake_ohif(tarballs, runtimes=9)  # replaced after the lock was written
    with pytest.raises(inst.InstallError, match="does not match the integrity"):
        inst.install(tmp_path / "site", tarballs=tarballs, lock_file=lock)


def test_the_repository_lock_pins_ohif_by_integrity() -> None:
    pins = inst.read_pins()
    assert pins[inst.OHIF].version == "3.13.2"
    assert pins[inst.OHIF].integrity.startswith("sha512-")
    assert pins[inst.OHIF].tarball_name == "ohif-app-3.13.2.tgz"


def test_app_config_names_pergamon_and_our_dicomweb() -> None:
    text = app_config_js("/pacs/dicom-web/")
    assert 'window.location.origin + "/pacs/dicom-web"' in text
    assert "'ohif.tours': { $set: [] }" in text and 'routerBasename: "/viewer"' in text
    assert "cloudfront" not in text and "amazonaws" not in text and 'friendlyName: "Pergamon"' in text
