"""DIMSE ingest A/B: Pergamon (SQLite or PostgreSQL) vs Orthanc vs dcmtk `storescp +B`, 1 and K associations.

Not the benchmark of record (see the benchmark issue's harness); a quick tool for the ingest work.
Its Orthanc runs with the interop tests' configuration (StableAge 1, OverwriteInstances, ...), which
ingests slower than the default one `run.py` uses: compare Pergamon with Orthanc there, and use this
tool for Pergamon against Pergamon (`-base`).
N CT slices (512x512, 16-bit, ~0.5 MB, one series) are split over K dcmtk `storescu` processes
started together (one association each, TCP_NODELAY=1); the rate is N / wall time until the last
exits. Every receiver starts empty for each run and gets one untimed warm-up instance; targets
alternate within a round so that a busy shared machine hits them alike. Pergamon runs as
`pergamon serve` with fsync on (the default).

Usage: .venv/bin/python benchmarks/ingest_profile.py [--n 1000] [--assocs 1,4] [--rounds 2]
       [--targets pergamon-sqlite,pergamon-postgresql,orthanc,storescp] [--small STUDIES]
`--stow BATCH` sends over STOW-RS instead: K client threads, BATCH instances per request (run.py's
client), each on its own keep-alive connection.
`--small` sends the query benchmark's tiny instances instead (STUDIES studies of 10, whole studies per
association): the per-object cost without the bytes. `--shuffle` sends each association's files in a
seeded random order, as the query loader's `storescu +sd` did while many studies shared a folder:
a study's instances then arrive far apart, so caches kept per study miss.
A target ending in `-nofast` runs Pergamon without `dimse.fastpath` (A/B of the pynetdicom patches),
one ending in `-inproc` without store worker processes;
`pergamon-sqlite-base` / `pergamon-postgresql-base` run the sources in $BENCH_BASE_SRC (e.g. a `git archive`
of the previous commit's src/) for a before/after comparison.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
POSTGRES_URL = os.environ.get("PERGAMON_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ENV = {**os.environ, "TCP_NODELAY": "1"}
NOFAST = (
    "import sys; from pergamon.dimse import fastpath; fastpath.install = lambda: None; "
    "from pergamon.cli import main; sys.exit(main())"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"receiver exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


def make_data(n: int) -> list[Path]:
    import samples

    folder = Path(tempfile.gettempdir()) / f"pergamon-ingest-bench-{n}"
    if not (folder / "done").exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        samples.ct_series(folder, n)
        (folder / "done").touch()
    return sorted(p for p in folder.iterdir() if p.name != "done")


class Receiver:
    """One receiver process started in a fresh folder; `stop()` ends it and removes everything."""

    def __init__(self, target: str, work: Path) -> None:
        self.target = target
        self.work = work
        self.port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.schema: str | None = None
        self.orthanc = None

    def start(self) -> None:
        log = open(self.work / "receiver.log", "wb")  # noqa: SIM115 (the receiver's stdout until it stops)
        if self.target == "storescp":
            (self.work / "out").mkdir()
            cmd = ["storescp", "+B", "-pdu", "131072", "-od", str(self.work / "out"), str(self.port)]
            self.proc = subprocess.Popen(cmd, env=ENV, stdout=log, stderr=subprocess.STDOUT)
        elif self.target == "orthanc":
            from interop.orthanc import OrthancServer

            self.orthanc = OrthancServer(
                "/usr/sbin/Orthanc",
                self.work / "orthanc",
                dicom_port=self.port,
                http_port=self.http_port,
                modalities={},
                dicomweb_servers={},  # loads the DICOMweb plugin (STOW-RS at /dicom-web/)
                verbose=False,  # as run.py starts it: its verbose log costs it ingest speed
            )
            self.orthanc.start()
            return
        else:
            env = {
                **ENV,
                "PERGAMON_DICOM_PORT": str(self.port),
                "PERGAMON_HTTP_PORT": str(self.http_port),
                "PERGAMON_HL7_PORT": str(free_port()),
                "PERGAMON_AUDIT_REPOSITORY_UDP_PORT": str(free_port()),
                "PERGAMON_AUDIT_REPOSITORY_TLS_PORT": str(free_port()),
                "PERGAMON_AUDIT_REPOSITORIES": f"udp://127.0.0.1:{free_port()}",
                "PERGAMON_SERVER_DATA_DIR": str(self.work / "data"),
                "PERGAMON_SERVER_LOG_LEVEL": "WARNING",
            }
            if self.target.endswith("-inproc"):  # A/B: no store worker processes
                env["PERGAMON_DICOM_STORE_WORKERS"] = "0"
            if self.target.startswith("pergamon-postgresql"):
                env["PERGAMON_DATABASE_URL"] = self._pg_schema()
            cmd = [str(ROOT / ".venv/bin/pergamon"), "serve"]
            if os.environ.get("BENCH_WRAPPER"):  # e.g. a script that profiles the handler, then runs the CLI
                cmd = [str(ROOT / ".venv/bin/python"), os.environ["BENCH_WRAPPER"], "serve"]
            if "-base" in self.target:  # A/B: the code of another tree, e.g. `git archive HEAD src | tar -x -C DIR`
                env["PYTHONPATH"] = os.environ["BENCH_BASE_SRC"]
            if self.target.endswith("-nofast"):  # A/B: pynetdicom's receive loop unpatched
                cmd = [str(ROOT / ".venv/bin/python"), "-c", NOFAST, "serve"]
            if os.environ.get("BENCH_PYSPY"):
                cmd = [
                    str(ROOT / ".venv/bin/py-spy"),
                    "record",
                    "--subprocesses",
                    "-f",
                    "raw",
                    *os.environ.get("BENCH_PYSPY_ARGS", "").split(),  # e.g. "--gil --rate 200"
                    "-o",
                    os.environ["BENCH_PYSPY"],
                    "--",
                    *cmd,
                ]
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc)

    def _pg_schema(self) -> str:
        from sqlalchemy import create_engine, text

        self.schema = f"b_{uuid.uuid4().hex[:12]}"
        admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{self.schema}"'))
        admin.dispose()
        separator = "&" if "?" in POSTGRES_URL else "?"
        return f"{POSTGRES_URL}{separator}options=-csearch_path%3D{self.schema}"

    def cpu_seconds(self, *, system_only: bool = False) -> float:
        """User + system CPU time the receiver process and its descendants (store workers) used so
        far; with `system_only`, the kernel's part alone (file writes, flushes, sockets)."""
        from peers import tree_cpu

        proc = self.orthanc.proc if self.orthanc is not None else self.proc
        assert proc is not None
        return tree_cpu(proc.pid, system_only=system_only)

    def main_cpu_seconds(self) -> float:
        """User + system CPU time of the receiver's main process alone (without its store workers)."""
        proc = self.orthanc.proc if self.orthanc is not None else self.proc
        assert proc is not None
        with open(f"/proc/{proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return sum(int(fields[i]) for i in (11, 12)) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.orthanc is not None:
            self.orthanc.stop()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT if os.environ.get("BENCH_PYSPY") else signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.schema:
            from sqlalchemy import create_engine, text

            admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA "{self.schema}" CASCADE'))
            admin.dispose()


def make_small(n_studies: int) -> list[list[Path]]:
    """The query benchmark's tiny instances, as the 8 folders (whole studies each) it loads them from."""
    import data

    folder = Path(tempfile.gettempdir()) / f"pergamon-ingest-bench-small-{n_studies}-by-study"
    data.small_studies(folder, n_studies)  # one folder per study under each part
    return [sorted(part.rglob("*.dcm")) for part in sorted(folder.glob("part-*"))]


def warm_up_files() -> list[Path]:
    """One tiny instance each receiver gets, untimed, before a run (Pergamon starts its workers then)."""
    import data

    folder = Path(tempfile.gettempdir()) / "pergamon-ingest-bench-warm-up-by-study"
    data.small_studies(folder, 1, per_study=1)
    return sorted(folder.rglob("*.dcm"))


def split(files: list[Path] | list[list[Path]], k: int) -> list[list[Path]]:
    """K lists to send side by side: slices alternate, folders of whole studies are dealt out whole."""
    if files and isinstance(files[0], list):
        folders: list[list[Path]] = files  # type: ignore[assignment]
        return [[f for folder in folders[i::k] for f in folder] for i in range(k)]
    return [files[i::k] for i in range(k)]  # type: ignore[misc]


def send(port: int, parts: list[list[Path]]) -> float:
    """Wall seconds for one storescu process (one association) per part to send all files."""
    start = time.monotonic()
    procs = [
        subprocess.Popen(
            ["storescu", "-R", "-aec", "PERGAMON", "127.0.0.1", str(port), *map(str, part)],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for part in parts
    ]
    errors = [p.communicate()[1] for p in procs]
    elapsed = time.monotonic() - start
    bad = [
        f"exit {p.returncode}: {e.decode(errors='replace')[-400:]}"
        for p, e in zip(procs, errors, strict=True)
        if p.returncode
    ]
    if bad:
        raise RuntimeError("storescu failed: " + " | ".join(bad))
    return elapsed


def send_stow(http_port: int, parts: list[list[Path]], batch: int) -> float:
    """Wall seconds for one STOW-RS client thread per part, BATCH instances per request, to send all files."""
    from run import send_stow_requests, stow_requests

    return send_stow_requests(http_port, "/dicom-web/studies", [stow_requests(part, batch) for part in parts])


def _children_cpu() -> float:
    """CPU seconds of this process's reaped children: the storescu senders (STOW-RS clients are threads)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--assocs", default="1,4")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--targets", default="pergamon-sqlite,orthanc,storescp")
    parser.add_argument("--small", type=int, default=0, metavar="STUDIES")
    parser.add_argument("--stow", type=int, default=0, metavar="BATCH")
    parser.add_argument("--shuffle", action="store_true", help="send in a seeded random order")
    args = parser.parse_args()
    files: list[Path] | list[list[Path]] = make_small(args.small) if args.small else make_data(args.n)
    count = sum(len(part) for part in split(files, 1))
    warm_up = warm_up_files()
    targets = args.targets.split(",")
    assocs = [int(a) for a in args.assocs.split(",")]
    rates: dict[tuple[str, int], list[float]] = {}
    cpus: dict[tuple[str, int], list[float]] = {}
    for rnd in range(args.rounds):
        for k in assocs:
            for target in targets:
                with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
                    receiver = Receiver(target, Path(tmp))
                    receiver.start()
                    try:
                        send(receiver.port, [warm_up])
                        cpu0 = receiver.cpu_seconds()
                        sys0 = receiver.cpu_seconds(system_only=True)
                        main0 = receiver.main_cpu_seconds()
                        client0 = _children_cpu()
                        parts = split(files, k)
                        if args.shuffle:
                            for part in parts:
                                random.Random(len(part)).shuffle(part)
                        if args.stow:
                            elapsed = send_stow(receiver.http_port, parts, args.stow)
                        else:
                            elapsed = send(receiver.port, parts)
                        cpu = receiver.cpu_seconds() - cpu0
                        sys_cpu = receiver.cpu_seconds(system_only=True) - sys0
                        main_cpu = receiver.main_cpu_seconds() - main0
                        client_cpu = _children_cpu() - client0
                    finally:
                        receiver.stop()
                rate = count / elapsed
                rates.setdefault((target, k), []).append(rate)
                cpus.setdefault((target, k), []).append(cpu * 1000 / count)
                print(
                    f"round {rnd + 1} {target:22s} {k} assoc: {rate:7.1f} inst/s, receiver CPU "
                    f"{cpu * 1000 / count:5.2f} ms/inst ({main_cpu * 1000 / count:5.2f} in the main process, "
                    f"{sys_cpu * 1000 / count:5.2f} in the kernel); senders {client_cpu * 1000 / count:5.2f} ms/inst",
                    flush=True,
                )
    print("\nmedians (inst/s):")
    for k in assocs:
        for target in targets:
            values = rates[(target, k)]
            cpu = statistics.median(cpus[(target, k)])
            rounded = [round(v) for v in values]
            print(f"  {target:22s} {k} assoc: {statistics.median(values):7.1f} {rounded}  {cpu:.2f} ms CPU/inst")


if __name__ == "__main__":
    main()
