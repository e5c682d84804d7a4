"""Durable jobs: work that leaves the process (storage commitment reports, later MPPS forwarding,
IAN, routing) is a row in the `job` table, claimed by a worker, retried with backoff.

A claimed job holds a lease (`next_run_at` moved `LEASE` seconds ahead while it runs); if the
process dies, the lease expires and any node claims the job again, so a restart loses nothing.
On PostgreSQL, claims use FOR UPDATE SKIP LOCKED so several nodes can share the queue; on SQLite
the single in-process write lock serialises them.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, select, update

from pergamon.archive.index.database import Database
from pergamon.archive.index.schema import job
from pergamon.config import JobSettings

log = logging.getLogger(__name__)

LEASE = 300.0


class JobState(StrEnum):
    """States of a job row (stored as these strings)."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Job:
    pk: int
    kind: str
    payload: dict[str, Any]
    attempts: int


@dataclass(frozen=True)
class Done:
    """The job finished."""


@dataclass(frozen=True)
class Retry:
    """Try again later (the peer was unreachable...); `error` is kept on the row for operators."""

    error: str


@dataclass(frozen=True)
class Failed:
    """Give up: retrying cannot help."""

    error: str


JobResult = Done | Retry | Failed
JobHandler = Callable[[Job], JobResult]


class JobQueue:
    """Enqueue, claim and settle jobs in the index database."""

    def __init__(self, db: Database, settings: JobSettings) -> None:
        self.db = db
        self.settings = settings
        # Set by the runner: called after a job commits so it runs now rather than at the next poll.
        self.wake: Callable[[], None] = lambda: None

    def enqueue(self, kind: str, payload: dict[str, Any], *, conn: Connection | None = None, delay: float = 0.0) -> int:
        """Add a job; inside `conn`'s transaction when given (so it commits with the caller's work)."""
        now = time.time()
        values = {
            "kind": kind,
            "state": JobState.PENDING.value,
            "payload": json.dumps(payload),
            "attempts": 0,
            "next_run_at": now + delay,
            "created_at": now,
            "updated_at": now,
        }
        if conn is not None:  # the caller commits, then calls `wake()`
            return int(conn.execute(job.insert().values(**values)).inserted_primary_key[0])
        with self.db.write() as own:
            pk = int(own.execute(job.insert().values(**values)).inserted_primary_key[0])
        self.wake()
        return pk

    def claim(self, kinds: list[str]) -> Job | None:
        """Take the next due job of one of `kinds` (pending, or running with an expired lease)."""
        now = time.time()
        due = (
            select(job.c.pk)
            .where(
                job.c.state.in_([JobState.PENDING.value, JobState.RUNNING.value]),
                job.c.next_run_at <= now,
                job.c.kind.in_(kinds),
            )
            .limit(1)
        )
        with self.db.read() as conn:  # the idle poll costs a read, not a write transaction and its fsync
            if conn.execute(due).first() is None:
                return None
        with self.db.write() as conn:
            query = (
                select(job.c.pk, job.c.kind, job.c.payload, job.c.attempts)
                .where(
                    job.c.state.in_([JobState.PENDING.value, JobState.RUNNING.value]),
                    job.c.next_run_at <= now,
                    job.c.kind.in_(kinds),
                )
                .order_by(job.c.next_run_at)
                .limit(1)
            )
            if not self.db.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            row = conn.execute(query).first()
            if row is None:
                return None
            conn.execute(
                update(job)
                .where(job.c.pk == row.pk)
                .values(
                    state=JobState.RUNNING.value, next_run_at=now + LEASE, attempts=row.attempts + 1, updated_at=now
                )
            )
        return Job(row.pk, row.kind, json.loads(row.payload), row.attempts + 1)

    def settle(self, claimed: Job, result: JobResult) -> None:
        """Record a job's result: done, failed, or pending again after a backoff."""
        now = time.time()
        values: dict[str, Any] = {"updated_at": now}
        if isinstance(result, Done):
            values.update(state=JobState.DONE.value, last_error=None)
        elif isinstance(result, Failed) or (
            self.settings.max_attempts and claimed.attempts >= self.settings.max_attempts
        ):
            values.update(
                state=JobState.FAILED.value, last_error=result.error if not isinstance(result, Done) else None
            )
        else:
            delay = min(self.settings.retry_delay * 2 ** (claimed.attempts - 1), self.settings.retry_max_delay)
            delay *= random.uniform(0.8, 1.2)
            values.update(state=JobState.PENDING.value, next_run_at=now + delay, last_error=result.error)
        with self.db.write() as conn:
            conn.execute(update(job).where(job.c.pk == claimed.pk).values(**values))

    def retry_now(self, pk: int) -> bool:
        """Make a failed (or waiting) job due now, for an operator; False if it is running, done or absent."""
        now = time.time()
        with self.db.write() as conn:
            changed = conn.execute(
                update(job)
                .where(job.c.pk == pk, job.c.state.in_([JobState.FAILED.value, JobState.PENDING.value]))
                .values(state=JobState.PENDING.value, next_run_at=now, updated_at=now)
            ).rowcount
        if changed:
            self.wake()
        return bool(changed)

    def state(self, pk: int) -> tuple[str, int, str | None]:
        """(state, attempts, last error) of a job."""
        with self.db.read() as conn:
            row = conn.execute(select(job.c.state, job.c.attempts, job.c.last_error).where(job.c.pk == pk)).one()
        return row.state, row.attempts, row.last_error


class JobRunner:
    """A worker thread running the jobs whose kinds have a handler."""

    def __init__(self, queue: JobQueue, handlers: dict[str, JobHandler]) -> None:
        self.queue = queue
        self.handlers = handlers
        queue.wake = self.wake
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pergamon-jobs", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look at the queue now rather than at the next poll (a job was just enqueued)."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run_pending(self) -> int:
        """Run every job that is due now; returns how many ran (used by the loop and by tests)."""
        ran = 0
        while not self._stop.is_set():
            claimed = self.queue.claim(list(self.handlers))
            if claimed is None:
                return ran
            ran += 1
            try:
                result = self.handlers[claimed.kind](claimed)
            except Exception as exc:
                log.exception("job %d (%s) raised", claimed.pk, claimed.kind)
                result = Retry(f"{type(exc).__name__}: {exc}")
            if not isinstance(result, Done):
                log.warning("job %d (%s) attempt %d: %s", claimed.pk, claimed.kind, claimed.attempts, result.error)
            self.queue.settle(claimed, result)
        return ran

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_pending()
            except Exception:
                log.exception("job runner error; retrying")
            self._wake.wait(self.queue.settings.poll_interval)
            self._wake.clear()
