"""The WADO-RS metadata of newly stored series, rendered in the background before a viewer asks.

The first metadata request for a series renders every instance's DICOM JSON from its file
(`metadata_cache`): about a second for a 500-slice CT on the 2-core test machine, the wait a
radiologist sees when opening a study that has just arrived. Once a series has had no new
instance for `http.metadata_prepare_delay` seconds, one background thread renders the cache
entries its instances lack, so that first request reads them from the cache. dcm4chee prepares
series metadata after a series settles for the same reason.

Rendering is work done ahead, so it never competes with ingest for the processor: it starts only
when nothing at all was stored for `QUIET` seconds, and a store arriving meanwhile sends the series
back to wait (what was rendered stays; the rest is rendered at the next quiet moment). During a
bulk load the warmer therefore waits for the end, and then renders only the `MAX_PENDING` most
recently stored series: the ones a viewer is likely to open, not a whole migrated archive.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pydicom import Dataset

from pergamon.archive.events import InstanceStored
from pergamon.archive.retrieve import locate, parse_identifier
from pergamon.archive.service import Archive
from pergamon.web.dicomweb import metadata_cache, wado

log = logging.getLogger(__name__)

MAX_PENDING = 500
"""Series remembered at once; beyond it the oldest is dropped (its first request renders it)."""
QUIET = 1.0
"""Seconds without any store before rendering starts or goes on."""
POLL = 1.0
"""Longest wait between looks for settled series, in seconds."""


class MetadataWarmer:
    """Subscribe `on_event` to the archive's bus; `start` and `stop` the rendering thread."""

    def __init__(self, archive: Archive, delay: float) -> None:
        self.archive = archive
        self.delay = delay
        self._last_store: dict[str, tuple[str, float]] = {}  # series UID -> (study UID, monotonic time)
        self._last_any = float("-inf")  # monotonic time of the newest store of any series
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def on_event(self, event: Any) -> None:
        """Note the time of each series' newest instance (a bus subscriber: cheap, never blocks)."""
        if not isinstance(event, InstanceStored):
            return
        now = time.monotonic()
        with self._lock:
            self._last_any = now
            self._last_store.pop(event.series_uid, None)  # re-inserted last: the dict stays in store order
            self._last_store[event.series_uid] = (event.study_uid, now)
            if len(self._last_store) > MAX_PENDING:
                del self._last_store[next(iter(self._last_store))]

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="pergamon-metadata-warmer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the instance being rendered (at most a few milliseconds)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stopping.wait(min(self.delay, POLL)):
            ready = self._settled()
            for n, (series_uid, (study_uid, _at)) in enumerate(ready.items()):
                if self._stopping.is_set():
                    return
                try:
                    done = self._prepare(study_uid, series_uid)
                except Exception:  # the index or a file went away: the first request renders what is left
                    log.exception("preparing the metadata of series %s failed", series_uid)
                    continue
                if not done:  # a store came: this series and the rest wait for the next quiet moment
                    self._put_back(dict(list(ready.items())[n:]))
                    break

    def _settled(self) -> dict[str, tuple[str, float]]:
        """The series whose newest instance is `delay` seconds old, taken off the list; none while stores go on."""
        now = time.monotonic()
        with self._lock:
            if now - self._last_any < QUIET:
                return {}
            ready = {series: entry for series, entry in self._last_store.items() if now - entry[1] >= self.delay}
            for series in ready:
                del self._last_store[series]
        return ready

    def _storing(self) -> bool:
        """Whether anything was stored within the last `QUIET` seconds."""
        with self._lock:
            return time.monotonic() - self._last_any < QUIET

    def _put_back(self, series: dict[str, tuple[str, float]]) -> None:
        """Return taken series to the front of the list (oldest first), unless a new instance re-listed one."""
        with self._lock:
            kept = {uid: entry for uid, entry in series.items() if uid not in self._last_store}
            self._last_store = {**kept, **self._last_store}
            while len(self._last_store) > MAX_PENDING:
                del self._last_store[next(iter(self._last_store))]

    def _prepare(self, study_uid: str, series_uid: str) -> bool:
        """Render the series' missing cache entries; False when a store interrupted it."""
        if self._storing():
            return False
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "SERIES"
        identifier.StudyInstanceUID = study_uid
        identifier.SeriesInstanceUID = series_uid
        started = time.monotonic()
        rendered = 0
        done = True
        for stored in locate(self.archive, parse_identifier(identifier, patient_root=False)):
            if self._stopping.is_set() or self._storing():
                done = False
                break
            try:
                rendered += metadata_cache.prepare(self.archive, stored, wado.instance_json)
            except Exception as exc:  # as a request would: this object is left out, the others go on
                log.warning("metadata of %s not prepared: %s", stored.sop_instance_uid, exc)
        if rendered:
            log.info(
                "prepared the WADO-RS metadata of series %s: %d instance(s) in %.1f s",
                series_uid,
                rendered,
                time.monotonic() - started,
            )
        return done
