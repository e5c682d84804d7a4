"""GDCM deferred in a serving process: not loaded at start, loaded by the first decode, pydicom's order kept.

Each case runs in a fresh interpreter, since deferring works only before pydicom is first imported
(the test process imported it long ago).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from pydicom.data import get_testdata_file

import pergamon

JPEG_LOSSLESS = get_testdata_file("JPEG-LL.dcm")
"""JPEG Lossless SV1 (from pydicom-data): of the codecs Pergamon installs, only GDCM decodes it."""

_REPORT = """
import hashlib, json, sys
from pergamon.archive import codecs
if DEFER:
    codecs.defer()
from pydicom.pixels import pixel_array
from pydicom.pixels.decoders.base import _PIXEL_DATA_DECODERS
from pydicom.pixels.encoders.base import _PIXEL_DATA_ENCODERS
from pergamon.archive.rendering import NotRenderable, decode_frame

report = {"gdcm_at_start": sys.modules.get("gdcm") is not None}
try:
    pixel_array(PATH)
    report["decodes_without_load"] = True
except Exception:
    report["decodes_without_load"] = False
report["frame"] = hashlib.sha256(decode_frame(PATH, 0).tobytes()).hexdigest()
report["gdcm_after_decode"] = sys.modules.get("gdcm") is not None
report["requests"] = sys.modules.get("requests") is not None
report["plugins"] = {
    kind + coder.UID: list(coder._available)
    for kind, registry in (("decode ", _PIXEL_DATA_DECODERS), ("encode ", _PIXEL_DATA_ENCODERS))
    for coder, _version in registry.values()
}
print(json.dumps(report))
"""


def _report(defer: bool) -> dict:
    script = f"DEFER = {defer}\nPATH = {str(JPEG_LOSSLESS)!r}\n" + _REPORT
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_deferred_gdcm_loads_on_the_first_decode_with_pydicoms_plugin_order() -> None:
    eager, deferred = _report(False), _report(True)
    assert eager["gdcm_at_start"] and eager["decodes_without_load"]  # the reference: pydicom as it comes
    assert not deferred["gdcm_at_start"]
    assert not deferred["decodes_without_load"]  # really held back until `load()`...
    assert deferred["gdcm_after_decode"]  # ...which the decode path calls
    assert deferred["frame"] == eager["frame"]
    assert deferred["plugins"] == eager["plugins"]
    assert not deferred["requests"]


def test_every_module_that_decodes_or_encodes_pixels_loads_the_codecs_first() -> None:
    """A decode outside `codecs.load()` would find no GDCM in a serving process (JPEG Lossless refused)."""
    calls = re.compile(r"\bpixel_array\(|\.pixel_array\b|\.decompress\(|\.compress\(")
    source_root = Path(pergamon.__file__).parent
    missing = [
        str(path.relative_to(source_root))
        for path in sorted(source_root.rglob("*.py"))
        if calls.search(text := path.read_text()) and "codecs.load()" not in text
    ]
    assert missing == []
