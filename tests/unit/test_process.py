"""A serving process freezes what it built while starting and collects young objects less often; its threads."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from pergamon import process, runtime
from pergamon.config import Settings


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()  # the test process goes on collecting everything


def test_startup_objects_leave_the_collector_and_new_garbage_is_still_collected(unfrozen: None) -> None:
    built_at_start = [{"x": i} for i in range(1000)]
    process.freeze_startup_objects()
    assert gc.get_freeze_count() >= len(built_at_start)

    class Node:
        other: Any = None

    first, second = Node(), Node()
    first.other, second.other = second, first  # a cycle only the collector can free
    del first, second
    assert gc.collect() >= 2


def test_serve_freezes_once_started(settings: Settings, monkeypatch: pytest.MonkeyPatch, unfrozen: None) -> None:
    calls: list[str] = []
    app = runtime.Pergamon(settings)
    monkeypatch.setattr(runtime.signal, "signal", lambda *_args: None)  # leave pytest's handlers alone
    monkeypatch.setattr(app, "start", lambda: calls.append("start"))
    monkeypatch.setattr(app, "stop", lambda *_args: calls.append("stop"))
    monkeypatch.setattr(runtime, "freeze_startup_objects", lambda: calls.append("freeze"))
    monkeypatch.setattr(runtime, "collect_young_less_often", lambda: calls.append("young"))
    app._stopping.set()  # as if SIGTERM came at once
    try:
        app.run_until_signalled()
    finally:
        app.archive.close()
    assert calls == ["start", "freeze", "young", "stop"]


@pytest.fixture
def default_thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def test_young_objects_are_collected_less_often(default_thresholds: None) -> None:
    gc.set_threshold(700, 10, 10)
    process.collect_young_less_often()
    assert gc.get_threshold() == (process.YOUNG_COLLECTION_THRESHOLD, 10, 10)
    gc.collect()
    before = gc.get_stats()[0]["collections"]
    kept = [[] for _ in range(process.YOUNG_COLLECTION_THRESHOLD // 2)]  # containers that live on, as results do
    assert gc.get_stats()[0]["collections"] == before, "a young collection ran before the threshold"
    assert len(kept) == process.YOUNG_COLLECTION_THRESHOLD // 2


def test_process_threads_are_made_once_and_reused() -> None:
    threads = process.ProcessThreads(2, "pergamon-test")
    names = {threads.pool().submit(lambda: threading.current_thread().name).result() for _ in range(20)}
    assert threads.pool() is threads.pool()
    assert 1 <= len(names) <= 2 and all(name.startswith("pergamon-test") for name in names)
