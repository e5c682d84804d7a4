"""The archive core as one object the doors share: settings, index, blob store and event bus.

Protocol-free and synchronous (ARCHITECTURE.md): pynetdicom handlers call it from their
association threads; async doors will call it through a thread pool.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Protocol

from pergamon.archive import ingest
from pergamon.archive.events import EventBus
from pergamon.archive.index.database import Database
from pergamon.archive.index.writer import counts
from pergamon.archive.jobs import JobQueue
from pergamon.archive.origin import Origin
from pergamon.config import Settings
from pergamon.storage.base import BlobStore
from pergamon.storage.filesystem import FilesystemBlobStore

log = logging.getLogger(__name__)


class StoreDelegate(Protocol):
    """Another process that stores files for this archive (`dimse.store_workers`): same arguments as
    `Archive.store_file`; None when it cannot take this one (then the calling process stores it)."""

    def __call__(
        self,
        path: Path,
        origin: Origin,
        expected_sop_class: str | None,
        expected_sop_instance: str | None,
        expected_study: str | None,
        move: bool,
        digest: ingest.Digest | None,
        blob_key: str | None,
    ) -> ingest.StoreResult | None: ...


class Archive:
    """Entry point of the core: `store_file`, queries (`archive.search`), retrieval (`archive.retrieve`)."""

    def __init__(self, settings: Settings, db: Database, blobs: BlobStore, bus: EventBus | None = None) -> None:
        self.settings = settings
        self.db = db
        self.blobs = blobs
        self.bus = bus or EventBus()
        self.temp_dir = settings.server.data_dir / "tmp"
        self.jobs = JobQueue(db, settings.jobs)
        self.store_delegate: StoreDelegate | None = None

    @classmethod
    def open(cls, settings: Settings) -> Archive:
        """Create the data folders, connect to the index and migrate its schema."""
        data_dir = settings.server.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.database_url, pool_size=settings.database.pool_size)
        db.migrate()
        blobs = FilesystemBlobStore(settings.blob_path, fsync=settings.storage.fsync)
        archive = cls(settings, db, blobs)
        archive._reset_temp_dir()
        return archive

    @classmethod
    def attach(cls, settings: Settings) -> Archive:
        """The archive another process opened and migrated (a store worker): own connections, same folders.

        Neither migrates nor empties the temporary folder, which holds that process's transfers.
        """
        db = Database(settings.database_url, pool_size=settings.database.pool_size)
        blobs = FilesystemBlobStore(settings.blob_path, fsync=settings.storage.fsync)
        return cls(settings, db, blobs)

    def _reset_temp_dir(self) -> None:
        """Remove what an interrupted transfer left in the temporary folder (never acknowledged)."""
        if self.temp_dir.exists():
            leftovers = list(self.temp_dir.iterdir())
            if leftovers:
                log.info("removing %d unfinished transfer(s) from %s", len(leftovers), self.temp_dir)
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        self.temp_dir.mkdir(parents=True, exist_ok=True)

    def store_file(
        self,
        path: Path,
        origin: Origin,
        *,
        expected_sop_class: str | None = None,
        expected_sop_instance: str | None = None,
        expected_study: str | None = None,
        move: bool = False,
        digest: ingest.Digest | None = None,
        blob_key: str | None = None,
    ) -> ingest.StoreResult:
        """Store one Part-10 file durably; see `ingest.store_file`. Runs in a store worker when there is one."""
        if self.store_delegate is not None:
            result = self.store_delegate(
                path, origin, expected_sop_class, expected_sop_instance, expected_study, move, digest, blob_key
            )
            if result is not None:
                return result
        return ingest.store_file(
            self,
            path,
            origin,
            expected_sop_class=expected_sop_class,
            expected_sop_instance=expected_sop_instance,
            expected_study=expected_study,
            move=move,
            digest=digest,
            blob_key=blob_key,
        )

    def counts(self) -> dict[str, int]:
        """Numbers of patients, studies, series and instances in the index."""
        with self.db.read() as conn:
            return counts(conn)

    def close(self) -> None:
        self.db.dispose()
