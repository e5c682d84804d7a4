"""C-FIND answering A/B: wall time, findscu's CPU and the server's CPU for one large study-level answer.

Not a benchmark of record; a quick tool for the C-FIND door. N studies of one tiny CT instance
each are stored once into a Pergamon SQLite peer (kept in `--cache`); each source under test then
serves a copy of that index, and dcmtk findscu asks every one of them, in alternation, for all
studies by Modality with `run.py`'s return keys; so does a pynetdicom SCU on an open association
in this process, as `run.py` does. Printed per source and client, medians over `--rounds`: the
query's wall time, the client's own CPU time (findscu's from the kernel; this process's for
pynetdicom) and the server's (all its processes' user + system from /proc, before and after the
query). A large answer is bounded by the client's CPU as much as by the server's: both share the
2 cores of the test machine.

    .venv/bin/python benchmarks/find_answer.py [--studies 3000] [--rounds 8] [--ab REV]

`--ab REV` adds the git revision REV (exported as `run.py --pergamon-rev` does) beside the
working tree.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, Association
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers
from run import FIND_RETURN_KEYS


def write_studies(folder: Path, count: int) -> None:
    """`count` studies of one small CT instance each, all Modality CT."""
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        ds = Dataset()
        ds.PatientName = f"DOE^JOHN{number % 500}"
        ds.PatientID = f"P{number % 1000}"
        ds.StudyDate, ds.StudyTime = "20200101", "101010"
        ds.AccessionNumber, ds.StudyDescription, ds.Modality = f"A{number}", "CT ABDOMEN", "CT"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
        ds.SOPClassUID, ds.SeriesNumber, ds.InstanceNumber = CTImageStorage, 1, 1
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(folder / f"{number}.dcm", enforce_file_format=True)


def loaded_index(cache: Path, count: int) -> Path:
    """The peer folder of an index holding `count` studies, stored with storescu the first time."""
    folder = cache / f"find-{count}"
    if (folder / "loaded").exists():
        return folder / "peer"
    write_studies(folder / "data", count)
    peer = peers.PergamonPeer(folder / "peer", "sqlite")
    peer.start(fresh=True)
    try:
        subprocess.run(["storescu", "-aec", peer.aet, "+sd", "-nh", "127.0.0.1", str(peer.dicom_port),
                        str(folder / "data")], check=True, env=peers.NODELAY_ENV)
        if peer.instance_count() != count:
            raise SystemExit(f"stored {peer.instance_count()} of {count} instances")
    finally:
        peer.stop()
    (folder / "loaded").touch()
    return folder / "peer"


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of `pid` and its children still running (/proc/PID/stat)."""
    total = 0.0
    for candidate in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{candidate}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        for child in map(int, children):
            found += [child, *_children(child)]
    return found


def ask(peer: peers.PergamonPeer, expected: int) -> tuple[float, float, float]:
    """(wall, findscu CPU, server CPU) seconds of one findscu query for all CT studies."""
    args = ["findscu", "-S", "-aec", peer.aet, "-k", "QueryRetrieveLevel=STUDY", "-k", "ModalitiesInStudy=CT"]
    args += [item for key in FIND_RETURN_KEYS if key != "ModalitiesInStudy" for item in ("-k", key)]
    assert peer.proc is not None
    server_before = process_cpu(peer.proc.pid)
    client_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([*args, "127.0.0.1", str(peer.dicom_port)], capture_output=True, text=True,
                          env=peers.NODELAY_ENV)
    wall = time.perf_counter() - start
    client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server = process_cpu(peer.proc.pid) - server_before
    found = (done.stdout + done.stderr).count("Find Response:")  # one per pending response
    if done.returncode or found != expected:
        raise SystemExit(f"findscu -> {peer.name}: exit {done.returncode}, {found} of {expected} studies")
    client = (client_after.ru_utime + client_after.ru_stime) - (client_before.ru_utime + client_before.ru_stime)
    return wall, client, server


def ask_pynetdicom(peer: peers.PergamonPeer, assoc: Association, expected: int) -> tuple[float, float, float]:
    """(wall, this process's CPU, server CPU) seconds of one pynetdicom C-FIND for all CT studies."""
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    for key in FIND_RETURN_KEYS:
        setattr(identifier, key, "")
    identifier.ModalitiesInStudy = "CT"
    assert peer.proc is not None
    server_before = process_cpu(peer.proc.pid)
    client_before = time.process_time()
    start = time.perf_counter()
    found = 0
    for status, _identifier in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind):
        found += bool(status) and status.Status == 0xFF00
    wall = time.perf_counter() - start
    client = time.process_time() - client_before
    server = process_cpu(peer.proc.pid) - server_before
    if found != expected:
        raise SystemExit(f"pynetdicom -> {peer.name}: {found} of {expected} studies")
    return wall, client, server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--ab", metavar="REV", help="also run this git revision")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/pergamon-find-answer"))
    options = parser.parse_args()
    index = loaded_index(options.cache, options.studies)
    sources = {"working tree": None} | ({options.ab: options.ab} if options.ab else {})
    running: dict[str, peers.PergamonPeer] = {}
    try:
        for name, rev in sources.items():
            folder = options.cache / "run" / (rev or "tree")
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(index, folder)
            source = peers.PergamonSource(rev=rev, cache=options.cache) if rev else None
            running[name] = peer = peers.PergamonPeer(folder, "sqlite", source=source)
            peer.start(fresh=False)
        associations = {name: _associate(peer) for name, peer in running.items()}
        figures: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        for round_number in range(options.rounds):
            order = list(running) if round_number % 2 == 0 else list(reversed(running))
            for name in order:
                figures.setdefault((name, "findscu"), []).append(ask(running[name], options.studies))
                answer = ask_pynetdicom(running[name], associations[name], options.studies)
                figures.setdefault((name, "pynetdicom"), []).append(answer)
        for assoc in associations.values():
            assoc.release()
    finally:
        for peer in running.values():
            peer.stop()
    print(f"{options.studies} studies by Modality, medians of {options.rounds} (ms):")
    for (name, client_name), rows in figures.items():
        wall, client, server = (statistics.median(column) * 1000 for column in zip(*rows, strict=True))
        print(f"  {name:14} {client_name:10}  wall {wall:6.0f}   client CPU {client:6.0f}   server CPU {server:6.0f}")


def _associate(peer: peers.PergamonPeer) -> Association:
    ae = AE(ae_title="FINDANSWER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", peer.dicom_port, ae_title=peer.aet)
    if not assoc.is_established:
        raise SystemExit(f"{peer.name} refused the association")
    return assoc


if __name__ == "__main__":
    main()
