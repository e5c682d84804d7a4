"""Fixtures shared by every test: settings on a temporary folder, the index database, servers.

The index backend comes from PERGAMON_TEST_DB: `sqlite` (default) or `postgresql`, which uses
PERGAMON_TEST_POSTGRES_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test) with a
fresh schema per test, dropped afterwards. `./run tests` runs the suite once with each.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from pergamon.archive.index.database import Database
from pergamon.config import DicomSettings, RemoteAE, Settings, StorageSettings

POSTGRES_URL = os.environ.get("PERGAMON_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKEND = os.environ.get("PERGAMON_TEST_DB", "sqlite")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


_EPHEMERAL = _ephemeral_range()
_PORT_POOL = [p for p in range(20000, 32000) if not _EPHEMERAL[0] <= p <= _EPHEMERAL[1]]
_GIVEN_PORTS: set[int] = set()


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A TCP (or, with SOCK_DGRAM, UDP) port nobody uses, outside the kernel's ephemeral range, not handed out before.

    A port the kernel picks for `bind(0)` comes from the ephemeral range, where the next outgoing
    connection or datagram socket (a database client, an HTTP request, an audit sender) may take it
    before the test server binds it; ports below that range are never taken that way.
    """
    rng = random.Random()
    for port in rng.sample(_PORT_POOL, k=min(500, len(_PORT_POOL))):
        if port in _GIVEN_PORTS:
            continue
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN_PORTS.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


def dcmtk_env() -> dict[str, str]:
    """Environment for dcmtk tools: Debian's build leaves Nagle on unless TCP_NODELAY=1 (~40 ms per message)."""
    return {**os.environ, "TCP_NODELAY": "1"}


def require_tool(name: str) -> str:
    """The path of a peer tool; skip without it, except on CI (PERGAMON_TEST_REQUIRE_PEERS=1) where it fails."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install dcmtk orthanc)"
        if os.environ.get("PERGAMON_TEST_REQUIRE_PEERS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@contextlib.contextmanager
def index_database(directory: Path) -> Iterator[str]:
    """An index URL: a SQLite file in `directory`, or a fresh PostgreSQL schema dropped afterwards."""
    if BACKEND == "sqlite":
        yield f"sqlite:///{directory / 'index.sqlite'}"
        return
    if BACKEND != "postgresql":
        raise RuntimeError(f"PERGAMON_TEST_DB must be sqlite or postgresql, not {BACKEND!r}")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """The index URL for one test (see `index_database`)."""
    with index_database(tmp_path) as url:
        yield url


@pytest.fixture
def index_db(database_url: str) -> Iterator[Database]:
    """An empty index at the newest schema, with a pool of two connections, for tests of the database layer."""
    opened = Database(database_url, pool_size=2)
    opened.migrate()
    yield opened
    opened.dispose()


def postgresql_only(db: Database, why: str) -> None:
    """Skip the calling test on SQLite, saying `why` it needs PostgreSQL."""
    if db.is_sqlite:
        pytest.skip(f"PostgreSQL only: {why}")


def make_settings(data_dir: Path, database_url: str, *, remotes: tuple[RemoteAE, ...] = (), **dicom: Any) -> Settings:
    """Settings for a test archive on a free DICOM port, overriding [dicom] keys as given."""
    base = Settings()
    audit_port = free_port()
    return dataclasses.replace(
        base,
        server=dataclasses.replace(base.server, data_dir=data_dir, shutdown_timeout=5.0),
        dicom=dataclasses.replace(
            # No store worker processes (production: one per core; each costs ~1.5 s of CPU to start):
            # the DIMSE, STOW-RS and corpus suites ask for them and so cover that path. Those start
            # with the listener (production: on first use), which the worker tests rely on;
            # test_direct_store covers starting on demand and ending when idle.
            DicomSettings(),
            port=free_port(),
            host="127.0.0.1",
            remote=remotes,
            **{"store_workers": 0, "store_workers_idle_stop": 0.0, **dicom},
        ),
        # No background metadata rendering (test_metadata_cache covers it): tests that count cache
        # entries or time requests would otherwise race it.
        http=dataclasses.replace(base.http, port=free_port(), host="127.0.0.1", metadata_prepare_delay=0.0),
        hl7=dataclasses.replace(base.hl7, port=free_port(), host="127.0.0.1"),
        audit=dataclasses.replace(base.audit, repositories=f"udp://127.0.0.1:{audit_port}"),
        audit_repository=dataclasses.replace(
            base.audit_repository, host="127.0.0.1", udp_port=audit_port, tls_port=free_port()
        ),
        database=dataclasses.replace(base.database, url=database_url),
        storage=StorageSettings(),
    )


@pytest.fixture(scope="session")
def index_corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Files covering what the index sees: every storage kind, the character sets and pydicom's test files."""
    import samples

    root = tmp_path_factory.mktemp("index-corpus")
    found = [*samples.storage_corpus(root / "corpus"), *samples.charset_samples(root / "charsets")]
    found += samples.pydicom_samples(root / "pydicom")
    return [s.path for s in found]


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path / "data", database_url)


