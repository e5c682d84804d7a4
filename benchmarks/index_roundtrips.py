"""Index writer A/B: microseconds and database round trips per `add_instance` + commit, in one process.

Not a benchmark of record; a quick tool for the index writer. N small CT instances' index rows go
into one series (the first through the slow path, untimed) with `add_instance` inside
`Database.write()`, as ingest does; nothing is written to a blob store. `us_new` is the time per
object of the whole transaction (checkout, add_instance, commit), `us_add_new` that of add_instance
alone (the commit's WAL flush varies a lot on a shared disk). Then `--replace` of them
are stored again (same SOP Instance UIDs: the replaced-instance path). Round trips are counted on
PostgreSQL from libpq's protocol trace of one extra, untimed object (each Sync or simple Query the
client sends waits for the server once); statements are counted as Bind/Query messages.

Usage: PYTHONPATH=src .venv/bin/python benchmarks/index_roundtrips.py [--n 2000] [--db postgresql|sqlite]
`--ab BASE_SRC` alternates this tree's src/ with BASE_SRC (e.g. `git worktree add /tmp/base HEAD~1`,
then /tmp/base/src) in child processes, `--rounds` times, and prints the medians.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
POSTGRES_URL = os.environ.get("PERGAMON_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _records(n: int) -> list[Any]:
    """N index records of one series, differing in SOP Instance UID and Instance Number."""
    sys.path.insert(0, str(ROOT / "tests"))
    import samples
    from pydicom.uid import CTImageStorage, generate_uid

    from pergamon.archive.model import split_levels

    template = split_levels(samples.make_instance(CTImageStorage, rows=16, cols=16))
    records = []
    for number in range(n):
        record = copy.deepcopy(template)
        uid = generate_uid()
        record.instance.columns["sop_uid"] = uid
        record.instance.attrs["00080018"] = {"vr": "UI", "Value": [uid]}
        record.instance.columns["instance_number"] = str(number + 1)
        records.append(record)
    return records


def _trace_count(db: Any, store: Any) -> tuple[int, int]:
    """(round trips, statements) of `store()` on PostgreSQL, from libpq's trace of the pooled connection."""
    with db.engine.connect() as conn:
        pgconn = conn.connection.dbapi_connection.pgconn  # type: ignore[union-attr]
    with tempfile.TemporaryFile("w+") as trace:
        pgconn.trace(trace.fileno())
        try:
            store()
        finally:
            pgconn.untrace()
        trace.seek(0)
        sent = [line.split("\t")[3].strip() for line in trace if line.split("\t")[1:2] == ["F"]]
    return sum(m in ("Sync", "Query") for m in sent), sum(m in ("Bind", "Query") for m in sent)


def run(n: int, replace: int, backend: str) -> dict[str, Any]:
    """Time N stores (and `replace` re-stores) into a fresh index; count one more object's round trips."""
    from sqlalchemy import create_engine, text

    from pergamon.archive.index.database import Database
    from pergamon.archive.index.writer import BlobInfo, add_instance

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    folder = tempfile.TemporaryDirectory()
    if backend == "postgresql":
        admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    else:
        url = f"sqlite:///{folder.name}/index.sqlite"
    db = Database(url)
    try:
        db.migrate()
        records = _records(n + 2)
        origin = {"kind": "bench"}

        in_transaction = [0.0]

        def store(record: Any) -> None:
            blob = BlobInfo(f"blob/{record.instance.columns['sop_uid']}", 1000, "0" * 64, "1.2.840.10008.1.2.1")
            with db.write() as conn:
                started = time.perf_counter()
                add_instance(conn, record, blob, origin)
                in_transaction[0] += time.perf_counter() - started

        store(records[0])  # creates patient, study, series
        in_transaction[0] = 0.0
        started = time.perf_counter()
        for record in records[1 : n + 1]:
            store(record)
        per_new = (time.perf_counter() - started) / n * 1e6
        add_new = in_transaction[0] / n * 1e6
        started = time.perf_counter()
        for record in records[1 : replace + 1]:
            store(record)
        per_replace = (time.perf_counter() - started) / replace * 1e6 if replace else 0.0
        result: dict[str, Any] = {"us_new": per_new, "us_add_new": add_new, "us_replace": per_replace}
        if backend == "postgresql":
            result["trips_new"], result["stmts_new"] = _trace_count(db, lambda: store(records[n + 1]))
            result["trips_replace"], result["stmts_replace"] = _trace_count(db, lambda: store(records[n + 1]))
        return result
    finally:
        db.dispose()
        folder.cleanup()
        if backend == "postgresql":
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--replace", type=int, default=200)
    parser.add_argument("--db", default="postgresql", choices=("postgresql", "sqlite"))
    parser.add_argument("--ab", metavar="BASE_SRC", help="alternate with this src/ folder in child processes")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not args.ab:
        print(json.dumps(run(args.n, args.replace, args.db)))
        return
    sources = {"base": args.ab, "this": str(ROOT / "src")}
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in sources}
    for _ in range(args.rounds):
        for name, src in sources.items():
            command = [sys.executable, __file__, "--n", str(args.n), "--replace", str(args.replace), "--db", args.db]
            out = subprocess.run(command, env={**os.environ, "PYTHONPATH": src}, check=True, capture_output=True)
            samples[name].append(json.loads(out.stdout.decode().strip().splitlines()[-1]))
            print(name, samples[name][-1], flush=True)
    for name, runs in samples.items():
        medians = {key: round(statistics.median(r[key] for r in runs), 1) for key in runs[0]}
        print(f"{name}: median of {len(runs)}: {medians}")


if __name__ == "__main__":
    main()
