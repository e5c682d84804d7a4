"""`pergamon viewer install`: deploy the pinned OHIF build as a slim, offline site served at `/viewer/`.

Steps (the recipe of `ohif-feasibility.md`, checked against `@ohif/app` 3.13.2):

1. Fetch the tarballs pinned in `viewer/package-lock.json` with `npm pack` (npm's cache first;
   or take them from `--tarballs DIR` on a machine without a registry) and check each against
   the lock file's sha512 integrity. `npm ci` is not used: the build in `dist/` already bundles
   every runtime dependency, and installing the package's own dependency tree would pull
   hundreds of build-time packages for nothing.
2. Copy `package/dist/` without what a hospital without internet cannot use: `ort/` (AI
   segmentation runtime, whose models come from huggingface.co), `dicom-microscopy-viewer/`
   (whole-slide microscopy), source maps, the service worker and Google/Netlify files.
3. Patch the build for the sub-path `/viewer/`: the npm build has the public path `/` compiled
   in (8 webpack runtimes, `index.html`, the CSS, `manifest.json`). Each patch counts its hits
   and the install fails loudly when a count differs from what this OHIF version has, so an
   upgrade cannot silently produce a half-working site.
4. Point the labelmap interpolation's itk-wasm pipelines (fetched from cdn.jsdelivr.net by
   default) at a local copy taken from `@itk-wasm/morphological-contour-interpolation`.
5. Write `app-config.js` and a `.gz` sibling of every compressible file, then swap the new site
   into place atomically and record what was installed in `.pergamon-viewer.json`.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import logging
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pergamon.viewer.appconfig import MOUNT, app_config_js

log = logging.getLogger(__name__)

RECIPE = 1
"""Bumped whenever the steps below change, so an installed site is redone."""

OHIF = "@ohif/app"
ITK_INTERPOLATION = "@itk-wasm/morphological-contour-interpolation"
STAMP = ".pergamon-viewer.json"
LOCK_FILE = Path(__file__).resolve().parents[3] / "viewer" / "package-lock.json"

DROPPED_DIRS = frozenset({"ort", "dicom-microscopy-viewer"})
DROPPED_FILES = frozenset({"sw.js", "google.js", "_headers", "_redirects", "serve.json"})
COMPRESSIBLE = frozenset({".js", ".css", ".html", ".json", ".svg", ".wasm", ".txt", ".xml", ".ico", ".map"})

# Expected hits of each patch in @ohif/app 3.13.2 (0 = at least one).
PUBLIC_PATH = '__webpack_require__.p = "/";'
PUBLIC_PATH_HITS = 8
CSS_URL_HITS = 5  # the self-hosted font, once per weight
ITK_CDN = re.compile(
    r"`https://cdn\.jsdelivr\.net/npm/@itk-wasm/morphological-contour-interpolation@\$\{[a-z_]+\}/dist/pipelines`"
)
ITK_LOCAL_DIR = "itk-wasm/morphological-contour-interpolation/pipelines"
ITK_CDN_HITS = 1


class InstallError(Exception):
    """The viewer cannot be installed; the message says why and what to do."""


@dataclass(frozen=True)
class Pin:
    """A package pinned by the lock file."""

    name: str
    version: str
    integrity: str

    @property
    def tarball_name(self) -> str:
        """The file name `npm pack` gives the tarball."""
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}.tgz"


def read_pins(lock_file: Path = LOCK_FILE) -> dict[str, Pin]:
    """The packages of `viewer/package-lock.json`, by name."""
    try:
        lock = json.loads(lock_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InstallError(f"{lock_file} not found (run from a Pergamon source tree)") from None
    pins: dict[str, Pin] = {}
    for key, entry in lock.get("packages", {}).items():
        if key.startswith("node_modules/"):
            name = key.removeprefix("node_modules/")
            pins[name] = Pin(name, entry["version"], entry["integrity"])
    for needed in (OHIF, ITK_INTERPOLATION):
        if needed not in pins:
            raise InstallError(f"{lock_file} does not pin {needed}")
    return pins


def installed(target: Path) -> dict[str, object] | None:
    """What `install` recorded in `target`, or None when no complete site is there."""
    try:
        return dict(json.loads((target / STAMP).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def is_current(target: Path, pins: dict[str, Pin]) -> bool:
    """Whether `target` holds the pinned OHIF deployed with this recipe."""
    stamp = installed(target)
    return stamp is not None and stamp.get("recipe") == RECIPE and stamp.get("integrity") == pins[OHIF].integrity


def install(target: Path, *, tarballs: Path | None = None, force: bool = False, lock_file: Path = LOCK_FILE) -> bool:
    """Deploy the viewer into `target`; returns False when it was already current (nothing done).

    Raises:
        InstallError: npm missing, a download failing, a tarball not matching its integrity, or
            a patch not finding what it expects in the build.
    """
    pins = read_pins(lock_file)
    if not force and is_current(target, pins):
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pergamon-viewer-", dir=target.parent) as tmp:
        work = Path(tmp)
        ohif = _tarball(pins[OHIF], tarballs, work)
        itk = _tarball(pins[ITK_INTERPOLATION], tarballs, work)
        site = work / "site"
        _extract_dist(ohif, site)
        _extract_itk_pipelines(itk, site / ITK_LOCAL_DIR)
        patch_site(site)
        (site / "app-config.js").write_text(app_config_js(), encoding="utf-8")
        files = write_gzip_siblings(site)
        stamp = {
            "recipe": RECIPE,
            "package": OHIF,
            "version": pins[OHIF].version,
            "integrity": pins[OHIF].integrity,
            "files": files,
        }
        (site / STAMP).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
        old = work / "old"
        if target.exists():
            target.rename(old)
        site.rename(target)
    log.info("viewer %s %s installed in %s (%d files)", OHIF, pins[OHIF].version, target, files)
    return True


def _tarball(pin: Pin, tarballs: Path | None, work: Path) -> Path:
    """The pinned tarball, from `tarballs` or `npm pack`, checked against its integrity."""
    if tarballs is not None:
        path = tarballs / pin.tarball_name
        if not path.is_file():
            raise InstallError(f"{path} not found (get it with `npm pack {pin.name}@{pin.version}`)")
    else:
        npm = shutil.which("npm")
        if npm is None:
            raise InstallError("npm is not installed (apt-get install npm), or pass --tarballs DIR")
        command = [npm, "pack", f"{pin.name}@{pin.version}", "--prefer-offline", "--silent"]
        command += ["--pack-destination", str(work)]
        done = subprocess.run(command, capture_output=True, text=True, cwd=work, timeout=600, check=False)
        path = work / pin.tarball_name
        if done.returncode != 0 or not path.is_file():
            reason = (done.stderr.strip().splitlines() or ["no tarball written"])[-1]
            raise InstallError(f"npm pack {pin.name}@{pin.version} failed: {reason}")
    algorithm, _, expected = pin.integrity.partition("-")
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if base64.b64encode(digest.digest()).decode() != expected:
        raise InstallError(f"{path.name} does not match the integrity pinned in viewer/package-lock.json")
    return path


def _extract_dist(tarball: Path, site: Path) -> None:
    """Copy `package/dist/` from the OHIF tarball into `site`, without the dropped parts."""
    prefix = "package/dist/"
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar.getmembers():
            if not member.isfile() or not member.name.startswith(prefix):
                continue
            relative = member.name.removeprefix(prefix)
            parts = relative.split("/")
            if parts[0] in DROPPED_DIRS or relative in DROPPED_FILES or relative.endswith(".map"):
                continue
            if ".." in parts:
                raise InstallError(f"unexpected path in {tarball.name}: {member.name}")
            _write_member(tar, member, site / relative)
    if not (site / "index.html").is_file():
        raise InstallError(f"{tarball.name} has no dist/index.html")


def _extract_itk_pipelines(tarball: Path, dest: Path) -> None:
    """The interpolation pipelines (JS + wasm) the segmentation tools would load from a CDN."""
    prefix = "package/dist/pipelines/"
    with tarfile.open(tarball, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(prefix)]
        members = [m for m in members if "/" not in m.name.removeprefix(prefix)]
        if not members:
            raise InstallError(f"{tarball.name} has no dist/pipelines/")
        for member in members:
            _write_member(tar, member, dest / member.name.removeprefix(prefix))


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
    source = tar.extractfile(member)
    if source is None:
        raise InstallError(f"cannot read {member.name}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with source, open(dest, "wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)


def _replace(path: Path, old: str | re.Pattern[str], new: str) -> int:
    """Replace in one text file; returns the number of hits."""
    text = path.read_text(encoding="utf-8")
    if isinstance(old, re.Pattern):
        text, hits = old.subn(new, text)
    else:
        hits = text.count(old)
        text = text.replace(old, new)
    if hits:
        path.write_text(text, encoding="utf-8")
    return hits


def _expect(what: str, hits: int, expected: int) -> None:
    if (expected and hits != expected) or hits == 0:
        wanted = expected or "at least 1"
        raise InstallError(
            f"patching the viewer for {MOUNT}/: {what} found {hits} time(s), expected {wanted}; "
            "this OHIF build differs from the pinned one (see src/pergamon/viewer/install.py)"
        )


def patch_site(site: Path) -> None:
    """The sub-path patches and the local interpolation pipelines, each checked by its hit count."""
    base = f"{MOUNT}/"
    index = site / "index.html"
    hits = _replace(index, 'window.PUBLIC_URL="/"', f'window.PUBLIC_URL="{base}"')
    _expect('window.PUBLIC_URL="/" in index.html', hits, 2)
    _replace(index, 'content="/assets/', f'content="{base}assets/')  # tile icons: cosmetic
    _expect('href="/ in index.html', _replace(index, 'href="/', f'href="{base}'), 0)
    _expect('src="/ in index.html', _replace(index, 'src="/', f'src="{base}'), 0)
    scripts = sorted(site.glob("*.js"))
    hits = sum(_replace(js, PUBLIC_PATH, f'__webpack_require__.p = "{base}";') for js in scripts)
    _expect(f"{PUBLIC_PATH} in *.js", hits, PUBLIC_PATH_HITS)
    hits = sum(_replace(css, "url(/", f"url({base}") for css in sorted(site.glob("*.css")))
    _expect("url(/ in *.css", hits, CSS_URL_HITS)
    manifest = site / "manifest.json"
    if manifest.is_file():
        _replace(manifest, '"/', f'"{base}')  # icons only: cosmetic
    local = f"`${{self.location.origin}}{base}{ITK_LOCAL_DIR}`"
    hits = sum(_replace(js, ITK_CDN, local) for js in scripts)
    _expect("the itk-wasm interpolation CDN URL", hits, ITK_CDN_HITS)


def write_gzip_siblings(site: Path) -> int:
    """Write `name.gz` next to each compressible file over 1 KiB; returns the number of files served."""
    count = 0
    for path in sorted(p for p in site.rglob("*") if p.is_file()):
        count += 1
        if path.suffix not in COMPRESSIBLE or path.stat().st_size < 1024:
            continue
        packed = path.with_name(path.name + ".gz")
        with (
            open(path, "rb") as src,
            open(packed, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as gz,
        ):
            shutil.copyfileobj(src, gz, 1 << 20)
    return count
