"""Running Pergamon as a service: start every listener and worker, stop them gracefully.

SIGTERM or SIGINT stops accepting new associations, lets running ones finish within
`server.shutdown_timeout` seconds, stops the workers and exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from pergamon.archive import orders
from pergamon.archive.events import ApplicationStarted, ApplicationStopped
from pergamon.archive.ian import IanTrigger
from pergamon.archive.index.maintenance import IndexMaintenance
from pergamon.archive.jobs import JobRunner
from pergamon.archive.service import Archive
from pergamon.archive.sweeper import sweep_orphans
from pergamon.audit.repository import AuditRepository
from pergamon.audit.sender import AuditSender
from pergamon.audit.trail import AuditTrail
from pergamon.clock.monitor import ClockMonitor
from pergamon.config import Settings
from pergamon.dimse import commitment, mpps
from pergamon.dimse.server import DicomServer
from pergamon.hl7.receiver import build_router
from pergamon.hl7.server import Hl7Server
from pergamon.process import collect_young_less_often, freeze_startup_objects
from pergamon.storage.filesystem import FilesystemBlobStore
from pergamon.web.dicomweb.metadata_warmer import MetadataWarmer
from pergamon.web.server import HttpServer

log = logging.getLogger(__name__)


class Pergamon:
    """The archive with its doors and workers."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.archive = Archive.open(settings)
        self.dicom = DicomServer(self.archive)
        self.http = HttpServer(self.archive)
        self.hl7 = Hl7Server(self.archive, build_router(self.archive))
        self.http.server.config.app.state.hl7_receiver = self.hl7.receiver  # replays use the listener's handlers
        self.jobs = JobRunner(
            self.archive.jobs,
            {**commitment.job_handlers(self.archive, self.dicom), **mpps.job_handlers(self.archive)},
        )
        self.archive.bus.subscribe(IanTrigger(self.archive))  # RAD-49: IAN once an MPPS's instances are all stored
        self.archive.bus.subscribe(orders.link_on_store(self.archive.db))  # RAD-4/13: link studies to orders
        self.audit_sender = AuditSender(self.archive)
        self.audit_trail = AuditTrail(self.archive, sink=self.audit_sender.send)
        if settings.audit.enabled:
            self.archive.bus.subscribe(self.audit_trail.handle)
        self.audit_repository = AuditRepository(self.archive)
        self.clock = ClockMonitor(self.archive)
        self.index_maintenance = IndexMaintenance(self.archive.db, settings.database.maintenance_interval)
        self.metadata_warmer: MetadataWarmer | None = None
        if settings.http.metadata_prepare_delay > 0:
            self.metadata_warmer = MetadataWarmer(self.archive, settings.http.metadata_prepare_delay)
            self.archive.bus.subscribe(self.metadata_warmer.on_event)
        self._stopping = threading.Event()
        self._stoppers: list[Callable[[], None]] = []

    @property
    def run_marker(self) -> Path:
        """Present while `serve` runs; found at start, it means the last run did not stop cleanly."""
        return self.settings.server.data_dir / "pergamon.running"

    def start(self) -> None:
        started_at = time.time()
        unclean = self.run_marker.exists()
        self.dicom.start()  # OSErrors name the port that failed
        try:
            self.http.start()
        except OSError:
            self.dicom.stop(0)
            raise
        try:
            self.hl7.start()
        except OSError:
            self.http.stop()
            self.dicom.stop(0)
            raise
        self.run_marker.write_text(f"{os.getpid()}\n")
        if unclean and isinstance(self.archive.blobs, FilesystemBlobStore):
            log.warning("the previous run did not stop cleanly: looking for orphan blobs in the background")
            threading.Thread(
                target=sweep_orphans,
                args=(self.archive.blobs, self.archive.db),
                kwargs={"started_at": started_at},
                name="pergamon-sweeper",
                daemon=True,
            ).start()
        for start, stop in self.archive_workers():
            start()
            self._stoppers.append(stop)
        self.archive.bus.emit(ApplicationStarted(ae_title=self.settings.dicom.ae_title))
        counts = self.archive.counts()
        log.info(
            "Pergamon ready: %d patients, %d studies, %d series, %d instances; data in %s",
            counts["patients"],
            counts["studies"],
            counts["series"],
            counts["instances"],
            self.settings.server.data_dir.resolve(),
        )

    def archive_workers(self) -> list[tuple[Callable[[], None], Callable[[], None]]]:
        """(start, stop) pairs of background workers."""
        workers = [
            (self.audit_repository.start, self.audit_repository.stop),
            (self.audit_sender.start, self.audit_sender.stop),
            (self.jobs.start, self.jobs.stop),
            (self.clock.start, self.clock.stop),
            (self.index_maintenance.start, self.index_maintenance.stop),
        ]
        if self.metadata_warmer is not None:
            workers.append((self.metadata_warmer.start, self.metadata_warmer.stop))
        return workers

    def stop(self) -> None:
        """Stop accepting, let running associations finish (bounded), stop workers, close the index."""
        if self.dicom.server is not None:
            timeout = self.settings.server.shutdown_timeout
            log.info("stopping: no new associations; waiting up to %.0f s for running ones", timeout)
            self.hl7.stop(timeout)
            self.http.stop()
            self.dicom.stop(timeout)
            self.run_marker.unlink(missing_ok=True)
            self.archive.bus.emit(ApplicationStopped(ae_title=self.settings.dicom.ae_title))
        self.audit_trail.close()  # what is still batched goes to the spool before the sender stops
        for stop in reversed(self._stoppers):
            stop()
        self.archive.close()
        log.info("stopped")

    def run_until_signalled(self) -> None:
        """Start, block until SIGTERM/SIGINT, then stop."""

        def request_stop(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s", signal.Signals(signum).name)
            self._stopping.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        self.start()
        freeze_startup_objects()
        collect_young_less_often()
        while not self._stopping.wait(3600):
            pass
        self.stop()
