"""GDCM, pydicom's widest pixel codec, loaded on the first decode instead of when pydicom is imported.

pydicom imports every installed codec plugin when it is itself imported. python-gdcm is ~19 MiB of
a process's resident memory, yet an archive that stores, finds and sends objects as they are
never decodes a pixel; only rendering, frame retrieval and transcoding do. A serving process
calls `defer()` before anything imports pydicom: GDCM's import is then refused (a None entry in
`sys.modules`, Python's documented way to refuse one), so pydicom files its GDCM plugins as
unavailable. Every decode or encode first calls `load()`, which imports GDCM once and gives its
plugins back their place: first in each list, as pydicom registers them.

`requests` is refused for good: pydicom uses it only to download its own test files, and falls
back to urllib without it (~5 MiB).
"""

from __future__ import annotations

import importlib
import sys
import threading
from typing import Any

DEFERRED = "gdcm"
REFUSED = ("requests",)
_PLUGIN_MODULES = (
    # (pydicom module holding the GDCM plugin, the plugin function, the registry of its kind)
    ("pydicom.pixels.decoders.gdcm", "_decode_frame", "pydicom.pixels.decoders.base", "_PIXEL_DATA_DECODERS"),
    ("pydicom.pixels.encoders.gdcm", "encode_pixel_data", "pydicom.pixels.encoders.base", "_PIXEL_DATA_ENCODERS"),
)
_LEGACY_HANDLER = "pydicom.pixel_data_handlers.gdcm_handler"

_lock = threading.Lock()
_loaded = False


def defer() -> None:
    """Refuse GDCM until `load()`, and `requests` for good; no effect once pydicom was imported."""
    if "pydicom" in sys.modules:
        return
    for name in (DEFERRED, *REFUSED):
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def deferred() -> bool:
    """Whether GDCM is refused now (`defer()` ran and `load()` did not yet)."""
    return DEFERRED in sys.modules and sys.modules[DEFERRED] is None


def load() -> None:
    """Make GDCM's plugins available to pydicom if `defer()` held them back (once; thread-safe)."""
    global _loaded
    if _loaded:
        return
    with _lock:
        if _loaded:
            return
        if deferred():
            del sys.modules[DEFERRED]
            _restore_plugins()
        _loaded = True


def _restore_plugins() -> None:
    """Re-import pydicom's GDCM modules now that GDCM imports, and put their plugins first again."""
    for module_name, function, registry_module, registry in _PLUGIN_MODULES:
        module = importlib.reload(importlib.import_module(module_name))
        coders: dict[str, tuple[Any, str]] = getattr(importlib.import_module(registry_module), registry)
        for coder, _version in coders.values():
            if DEFERRED in coder._unavailable and module.is_available(coder.UID):
                coder.remove_plugin(DEFERRED)
                coder._available = {DEFERRED: getattr(module, function), **coder._available}
    if _LEGACY_HANDLER in sys.modules:
        importlib.reload(sys.modules[_LEGACY_HANDLER])
