"""The archives under test as child processes: Orthanc, Pergamon (SQLite or PostgreSQL), dcmtk storescp.

Each peer gets its own folder and free ports, is started and stopped by its PID, and can say
how many instances it holds and how much resident memory it (with its children) uses.
`TCP_NODELAY=1` is set for every dcmtk-based process (Orthanc, storescp): Debian's dcmtk leaves
Nagle on otherwise, which stalls each DIMSE message ~40 ms.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc")
POSTGRES_ADMIN = ["-h", "127.0.0.1", "-p", "5432", "-U", "postgres"]
NODELAY_ENV = {**os.environ, "TCP_NODELAY": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_json(url: str, timeout: float = 30) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def path_of(url: str) -> str:
    """The path part of an http URL ("http://h:1/dicom-web" -> "/dicom-web")."""
    return "/" + url.split("://", 1)[1].split("/", 1)[1] if url.count("/") > 2 else ""


def tree_pids(pid: int) -> list[int]:
    """`pid` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def tree_cpu(pid: int, *, system_only: bool = False) -> float:
    """CPU seconds (user + system, with reaped children's) of `pid` and its live descendants;
    with `system_only`, only the time spent in the kernel on their behalf."""
    total = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(fields[i]) for i in ((12, 14) if system_only else (11, 12, 13, 14)))
    return total / os.sysconf("SC_CLK_TCK")


def tree_rss(pid: int) -> int:
    """Resident memory (VmRSS) of `pid` and all its descendants, in bytes."""
    total = 0
    for p in tree_pids(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class Peer:
    """One archive process. Subclasses say how to configure, start and count it."""

    name = "peer"
    aet = "ANY"
    dicomweb = True

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir.resolve()
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{self.name}.log"

    @property
    def dicomweb_url(self) -> str:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return NODELAY_ENV

    def prepare(self, fresh: bool) -> None:
        """Create (or, when `fresh`, empty) the peer's folder before start."""
        if fresh and self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)

    def ready(self) -> bool:
        return listening(self.dicom_port)

    def start(self, *, fresh: bool = True, timeout: float = 120) -> None:
        self.prepare(fresh)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env(), cwd=self.workdir,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.ready():
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"{self.name} did not start:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self, timeout: float = 60) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def rss(self) -> int:
        return tree_rss(self.proc.pid) if self.proc else 0

    def cpu(self) -> float:
        return tree_cpu(self.proc.pid) if self.proc else 0.0

    def instance_count(self) -> int:
        raise NotImplementedError

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def version(self) -> str:
        return ""


def dicomweb_plugin() -> str:
    for folder in map(Path, DICOMWEB_PLUGIN_DIRS):
        for candidate in sorted(folder.glob("libOrthancDicomWeb.so*")) if folder.is_dir() else []:
            if candidate.is_file():
                return str(candidate)
    raise FileNotFoundError("no Orthanc DICOMweb plugin (apt-get install orthanc-dicomweb)")


class OrthancPeer(Peer):
    """Debian's Orthanc with its default settings (SQLite index) plus the DICOMweb plugin.

    Only what a private instance needs is set: folders, ports, no authentication on localhost,
    and C-FIND allowed from unknown AEs (Orthanc refuses it by default).
    """

    name = "orthanc"
    aet = "ORTHANC"

    @property
    def dicomweb_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    def config(self) -> dict[str, Any]:
        return {
            "Name": "bench",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAlwaysAllowFind": True,
            "Plugins": [dicomweb_plugin()],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }

    def command(self) -> list[str]:
        path = self.workdir / "orthanc.json"
        path.write_text(json.dumps(self.config(), indent=2))
        return [ORTHANC, str(path)]

    def ready(self) -> bool:
        return bool(http_json(f"http://127.0.0.1:{self.http_port}/system", 2)) and listening(self.dicom_port)

    def instance_count(self) -> int:
        return int(http_json(f"http://127.0.0.1:{self.http_port}/statistics")["CountInstances"])

    def version(self) -> str:
        system = http_json(f"http://127.0.0.1:{self.http_port}/system")
        plugin = http_json(f"http://127.0.0.1:{self.http_port}/plugins/dicom-web")
        return f"Orthanc {system['Version']} (DICOMweb plugin {plugin['Version']}, SQLite index)"


