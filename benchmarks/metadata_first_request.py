"""The first WADO-RS metadata request for a newly stored series, with and without background preparation.

Not the benchmark of record (run.py's viewer section is); a tool for `http.metadata_prepare_delay`.
For each delay given, a fresh `pergamon serve` (SQLite) receives N CT slices of one series with
one dcmtk `storescu`, the script waits SETTLE seconds (a radiologist opening a study that arrived
a little earlier), then times three metadata requests of the series. Delay 0 = rendered only on
request, so the first request renders every instance's JSON from its file.

Usage: .venv/bin/python benchmarks/metadata_first_request.py [--n 500] [--settle 15] [--delays 0,10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import ingest_profile


def first_requests(n: int, delay: str, settle: float) -> list[float]:
    """Milliseconds of three metadata requests for the series, SETTLE seconds after it was stored."""
    files = ingest_profile.make_data(n)
    with tempfile.TemporaryDirectory(prefix="metadata-bench-") as tmp:
        ingest_profile.ENV["PERGAMON_HTTP_METADATA_PREPARE_DELAY"] = delay
        receiver = ingest_profile.Receiver("pergamon-sqlite", Path(tmp))
        receiver.start()
        try:
            command = ["storescu", "-aec", "PERGAMON", "127.0.0.1", str(receiver.port), *map(str, files)]
            subprocess.run(command, check=True, env=ingest_profile.ENV)
            time.sleep(settle)
            base = f"http://127.0.0.1:{receiver.http_port}/dicom-web"
            first = json.load(urllib.request.urlopen(f"{base}/instances?limit=1"))[0]
            series = f"{base}/studies/{first['0020000D']['Value'][0]}/series/{first['0020000E']['Value'][0]}"
            times = []
            for _ in range(3):
                started = time.perf_counter()
                items = json.load(urllib.request.urlopen(f"{series}/metadata"))
                times.append((time.perf_counter() - started) * 1000)
                if len(items) != n:
                    raise RuntimeError(f"{len(items)} instances in the metadata, {n} stored")
            return times
        finally:
            receiver.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--settle", type=float, default=15.0)
    parser.add_argument("--delays", default="0,10")
    args = parser.parse_args()
    for delay in args.delays.split(","):
        times = first_requests(args.n, delay, args.settle)
        shown = ", ".join(f"{t:.0f}" for t in times)
        print(f"metadata_prepare_delay={delay}: {args.n} instances, first / second / third request: {shown} ms")


if __name__ == "__main__":
    main()
