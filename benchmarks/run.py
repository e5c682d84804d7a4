"""Pergamon vs Orthanc: one command that sets up both, feeds both the same data and writes RESULTS.md.

usage: python benchmarks/run.py [--quick] [--rounds N] [--scale-studies N] [--only ingest,query,viewer]

Sections (see README.md for what each number means):
- ingest: DIMSE (dcmtk storescu, 1 and 4 associations) and STOW-RS (1 and 4 clients) of CT slices,
  each into a freshly started peer that first received one tiny warm-up instance (the timed run is
  the steady state); dcmtk `storescp +B` as the physical reference; resident memory idle (after
  start, before the warm-up) and at peak under the 4-association ingest (the footprint).
- query: an index of --scale-studies small studies loaded into each peer with storescu; study-level
  C-FIND and QIDO-RS by PatientID, PatientName wildcard, StudyDate range and modality: p50/p95.
- viewer: WADO-RS metadata of one series, WADO-RS retrieve of the whole study, rendered frames.

Peers alternate within every round (the order rotates each round) so that drift in the machine's
load hits all of them alike; every number is also given as a ratio against Orthanc of the same run.
Each section checks that the answers agree (instance counts, match counts) before it reports.
"""

from __future__ import annotations

import argparse
import calendar
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import data  # noqa: E402
import peers  # noqa: E402
import report  # noqa: E402

PEER_NAMES = ("orthanc", "pergamon-sqlite", "pergamon-postgresql")
SETTLED = 15.0
"""Seconds the viewer section waits after loading before asking again: past Pergamon's default
`http.metadata_prepare_delay` (10 s) plus its one quiet second, so a settled series can be rendered."""
PROTOCOLS = ("C-FIND", "C-FIND/findscu", "QIDO-RS")
"""How each study-level query is asked of every peer, in this order."""