class PergamonPeer(Peer):
    """`pergamon serve --config` with a generated TOML: defaults except folders and ports.

    `database` "sqlite" is the embedded default; "postgresql" uses its own database on the local
    server (dropped and created again for a fresh start). Every listening port the
    configuration knows is given a free port, so concurrent test runs do not collide.
    """

    aet = "PERGAMON"

    def __init__(self, workdir: Path, database: str, pg_database: str = "pergamon_bench",
                 source: PergamonSource | None = None) -> None:
        self.database = database
        self.name = f"pergamon-{database}"
        self.pg_database = pg_database
        self.source = source or PergamonSource()
        super().__init__(workdir)

    @property
    def dicomweb_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    def toml(self) -> str:
        sections: dict[str, list[str]] = {"server": [f'data_dir = "{self.workdir / "data"}"']}
        for section, key in self.source.port_keys():
            if section in ("dicom", "http") and key == "port":
                continue
            port = free_port()
            sections.setdefault(section, []).append(f"{key} = {port}")
            if (section, key) == ("audit_repository", "udp_port"):
                sections.setdefault("audit", []).append(f'repositories = "udp://127.0.0.1:{port}"')
        sections.setdefault("dicom", []).append(f"port = {self.dicom_port}")
        sections.setdefault("http", []).append(f"port = {self.http_port}")
        if self.database == "postgresql":
            url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.pg_database}"
            sections.setdefault("database", []).append(f'url = "{url}"')
        return "\n".join(f"[{name}]\n" + "\n".join(lines) + "\n" for name, lines in sections.items())

    def command(self) -> list[str]:
        path = self.workdir / "pergamon.toml"
        path.write_text(self.toml())
        return [sys.executable, "-m", "pergamon.cli", "--config", str(path), "serve"]

    def env(self) -> dict[str, str]:
        if self.source.src is None:
            return NODELAY_ENV
        return {**NODELAY_ENV, "PYTHONPATH": str(self.source.src)}

    def prepare(self, fresh: bool) -> None:
        super().prepare(fresh)
        if fresh and self.database == "postgresql":
            subprocess.run(["dropdb", *POSTGRES_ADMIN, "--if-exists", "--force", self.pg_database], check=True)
            subprocess.run(["createdb", *POSTGRES_ADMIN, self.pg_database], check=True)

    def ready(self) -> bool:
        return http_json(f"http://127.0.0.1:{self.http_port}/health", 2).get("status") == "ok" and listening(
            self.dicom_port
        )

    def instance_count(self) -> int:
        return int(http_json(f"http://127.0.0.1:{self.http_port}/health")["instances"])

    def version(self) -> str:
        return f"Pergamon {self.source.describe()} ({self.database} index)"


class PergamonSource:
    """Which Pergamon code runs: the installed working tree (None), or a git revision exported to a folder.

    A revision gives a defined version even while the working tree is being edited; it runs with the
    same virtualenv (its dependencies) and the exported `src/` first on PYTHONPATH.
    """

    def __init__(self, rev: str | None = None, cache: Path | None = None) -> None:
        self.rev = rev
        self.src: Path | None = None
        if rev is not None:
            assert cache is not None
            commit = _git("rev-parse", "--short", rev)
            folder = cache / f"pergamon-{commit}"
            if not (folder / "src" / "pergamon" / "cli.py").exists():
                folder.mkdir(parents=True, exist_ok=True)
                archive = subprocess.run(["git", "archive", commit, "src"], capture_output=True, check=True,
                                         cwd=REPO).stdout
                subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
            self.src = folder / "src"

    def port_keys(self) -> list[tuple[str, str]]:
        """(section, key) of every listening-port setting with a non-zero default, in the code that runs."""
        script = (
            "import dataclasses, json\nfrom pergamon.config import Settings\nd = Settings()\n"
            "print(json.dumps([(s.name, k.name) for s in dataclasses.fields(d) for k in dataclasses.fields("
            "getattr(d, s.name)) if k.name.endswith('port') and getattr(getattr(d, s.name), k.name)]))"
        )
        env = {**os.environ, "PYTHONPATH": str(self.src)} if self.src else None
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env)
        return [tuple(pair) for pair in json.loads(out.stdout)]

    def describe(self) -> str:
        if self.rev is None:
            return _git("describe", "--always", "--dirty", "--tags") + " (working tree)"
        return _git("describe", "--always", "--tags", self.rev)


REPO = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO).stdout.strip() or "?"


class StorescpPeer(Peer):
    """dcmtk `storescp +B`: writes what it receives bit for bit, no index (the physical reference)."""

    name = "storescp+B"
    aet = "STORESCP"
    dicomweb = False

    def command(self) -> list[str]:
        (self.workdir / "out").mkdir(exist_ok=True)
        return ["storescp", "-aet", self.aet, "+B", "-od", str(self.workdir / "out"), str(self.dicom_port)]

    def instance_count(self) -> int:
        return sum(1 for _ in (self.workdir / "out").iterdir())

    def version(self) -> str:
        out = subprocess.run(["storescp", "--version"], capture_output=True, text=True).stdout
        return out.splitlines()[0].strip("$ ") if out else "storescp"