@pytest.fixture
def archive(settings: Settings) -> Iterator[Any]:
    """An opened archive core (no listener)."""
    from pergamon.archive.service import Archive

    core = Archive.open(settings)
    yield core
    core.close()


@pytest.fixture
def server(settings: Settings) -> Iterator[Any]:
    """A running Pergamon (in this process) on the settings' free port."""
    from pergamon.runtime import Pergamon

    app = Pergamon(settings)
    app.start()
    yield app
    app.stop()


@pytest.fixture
def start_server(tmp_path: Path, database_url: str) -> Iterator[Any]:
    """`start(name="data", remotes=(), **dicom)`: a Pergamon in this process with [dicom] overrides.

    Its data folder is `tmp_path / name`; the first one indexes into the session's database, later
    ones into a SQLite file of their own (two archives cannot share an index). All are stopped at
    teardown.
    """
    from pergamon.runtime import Pergamon

    apps: list[Any] = []

    def start(name: str = "data", remotes: tuple[RemoteAE, ...] = (), **dicom: Any) -> Any:
        data = tmp_path / name
        data.mkdir(parents=True, exist_ok=True)
        index = database_url if not apps else f"sqlite:///{data / 'index.db'}"
        app = Pergamon(make_settings(data, index, remotes=remotes, **dicom))
        app.start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        app.stop()


def toml_config(settings: Settings) -> str:
    """The TOML file that gives `settings` (for servers run as a separate process)."""
    remotes = "".join(
        f'\n[[dicom.remote]]\nae_title = "{r.ae_title}"\nhost = "{r.host}"\nport = {r.port}\n'
        for r in settings.dicom.remote
    )
    return (
        f'[server]\ndata_dir = "{settings.server.data_dir}"\nshutdown_timeout = {settings.server.shutdown_timeout}\n'
        f'[database]\nurl = "{settings.database.url}"\n'
        f'[dicom]\nhost = "127.0.0.1"\nport = {settings.dicom.port}\nae_title = "{settings.dicom.ae_title}"\n'
        f'duplicate_policy = "{settings.dicom.duplicate_policy}"\nstore_workers = {settings.dicom.store_workers}\n'
        f"store_workers_idle_stop = {settings.dicom.store_workers_idle_stop}\n"
        f'[http]\nhost = "127.0.0.1"\nport = {settings.http.port}\n'
        f'[hl7]\nhost = "127.0.0.1"\nport = {settings.hl7.port}\n'
        f'[audit]\nrepositories = "{settings.audit.repositories}"\n'
        f'[audit_repository]\nhost = "127.0.0.1"\nudp_port = {settings.audit_repository.udp_port}\n'
        f"tls_port = {settings.audit_repository.tls_port}\n" + remotes
    )


class ServerProcess:
    """`pergamon serve` as a child process, for kill and signal tests."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.settings = settings
        self.config = workdir / "pergamon.toml"
        self.config.write_text(toml_config(settings))
        self.log = workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pergamon.cli", "serve", "--config", str(self.config)],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        wait_for_port(self.settings.dicom.port, self.proc)

    def stop(self, sig: int = 15, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


@pytest.fixture(autouse=True)
def _audit_messages_validate(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every audit message produced in the whole test suite validates against the DICOM audit schema.

    Wraps `AuditTrail.messages_for` (which `handle` calls for every event of every trail created in
    this process): each message is checked against dicom2017c.xsd, and a builder that raises counts
    too (`handle` logs and drops such bugs, so they would otherwise go unnoticed). The test that
    produced a bad message fails at teardown with the schema errors.
    """
    from audit_schema import errors as schema_errors

    from pergamon.audit.trail import AuditTrail

    problems: list[str] = []
    original = AuditTrail.messages_for

    def checked(self: AuditTrail, event: Any) -> list[bytes]:
        try:
            built = original(self, event)
        except Exception as exc:
            problems.append(f"{type(event).__name__}: building the audit message raised {exc!r}")
            raise
        for message in built:
            found = schema_errors(message)
            if found:
                problems.append(f"{type(event).__name__}: {'; '.join(found)}\n{message.decode('utf-8', 'replace')}")
        return built

    monkeypatch.setattr(AuditTrail, "messages_for", checked)
    yield
    if problems:
        pytest.fail("invalid audit message(s) produced by this test:\n" + "\n".join(problems), pytrace=False)