class BenchError(RuntimeError):
    """A peer gave a wrong answer or failed: the run stops rather than report a fast wrong number."""


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cache = Path(args.cache)
        self.work = Path(args.workdir)
        self.peer_names = [name for name in PEER_NAMES if name in args.peers.split(",")]
        self.versions: dict[str, str] = {}
        self.source = peers.PergamonSource(args.pergamon_rev, self.cache)

    # -- peers -----------------------------------------------------------------------------------

    def make_peer(self, name: str, folder: Path, pg_database: str = "pergamon_bench") -> peers.Peer:
        if name == "orthanc":
            return peers.OrthancPeer(folder)
        if name == "storescp+B":
            return peers.StorescpPeer(folder)
        return peers.PergamonPeer(folder, name.removeprefix("pergamon-"), pg_database, self.source)

    @contextmanager
    def running(self, name: str, folder: Path, *, fresh: bool = True, pg_database: str = "pergamon_bench",
                ) -> Iterator[peers.Peer]:
        peer = self.make_peer(name, folder, pg_database)
        peer.start(fresh=fresh)
        try:
            if name not in self.versions:
                self.versions[name] = peer.version()
            yield peer
        finally:
            peer.stop()

    def rotated(self, names: list[str], round_index: int) -> list[str]:
        k = round_index % len(names)
        return names[k:] + names[:k]

    # -- ingest ----------------------------------------------------------------------------------

    def ingest(self) -> dict[str, Any]:
        n = 200 if self.args.quick else self.args.ct_instances
        ct = data.ct_study(self.cache / f"ct-{n}", n)
        log(f"ingest: {n} CT slices, {ct.bytes / 1e6:.0f} MB")
        files = data.parts(Path(ct.folder), 1)[0]
        modes: list[tuple[str, int]] = [("dimse", 1), ("dimse", 4), ("stow", 1), ("stow", 4)]
        stow_bodies = {c: self.stow_bodies(files, c) for c in (1, 4)}
        warm_up = self.warm_up_files()
        values: dict[str, dict[str, list[float]]] = {}
        names = ["storescp+B", *self.peer_names]
        for r in range(self.args.rounds):
            for mode, concurrency in modes:
                key = f"{mode}-{concurrency}"
                for name in self.rotated(names, r):
                    if mode == "stow" and name == "storescp+B":
                        continue
                    folder = self.work / "ingest" / name
                    with self.running(name, folder) as peer:
                        if key == "dimse-1":
                            time.sleep(3)
                            values.setdefault("rss-idle", {}).setdefault(name, []).append(peer.rss() / 2**20)
                        self.send_dimse(peer, [warm_up])  # steady state: Pergamon's store workers now run
                        cpu = peer.cpu()
                        with rss_peak(peer) as peak:
                            if mode == "dimse":
                                rate = self.send_dimse(peer, data.parts(Path(ct.folder), concurrency))
                            else:
                                rate = self.send_stow(peer, stow_bodies[concurrency])
                        cpu_ms = (peer.cpu() - cpu) * 1000 / n
                        self.expect_count(peer, n + len(warm_up))
                        values.setdefault(f"{key}-cpu", {}).setdefault(name, []).append(cpu_ms)
                        if key == "dimse-4":
                            values.setdefault("rss-ingest", {}).setdefault(name, []).append(peak[0] / 2**20)
                    values.setdefault(key, {}).setdefault(name, []).append(rate)
                    log(f"  round {r + 1} {key:8} {name:20} {rate:7.1f} inst/s, {cpu_ms:5.1f} CPU ms/inst")
            shutil.rmtree(self.work / "ingest", ignore_errors=True)
        return {"instances": n, "megabytes": ct.bytes / 1e6, "stow_batch": self.args.stow_batch, "values": values}

    def warm_up_files(self) -> list[Path]:
        """One tiny instance (another study) each peer receives before a timed ingest.

        Pergamon starts its store workers on the first store after idling (~1 s, once), so the
        timed runs measure the steady state; Orthanc and storescp get the same instance.
        """
        data.small_studies(self.cache / "warm-up", 1, per_study=1)
        return sorted((self.cache / "warm-up").rglob("*.dcm"))

    def send_dimse(self, peer: peers.Peer, parts: list[list[Path]]) -> float:
        """dcmtk storescu, one process (one association) per part, all started together: instances/s."""
        t0 = time.perf_counter()
        procs = [
            subprocess.Popen(
                ["storescu", "-aec", peer.aet, "127.0.0.1", str(peer.dicom_port), *map(str, files)],
                env=peers.NODELAY_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
            for files in parts
        ]
        for proc in procs:
            _, err = proc.communicate()
            if proc.returncode:
                raise BenchError(f"storescu -> {peer.name} exited {proc.returncode}: {err.decode()[-2000:]}")
        return sum(map(len, parts)) / (time.perf_counter() - t0)

    def stow_bodies(self, files: list[Path], clients: int) -> list[list[tuple[str, bytes]]]:
        """Per client, its STOW-RS requests of --stow-batch files each."""
        return [stow_requests(part, self.args.stow_batch) for part in data.parts_of(files, clients)]

    def send_stow(self, peer: peers.Peer, bodies: list[list[tuple[str, bytes]]]) -> float:
        """One thread per client, each on one keep-alive connection: instances/s."""
        try:
            elapsed = send_stow_requests(peer.http_port, peers.path_of(peer.dicomweb_url) + "/studies", bodies)
        except BenchError as exc:
            raise BenchError(f"STOW-RS -> {peer.name}: {exc}") from exc
        return sum(body.count(STOW_PART) for req in bodies for _, body in req) / elapsed

    def expect_count(self, peer: peers.Peer, n: int) -> None:
        count = peer.instance_count()
        if count != n:
            raise BenchError(f"{peer.name} holds {count} instances, {n} were sent")

    # -- query at scale ---------------------------------------------------------------------------

    def query(self) -> dict[str, Any]:
        n_studies = 300 if self.args.quick else self.args.scale_studies
        per_study = self.args.per_study
        t0 = time.perf_counter()
        scale = f"{n_studies}x{per_study}-by-study"  # -by-study: one folder per study (data.small_studies)
        rows = data.small_studies(self.cache / f"small-{scale}", n_studies, per_study=per_study)
        log(f"query: {n_studies} studies x {per_study} instances ready ({time.perf_counter() - t0:.0f} s)")
        folder = Path(self.cache / f"small-{scale}")
        part_dirs = sorted(folder.glob("part-*"))
        loaded: dict[str, Any] = {}
        stack: list[Any] = []
        running: dict[str, peers.Peer] = {}
        try:
            for name in self.peer_names:
                peer_folder = self.cache / f"loaded-{scale}" / name
                marker = peer_folder / "loaded.json"
                fresh = not marker.exists()
                ctx = self.running(name, peer_folder, fresh=fresh, pg_database=f"pergamon_bench_q{n_studies}")
                peer = ctx.__enter__()
                stack.append(ctx)
                running[name] = peer
                if fresh:
                    log(f"  loading {name} with storescu, 4 associations ...")
                    groups = [part_dirs[i::4] for i in range(4)]
                    rate = self.load_dirs(peer, groups, n_studies * per_study)
                    marker.write_text(json.dumps({"rate": rate}))
                rate = json.loads(marker.read_text())["rate"]
                self.expect_count(peer, n_studies * per_study)
                loaded[name] = {"rate": rate}
                log(f"  {name}: {n_studies * per_study} instances, loaded at {rate:.0f} inst/s")
            outcome = self.run_queries(rows, running)
            for name, peer in running.items():
                loaded[name]["rss_after_queries"] = peer.rss() / 2**20
            return outcome | {"studies": n_studies, "per_study": per_study, "load": loaded}
        finally:
            for ctx in reversed(stack):
                ctx.__exit__(None, None, None)

    def load_dirs(self, peer: peers.Peer, groups: list[list[Path]], n: int) -> float:
        t0 = time.perf_counter()
        procs = [
            subprocess.Popen(
                ["storescu", "-aec", peer.aet, "+sd", "+r", "127.0.0.1", str(peer.dicom_port), *map(str, dirs)],
                env=peers.NODELAY_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
            for dirs in groups
        ]
        for proc in procs:
            _, err = proc.communicate()
            if proc.returncode:
                raise BenchError(f"storescu -> {peer.name} exited {proc.returncode}: {err.decode()[-2000:]}")
        return n / (time.perf_counter() - t0)

    def query_cases(self, rows: list[data.StudyRow]) -> dict[str, list[tuple[dict[str, str], int]]]:
        """Per kind, the queries to cycle through with their expected number of matching studies."""
        reps = self.args.query_reps
        step = max(1, len(rows) // reps)
        patient_ids = [rows[i * step].patient_id for i in range(reps)]
        prefixes = sorted({rows[i * step].patient_name[:4] for i in range(reps)})
        months = sorted({rows[i * step].study_date[:6] for i in range(reps)})
        modalities = ["NM", "XA", "PT"]
        return {
            "PatientID": [({"PatientID": p}, sum(r.patient_id == p for r in rows)) for p in patient_ids],
            "PatientName wildcard": [
                ({"PatientName": f"{p}*"}, sum(r.patient_name.startswith(p) for r in rows)) for p in prefixes
            ],
            "StudyDate range (1 month)": [
                ({"StudyDate": f"{m}01-{m}{calendar.monthrange(int(m[:4]), int(m[4:]))[1]}"},
                 sum(r.study_date[:6] == m for r in rows))
                for m in months
            ],
            "Modality": [({"ModalitiesInStudy": m}, sum(r.modality == m for r in rows)) for m in modalities],
        }

    def run_queries(self, rows: list[data.StudyRow], running: dict[str, peers.Peer]) -> dict[str, Any]:
        cases = self.query_cases(rows)
        samples: dict[str, dict[str, list[float]]] = {}
        matches: dict[str, list[int]] = {}
        finders = {name: CFind(peer) for name, peer in running.items()}
        qidos = {name: http_connection(peer) for name, peer in running.items()}

        def ask(name: str, protocol: str, keys: dict[str, str], expected: int) -> float:
            """One query's seconds, its answer checked against the number of studies that must match."""
            if protocol == "C-FIND":
                seconds, found = finders[name].find(keys)
            elif protocol == "C-FIND/findscu":
                seconds, found = findscu(running[name], keys)
            else:
                seconds, found = qido(qidos[name], running[name], keys)
            if found != expected:
                raise BenchError(f"{protocol} {keys} on {name}: {found} studies, not {expected}")
            return seconds

        try:
            # Untimed: the first query of each kind finds a peer's index cold (one took 43 s where
            # the same query then took 0.5 s), and one such sample out of 15 decides a p95.
            for queries in cases.values():
                keys, expected = queries[-1]
                for name in running:
                    for protocol in PROTOCOLS:
                        ask(name, protocol, keys, expected)
            log("  warm-up queries done")
            for r in range(self.args.rounds):
                for kind, queries in cases.items():
                    for i in range(self.args.query_reps):
                        keys, expected = queries[i % len(queries)]
                        for name in self.rotated(list(running), r + i):
                            for protocol in PROTOCOLS:
                                seconds = ask(name, protocol, keys, expected)
                                samples.setdefault(f"{protocol} {kind}", {}).setdefault(name, []).append(seconds * 1000)
                        matches.setdefault(kind, []).append(expected)
                log(f"  round {r + 1} queries done")
        finally:
            for finder in finders.values():
                finder.close()
        medians = {k: statistics.median(v) for k, v in matches.items()}
        return {"samples": samples, "matches": medians, "warm_up": True}

    # -- viewer ----------------------------------------------------------------------------------

    def viewer(self) -> dict[str, Any]:
        n = 200 if self.args.quick else self.args.ct_instances
        ct = data.ct_study(self.cache / f"ct-{n}", n)
        per_series = -(-n // len(ct.series_uids))
        log(f"viewer: study of {n} CT slices, series of {per_series}")
        samples: dict[str, dict[str, list[float]]] = {}
        stack, running = [], {}
        try:
            for name in self.peer_names:
                ctx = self.running(name, self.work / "viewer" / name)
                peer = ctx.__enter__()
                stack.append(ctx)
                running[name] = peer
                self.send_dimse(peer, data.parts(Path(ct.folder), 1))
                self.expect_count(peer, n)
                # A viewer opening the study as it arrives: the series stored last, asked at once.
                last = f"/studies/{ct.study_uid}/series/{ct.series_uids[-1]}"
                conn = http_connection(peer)
                try:
                    seconds = self.series_metadata(conn, peer, last, per_series)
                finally:
                    conn.close()
                samples.setdefault("metadata-arrived", {}).setdefault(name, []).append(seconds * 1000)
            time.sleep(SETTLED)  # every peer's series have now been quiet at least this long
            conns = {name: http_connection(peer) for name, peer in running.items()}
            series = f"/studies/{ct.study_uid}/series/{ct.series_uids[0]}"
            for r in range(self.args.rounds):
                for name in self.rotated(list(running), r):
                    peer, conn = running[name], conns[name]
                    base = peers.path_of(peer.dicomweb_url)
                    for k in range(3):
                        seconds = self.series_metadata(conn, peer, series, per_series)
                        kind = "metadata-settled" if r == 0 and k == 0 else "metadata"  # first ask vs. again
                        samples.setdefault(kind, {}).setdefault(name, []).append(seconds * 1000)
                    seconds, body = timed_get(conn, f"{base}/studies/{ct.study_uid}",
                                              'multipart/related; type="application/dicom"')
                    if len(body) < ct.bytes * 0.98:
                        raise BenchError(f"{name} study retrieve: {len(body)} bytes for {ct.bytes} stored")
                    samples.setdefault("retrieve", {}).setdefault(name, []).append(len(body) / 1e6 / seconds)
                    for i in range(10):
                        index = (r * 10 + i) * 7 % per_series
                        sop = data.uid("ct-instance", 0, n, index)
                        seconds, body = timed_get(conn, f"{base}{series}/instances/{sop}/rendered", "image/jpeg")
                        if body[:2] != b"\xff\xd8":
                            raise BenchError(f"{name} rendered: not a JPEG: {body[:200]!r}")
                        samples.setdefault("rendered", {}).setdefault(name, []).append(seconds * 1000)
                log(f"  round {r + 1} viewer done")
        finally:
            for ctx in reversed(stack):
                ctx.__exit__(None, None, None)
            shutil.rmtree(self.work / "viewer", ignore_errors=True)
        return {"instances": n, "per_series": per_series, "megabytes": ct.bytes / 1e6, "samples": samples,
                "settled_seconds": SETTLED}

    @staticmethod
    def series_metadata(conn: http.client.HTTPConnection, peer: peers.Peer, series: str, expected: int) -> float:
        """Seconds for one WADO-RS series metadata request; the answer must list every instance."""
        seconds, body = timed_get(conn, peers.path_of(peer.dicomweb_url) + series + "/metadata",
                                  "application/dicom+json")
        if len(json.loads(body)) != expected:
            raise BenchError(f"{peer.name} series metadata: {len(json.loads(body))} != {expected}")
        return seconds


# -- clients -----------------------------------------------------------------------------------------


class CFind:
    """A pynetdicom C-FIND SCU on one open association: the time of each study-level query."""

    def __init__(self, peer: peers.Peer) -> None:
        from pynetdicom import AE
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

        self.model = StudyRootQueryRetrieveInformationModelFind
        ae = AE(ae_title="BENCHSCU")
        ae.add_requested_context(self.model)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 300
        self.assoc = ae.associate("127.0.0.1", peer.dicom_port, ae_title=peer.aet)
        if not self.assoc.is_established:
            raise BenchError(f"C-FIND association to {peer.name} refused")
        # pynetdicom leaves Nagle on: command and dataset PDUs would wait ~40 ms for a delayed ACK
        self.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def find(self, keys: dict[str, str]) -> tuple[float, int]:
        from pydicom.dataset import Dataset

        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        for keyword in FIND_RETURN_KEYS:
            setattr(ds, keyword, keys.get(keyword, ""))
        found = 0
        t0 = time.perf_counter()
        for status, _identifier in self.assoc.send_c_find(ds, self.model):
            if status is None or status.Status not in (0xFF00, 0xFF01, 0x0000):
                raise BenchError(f"C-FIND {keys}: status {status}")
            found += status.Status in (0xFF00, 0xFF01)
        return time.perf_counter() - t0, found

    def close(self) -> None:
        self.assoc.release()


STOW_PART = b"Content-Type: application/dicom\r\n"


def stow_requests(files: list[Path], batch: int) -> list[tuple[str, bytes]]:
    """STOW-RS requests of `batch` files each: (boundary, multipart/related body), built before timing."""
    requests = []
    for i in range(0, len(files), batch):
        boundary = uuid.uuid4().hex
        chunks = []
        for path in files[i : i + batch]:
            chunks += [f"--{boundary}\r\n".encode() + STOW_PART + b"\r\n", path.read_bytes(), b"\r\n"]
        chunks.append(f"--{boundary}--\r\n".encode())
        requests.append((boundary, b"".join(chunks)))
    return requests


def send_stow_requests(http_port: int, path: str, per_client: list[list[tuple[str, bytes]]]) -> float:
    """POST each client's requests on its own thread and keep-alive connection; wall seconds for all.

    Every response is checked (HTTP 200, nothing failed, every part stored); raises BenchError.
    """
    errors: list[str] = []

    def client(requests: list[tuple[str, bytes]]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=600)
        for boundary, body in requests:
            content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
            conn.request("POST", path, body, {"Content-Type": content_type, "Accept": "application/dicom+json"})
            resp = conn.getresponse()
            answer = resp.read()
            if resp.status != 200 or stow_failures(answer, body.count(STOW_PART)):
                errors.append(f"HTTP {resp.status}: {answer[:500]!r}")
                return
        conn.close()

    threads = [threading.Thread(target=client, args=(requests,)) for requests in per_client]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise BenchError(errors[0])
    return elapsed


def stow_failures(answer: bytes, sent: int) -> bool:
    """True when a STOW-RS response lists a failed instance or fewer stored ones than were sent."""
    try:
        doc = json.loads(answer)
    except ValueError:
        return True
    failed = doc.get("00081198", {}).get("Value", [])
    stored = doc.get("00081199", {}).get("Value", [])
    return bool(failed) or len(stored) != sent


def http_connection(peer: peers.Peer) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", peer.http_port, timeout=600)


def timed_get(conn: http.client.HTTPConnection, path: str, accept: str) -> tuple[float, bytes]:
    """GET on a keep-alive connection; the seconds until the whole body has arrived, and the body."""
    for attempt in (1, 2):
        t0 = time.perf_counter()
        try:
            conn.request("GET", path, headers={"Accept": accept})
            resp = conn.getresponse()
            body = resp.read()
            break
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            # the server closed an idle keep-alive connection (uvicorn after 5 s): reconnect, time again
            conn.close()
            if attempt == 2:
                raise
    seconds = time.perf_counter() - t0
    if resp.status != 200:
        raise BenchError(f"GET {path}: HTTP {resp.status} {body[:300]!r}")
    return seconds, body


FIND_RETURN_KEYS = ("PatientName", "PatientID", "StudyDate", "StudyTime", "AccessionNumber", "StudyDescription",
                    "ModalitiesInStudy", "StudyInstanceUID", "NumberOfStudyRelatedInstances")
"""The keys of every study-level query: matched when given a value, else returned."""


def findscu(peer: peers.Peer, keys: dict[str, str]) -> tuple[float, int]:
    """dcmtk findscu, one process and association per query: its start-up is part of every figure."""
    args = ["findscu", "-S", "-aec", peer.aet, "-k", "QueryRetrieveLevel=STUDY"]  # prints each response
    for keyword in FIND_RETURN_KEYS:
        args += ["-k", f"{keyword}={keys[keyword]}" if keyword in keys else keyword]
    t0 = time.perf_counter()
    done = subprocess.run([*args, "127.0.0.1", str(peer.dicom_port)], capture_output=True, env=peers.NODELAY_ENV)
    seconds = time.perf_counter() - t0
    output = (done.stdout + done.stderr).decode(errors="replace")
    if done.returncode:  # association or network failure; a failure status shows as a wrong count (caller checks)
        raise BenchError(f"findscu {keys} -> {peer.name}: exit {done.returncode}: {output[-2000:]}")
    return seconds, len(re.findall(r"Find Response: \d+ \(Pending\)", output))


def qido(conn: http.client.HTTPConnection, peer: peers.Peer, keys: dict[str, str]) -> tuple[float, int]:
    from urllib.parse import urlencode

    seconds, body = timed_get(conn, f"{peers.path_of(peer.dicomweb_url)}/studies?{urlencode(keys, safe='*^-')}",
                              "application/dicom+json")
    return seconds, len(json.loads(body)) if body.strip() else 0


@contextmanager
def rss_peak(peer: peers.Peer, interval: float = 0.1) -> Iterator[list[int]]:
    """Sample the peer's resident memory while the block runs; yields [peak bytes]."""
    peak = [peer.rss()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(interval):
            peak[0] = max(peak[0], peer.rss())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        done.set()
        thread.join()


# -- machine and main ----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    import pydicom
    import pynetdicom

    dcmtk = subprocess.run(["storescu", "--version"], capture_output=True, text=True).stdout.splitlines()
    return {
        "cpus": os.cpu_count(), "cpu": cpu, "ram_gib": round(mem / 2**20, 1), "kernel": platform.release(),
        "python": platform.python_version(), "pydicom": pydicom.__version__, "pynetdicom": pynetdicom.__version__,
        "dcmtk": dcmtk[0].strip("$ ") if dcmtk else "?",
    }


def log(message: str) -> None:
    print(f"{datetime.now(UTC):%H:%M:%S} {message}", flush=True)


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def section_key(name: str, peer_names: list[str]) -> str:
    """Where a section's results go in results.json: a query run without the SQLite peer is kept beside
    the one with it (the 10^6 index takes too long to load into all three peers in one run)."""
    if name == "query" and "pergamon-sqlite" not in peer_names and "pergamon-postgresql" in peer_names:
        return "query-postgresql"
    return name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, 1 round: to check the harness")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 3, --quick 1)")
    parser.add_argument("--only", default="ingest,query,viewer", help="comma-separated sections to run")
    parser.add_argument("--peers", default=",".join(PEER_NAMES), help="comma-separated peers")
    parser.add_argument("--scale-studies", type=int, default=100_000, help="studies in the query index")
    parser.add_argument("--per-study", type=int, default=10, help="instances per study in the query index")
    parser.add_argument("--ct-instances", type=int, default=1000, help="CT slices for ingest and viewer")
    parser.add_argument("--stow-batch", type=int, default=10, help="instances per STOW-RS request")
    parser.add_argument("--query-reps", type=int, default=20, help="queries of each kind per peer per round")
    parser.add_argument("--pergamon-rev", default=None,
                        help="run this git revision of Pergamon (exported) instead of the working tree")
    parser.add_argument("--cache", default=str(HERE / ".cache"), help="generated data and loaded query peers")
    parser.add_argument("--workdir", default=None, help="scratch folder of the peers (default: under --cache)")
    parser.add_argument("--results", default=str(HERE / "results.json"), help="raw results (merged per section)")
    args = parser.parse_args(argv)
    # SIGTERM (and SIGINT, which background shells ignore) unwinds normally, so every peer gets stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.workdir = args.workdir or str(Path(args.cache) / "work")
    bench = Bench(args)
    sections: dict[str, Callable[[], dict[str, Any]]] = {
        "ingest": bench.ingest, "query": bench.query, "viewer": bench.viewer,
    }
    results_path = Path(args.results)
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    command = "python benchmarks/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
    for name in args.only.split(","):
        load_before = loadavg()
        started = datetime.now(UTC)
        outcome = sections[name]()
        results[section_key(name, bench.peer_names)] = outcome | {
            "date": started.strftime("%Y-%m-%d %H:%M UTC"),
            "minutes": round((datetime.now(UTC) - started).total_seconds() / 60, 1),
            "command": command, "rounds": args.rounds, "quick": args.quick,
            "loadavg": [load_before, loadavg()], "machine": machine(), "versions": bench.versions,
        }
        results_path.write_text(json.dumps(results, indent=1))
        (HERE / "RESULTS.md").write_text(report.markdown(results))
        log(f"{name} done; RESULTS.md written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
