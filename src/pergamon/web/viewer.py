"""The bundled web viewer (OHIF) at `/viewer/`, on the same origin as DICOMweb.

Static files from the site `pergamon viewer install` deployed (`viewer.path`), with:
- `index.html` for any path that is not a file (the single-page app's own routes such as
  `/viewer/viewer?StudyInstanceUIDs=...`), but 404 for a missing script, style or wasm file;
- the precompressed `.gz` sibling when the browser accepts gzip;
- `Cache-Control: no-cache` for `index.html` and `app-config.js`, a year for content-hashed files;
- `app-config.js` generated from the settings, so it always names this server's `http.base_path`.

Without an installed viewer, `/viewer/` answers 503 with a page saying how to install it; the
rest of Pergamon works as usual.
"""

from __future__ import annotations

import logging
import mimetypes
import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from pergamon.config import Settings
from pergamon.viewer.appconfig import MOUNT, app_config_js
from pergamon.viewer.install import STAMP, installed

log = logging.getLogger(__name__)

_HASHED = re.compile(r"(^|\.)[0-9a-f]{16}\.(js|wasm|woff2|css)$")
_LONG_CACHE = "public, max-age=31536000, immutable"
_ASSET_SUFFIXES = frozenset({".js", ".mjs", ".css", ".wasm", ".map", ".json", ".png", ".svg", ".ico", ".woff2", ".gz"})
mimetypes.add_type("application/wasm", ".wasm")

NOT_INSTALLED = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Viewer not installed - Pergamon</title></head>
<body style="font-family: sans-serif; max-width: 48em; margin: 3em auto">
<h1>The web viewer is not installed</h1>
<p>Pergamon serves its bundled viewer (OHIF) from <code>{path}</code>, which holds no installed viewer.</p>
<p>Install it once, on a machine that reaches the npm registry (or with <code>--tarballs DIR</code>
holding the pinned packages):</p>
<pre>pergamon viewer install</pre>
<p>(<code>./run serve</code> does this by itself when <code>npm</code> is available.) The archive,
DICOMweb and DICOM services work without it.</p>
</body></html>
"""


def routes(settings: Settings) -> list[BaseRoute]:
    """`/viewer` and everything under it."""
    root = settings.viewer_path
    config_js = app_config_js(settings.http.base_path)
    if installed(root) is None:
        log.warning("web viewer not installed in %s: /viewer/ answers 503 (run `pergamon viewer install`)", root)

    async def viewer(request: Request) -> Response:
        """The bundled web viewer (OHIF): its files, `index.html` for its own routes, 503 when not installed."""
        if installed(root) is None:  # checked per request: an install while running takes effect
            return HTMLResponse(NOT_INSTALLED.format(path=root), status_code=503, headers={"Cache-Control": "no-cache"})
        relative = request.path_params.get("path", "")
        if relative == "app-config.js":
            headers = {"Cache-Control": "no-cache"}
            return Response(config_js, media_type="text/javascript; charset=utf-8", headers=headers)
        path = _file(root, relative)
        if path is None and Path(relative).suffix in _ASSET_SUFFIXES:
            # A missing asset is a 404 (not the app page), so a chunk lost by the slimming shows up as one.
            return PlainTextResponse(f"{MOUNT}/{relative}: not part of the viewer", status_code=404)
        if path is None:
            path = root / "index.html"
        cache = _LONG_CACHE if _HASHED.search(path.name) else "no-cache"
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        headers = {"Cache-Control": cache, "Vary": "Accept-Encoding"}
        packed = path.with_name(path.name + ".gz")
        if "gzip" in request.headers.get("accept-encoding", "") and packed.is_file():
            headers["Content-Encoding"] = "gzip"
            return FileResponse(packed, media_type=media_type, headers=headers)
        return FileResponse(path, media_type=media_type, headers=headers)

    async def to_slash(request: Request) -> Response:
        """The viewer lives at `/viewer/`."""
        return RedirectResponse(f"{MOUNT}/", status_code=308)

    return [
        Route(MOUNT, to_slash, methods=["GET", "HEAD"]),
        Route(f"{MOUNT}/", viewer, methods=["GET", "HEAD"]),
        Route(MOUNT + "/{path:path}", viewer, methods=["GET", "HEAD"]),
    ]


def _file(root: Path, relative: str) -> Path | None:
    """The site file at `relative`, or None (not a file, outside the site, or our stamp)."""
    if not relative or relative == STAMP or relative.endswith(".gz"):
        return None
    try:
        path = (root / relative).resolve()
        if not path.is_relative_to(root.resolve()) or not path.is_file():
            return None
    except OSError:  # e.g. a name longer than the filesystem allows: no such file either
        return None
    return path
