"""A 2 GiB multi-frame instance sent by dcmtk storescu to `pergamon serve`: stored whole, memory flat.

The file is generated without holding it in memory (pydicom writes the header, the Pixel Data
body is a sparse zero-filled extent), with a few random marker blocks so a lost, duplicated or
reordered chunk changes the hash. The server runs as a child process so its peak resident memory
(VmHWM) can be read from /proc after the store.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import samples
from conftest import dcmtk_env, make_settings, require_tool
from store_checks import (
    ChildServer,
    assert_blobs_match_index,
    assert_counts_consistent,
    dataset_digest,
    temp_leftovers,
)

pytestmark = [pytest.mark.interop, pytest.mark.slow]

SIZE = 2 * 1024**3
MIN_FREE = 8 * 1000**3  # source (sparse) + received temp file / blob, with room to spare
MAX_PEAK_RSS = 400 * 1024**2
MARKER = 1 << 16


def peak_rss(pid: int) -> int:
    """VmHWM (peak resident set size) of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


@pytest.fixture
def child_server(tmp_path: Path, database_url: str) -> Iterator[ChildServer]:
    server = ChildServer(make_settings(tmp_path / "data", database_url, store_workers=1), tmp_path)
    yield server
    server.kill()


def test_two_gib_instance_from_storescu(tmp_path: Path, child_server: ChildServer) -> None:
    free = shutil.disk_usage(tmp_path).free
    if free < MIN_FREE:
        pytest.skip(f"needs {MIN_FREE / 1e9:.0f} GB free under {tmp_path}, has {free / 1e9:.1f} GB")
    storescu = require_tool("storescu")

    sample = samples.big_multiframe(tmp_path / "src", SIZE)
    offset, length = samples.pixel_data_offset(sample.path)
    assert length >= SIZE - 2 * 1024**2 and sample.size >= SIZE - 2 * 1024**2
    rng = random.Random(2)
    with open(sample.path, "r+b") as f:  # random blocks at the start, the middle and the end
        for at in (offset, offset + length // 2 + 12345, offset + length - MARKER):
            f.seek(at)
            f.write(rng.randbytes(MARKER))
    source_digest = dataset_digest(sample.path)

    child_server.start()
    proc = child_server.proc
    assert proc is not None
    settings = child_server.settings
    baseline = peak_rss(proc.pid)

    peer = ["127.0.0.1", str(settings.dicom.port)]
    started = time.monotonic()
    sent = subprocess.run(
        [storescu, "-aet", "BIGSENDER", "-aec", settings.dicom.ae_title, *peer, str(sample.path)],
        env=dcmtk_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    elapsed = time.monotonic() - started
    log = child_server.log_text()[-3000:]
    assert sent.returncode == 0, f"storescu failed after {elapsed:.0f} s:\n{sent.stderr}\n{log}"
    peak = peak_rss(proc.pid)

    rows = assert_blobs_match_index(settings)
    assert set(rows) == {sample.sop_instance_uid}
    row = rows[sample.sop_instance_uid]
    assert row.transfer_syntax == sample.transfer_syntax
    stored = settings.blob_path / row.blob_key
    assert dataset_digest(stored) == source_digest, "stored data set differs from the one sent"
    assert assert_counts_consistent(settings)["instances"] == 1
    assert temp_leftovers(settings) == []
    assert peak < MAX_PEAK_RSS, (
        f"server peak RSS {peak / 2**20:.0f} MiB (at start {baseline / 2**20:.0f} MiB) for a "
        f"{sample.size / 2**30:.1f} GiB instance: memory is not bounded"
    )
    assert child_server.stop() == 0
    print(f"2 GiB store: {elapsed:.1f} s, server peak RSS {peak / 2**20:.0f} MiB (start {baseline / 2**20:.0f} MiB)")
    os.unlink(sample.path)  # pytest keeps the last runs' tmp_path: do not leave 4 GiB behind
    os.unlink(stored)
