"""The durable job queue (archive/jobs.py) on the test's index database (SQLite or PostgreSQL)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from sqlalchemy import update

from pergamon.archive import jobs
from pergamon.archive.index.schema import job
from pergamon.archive.jobs import Done, Failed, Job, JobQueue, JobRunner, Retry


def _queue(archive: Any, **overrides: Any) -> JobQueue:
    return JobQueue(archive.db, dataclasses.replace(archive.settings.jobs, **overrides))


def test_a_job_is_claimed_once_and_done(archive: Any) -> None:
    queue = _queue(archive)
    pk = queue.enqueue("demo", {"n": 1})
    claimed = queue.claim(["demo"])
    assert claimed is not None and claimed.pk == pk and claimed.payload == {"n": 1} and claimed.attempts == 1
    assert queue.claim(["demo"]) is None, "a running job under lease must not be claimed twice"
    queue.settle(claimed, Done())
    assert queue.state(pk) == ("done", 1, None)
    assert queue.claim(["demo"]) is None


def test_only_the_asked_kinds_are_claimed(archive: Any) -> None:
    queue = _queue(archive)
    queue.enqueue("other", {})
    assert queue.claim(["demo"]) is None
    assert queue.claim(["other"]) is not None


def test_retry_backs_off_and_keeps_the_error(archive: Any) -> None:
    queue = _queue(archive, retry_delay=30.0)
    pk = queue.enqueue("demo", {})
    claimed = queue.claim(["demo"])
    assert claimed is not None
    queue.settle(claimed, Retry("peer unreachable"))
    assert queue.state(pk) == ("pending", 1, "peer unreachable")
    assert queue.claim(["demo"]) is None, "the retry must wait its backoff"


def test_max_attempts_turns_a_retry_into_failure(archive: Any) -> None:
    queue = _queue(archive, max_attempts=1)
    pk = queue.enqueue("demo", {})
    claimed = queue.claim(["demo"])
    assert claimed is not None
    queue.settle(claimed, Retry("still down"))
    assert queue.state(pk) == ("failed", 1, "still down")


def test_an_expired_lease_is_claimed_again(archive: Any) -> None:
    """A worker that died mid-job leaves it running; after the lease another claim takes it over."""
    queue = _queue(archive)
    pk = queue.enqueue("demo", {})
    assert queue.claim(["demo"]) is not None
    with archive.db.write() as conn:  # the lease runs out
        conn.execute(update(job).where(job.c.pk == pk).values(next_run_at=time.time() - 1))
    again = queue.claim(["demo"])
    assert again is not None and again.pk == pk and again.attempts == 2


def test_runner_runs_jobs_and_survives_a_raising_handler(archive: Any) -> None:
    queue = _queue(archive, retry_delay=60.0)
    seen: list[int] = []

    def handler(claimed: Job) -> jobs.JobResult:
        seen.append(claimed.payload["n"])
        if claimed.payload["n"] == 2:
            raise RuntimeError("boom")
        return Failed("no") if claimed.payload["n"] == 3 else Done()

    runner = JobRunner(queue, {"demo": handler})
    pks = [queue.enqueue("demo", {"n": n}) for n in (1, 2, 3)]
    assert runner.run_pending() == 3
    assert sorted(seen) == [1, 2, 3]
    assert queue.state(pks[0])[0] == "done"
    assert queue.state(pks[1])[0] == "pending" and "boom" in (queue.state(pks[1])[2] or "")
    assert queue.state(pks[2]) == ("failed", 1, "no")
