"""CPU to render one uncached instance's WADO-RS metadata: Pergamon's own header reader vs `dcmread`.

Not the benchmark of record (run.py's viewer section is); an in-process A/B for the metadata path
(`frames.read_header` + `wado.instance_json` + `json.dumps`), the work of the first metadata request
of a series that just arrived. The `dcmread` side is the same code with `header.read_header_deferring`
answering "not simple" for every file, as for files this reader leaves to pydicom. Rounds alternate.

Usage: .venv/bin/python benchmarks/metadata_render.py [--n 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import time

import ingest_profile

from pergamon.archive import frames, header
from pergamon.web.dicomweb.wado import instance_json


def cpu_ms_per_instance(files: list, own_reader: bool) -> float:
    """Milliseconds of this process's CPU per instance for reading and rendering every file."""
    original = header.read_header_deferring
    if not own_reader:
        header.read_header_deferring = lambda fp: None  # type: ignore[assignment]
    try:
        start = time.process_time()
        for path in files:
            json.dumps(instance_json(frames.read_header(path), "bulk"))
        return 1000 * (time.process_time() - start) / len(files)
    finally:
        header.read_header_deferring = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    files = ingest_profile.make_data(args.n)
    cpu_ms_per_instance(files, True)  # warm the page cache and imports
    for r in range(args.rounds):
        ours, theirs = cpu_ms_per_instance(files, True), cpu_ms_per_instance(files, False)
        print(f"round {r + 1}: own header reader {ours:.3f} ms, dcmread {theirs:.3f} ms CPU per instance")


if __name__ == "__main__":
    main()
