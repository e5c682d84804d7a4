"""How Pergamon's study-level searches grow with the index, without loading 10^6 instances.

Loading the issue's full scale takes 1-1.5 h per Pergamon peer (`run.py --only query`). This tool
copies a query index that `run.py` loaded (SQLite) and replicates its patients, studies and series
N times by SQL, with new keys and UIDs, so the copy has N times the studies of the original; then
it times the four study-level searches of `run.py` on both: the SQL alone, and `run_search`
(SQL plus building every answer), medians of 5 runs. It measures Pergamon only; the comparison
with Orthanc stays `run.py`'s. The instance table is not replicated (study-level searches do not
read it), so the copy stands for N x 10 instances per study.

    .venv/bin/python benchmarks/scale_index.py [--factor 20] [--index PATH]

(the default index is the one `run.py --only query --scale-studies 5000` leaves in its cache)
"""

from __future__ import annotations

import argparse
import re
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event

from pergamon.archive.index.schema import Level
from pergamon.archive.query import Constraint
from pergamon.archive.search import Search, build_plan, run_search

HERE = Path(__file__).resolve().parent
RETURN_KEYS = [
    "PatientName",
    "PatientID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyDescription",
    "ModalitiesInStudy",
    "StudyInstanceUID",
    "NumberOfStudyRelatedInstances",
]
CASES = {
    "PatientID": ("PatientID", "LO", "P000000100"),
    "PatientName wildcard": ("PatientName", "PN", "ROBE*"),
    "StudyDate range (1 month)": ("StudyDate", "DA", "20210101-20210131"),
    "Modality": ("ModalitiesInStudy", "CS", "NM"),
}


def replicate(source: Path, target: Path, factor: int) -> dict[str, int]:
    """Copy `source` to `target` with its patients, studies and series repeated `factor` times."""
    shutil.copy(source, target)
    db = sqlite3.connect(target)
    top = {t: db.execute(f"SELECT max(pk) FROM {t}").fetchone()[0] for t in ("patient", "study", "series")}
    columns = {t: [r[1] for r in db.execute(f"PRAGMA table_info({t})")] for t in top}
    for k in range(1, factor):
        changed = {
            "patient": {"pk": f"pk + {k * top['patient']}", "patient_id": f"patient_id || '-{k}'"},
            "study": {
                "pk": f"pk + {k * top['study']}",
                "patient_fk": f"patient_fk + {k * top['patient']}",
                "study_uid": f"study_uid || '.{k}'",
            },
            "series": {
                "pk": f"pk + {k * top['series']}",
                "study_fk": f"study_fk + {k * top['study']}",
                "series_uid": f"series_uid || '.{k}'",
            },
        }
        for table, names in columns.items():
            values = ", ".join(changed[table].get(n, n) for n in names)
            select = f"SELECT {values} FROM {table} WHERE pk <= {top[table]}"
            db.execute(f"INSERT INTO {table} ({', '.join(names)}) {select}")
    db.commit()
    counts = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in top}
    db.close()
    return counts


def engine_for(path: Path) -> Any:
    """An engine set up as Pergamon's SQLite index is (case-sensitive LIKE, REGEXP)."""
    engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _setup(dbapi: Any, _record: Any) -> None:
        dbapi.execute("PRAGMA case_sensitive_like=ON")
        dbapi.create_function("regexp", 2, lambda p, v: v is not None and re.search(p, v) is not None)

    return engine


def time_searches(path: Path) -> list[tuple[str, int, float, float]]:
    """(kind, matches, SQL ms, run_search ms) of each case."""
    rows = []
    with engine_for(path).connect() as conn:
        for kind, (keyword, vr, value) in CASES.items():
            search = Search(Level.STUDY, [Constraint.parse(keyword, vr, value)], return_keys=RETURN_KEYS)
            query = build_plan(search).query
            sql, full, found = [], [], 0
            for _ in range(5):
                t0 = time.perf_counter()
                found = len(conn.execute(query).fetchall())
                sql.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                list(run_search(conn, search))
                full.append((time.perf_counter() - t0) * 1000)
            rows.append((kind, found, statistics.median(sql), statistics.median(full)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", default=str(HERE / ".cache/loaded-5000x10/pergamon-sqlite/data/index.sqlite"))
    parser.add_argument("--factor", type=int, default=20)
    args = parser.parse_args()
    source = Path(args.index)
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "index.sqlite"
        counts = replicate(source, copy, args.factor)
        print("| search | studies | matches | SQL ms | run_search ms |\n|---|---|---|---|---|")
        for label, path in (("original", source), (f"x{args.factor}", copy)):
            studies = sqlite3.connect(path).execute("SELECT count(*) FROM study").fetchone()[0]
            for kind, found, sql, full in time_searches(path):
                print(f"| {kind} ({label}) | {studies:,} | {found:,} | {sql:.1f} | {full:.1f} |")
        print(f"\nreplicated: {counts}")


if __name__ == "__main__":
    main()
