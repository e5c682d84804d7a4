"""`pergamon serve` as users start it: defaults, graceful SIGTERM, and clear start-up errors.

Each test runs the real command as a child process with an environment free of PERGAMON_*
variables (the test settings must not leak in), and talks to it with dcmtk.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import samples
from conftest import dcmtk_env, free_port, make_settings, require_tool, wait_for_port
from store_checks import ChildServer, index_counts, wait_for

pytestmark = pytest.mark.interop

DEFAULT_PORT = 11112
DEFAULT_HTTP_PORT = 8080
SERVE = [sys.executable, "-m", "pergamon.cli", "serve"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERGAMON_")}
    return {**env, **extra}


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def echoscu(port: int, called_ae: str = "PERGAMON") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("echoscu"), "-aec", called_ae, "127.0.0.1", str(port)],
        env=dcmtk_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Child processes a test starts; killed at teardown if still running."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_serve_with_no_config_uses_the_defaults(tmp_path: Path, processes: list[subprocess.Popen[str]]) -> None:
    workdir = tmp_path / "empty"
    workdir.mkdir()
    env = clean_env()
    port = DEFAULT_PORT
    if not port_is_free(DEFAULT_PORT):  # a colleague's archive on this machine: check the rest
        port = free_port()
        env["PERGAMON_DICOM_PORT"] = str(port)
    http_port = DEFAULT_HTTP_PORT
    if not port_is_free(DEFAULT_HTTP_PORT):
        http_port = free_port()
        env["PERGAMON_HTTP_PORT"] = str(http_port)
    if not port_is_free(2575):  # the default HL7 port
        env["PERGAMON_HL7_PORT"] = str(free_port())
    log = tmp_path / "serve.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(SERVE, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=stderr, text=True)
    processes.append(proc)
    wait_for_port(port, proc)  # type: ignore[arg-type]
    wait_for_port(http_port, proc)  # type: ignore[arg-type]  # HTTP binds after DICOM

    data = workdir / "pergamon-data"
    assert data.is_dir() and (data / "index.sqlite").is_file() and (data / "blobs").is_dir() and (data / "tmp").is_dir()
    result = echoscu(port)
    assert result.returncode == 0, result.stderr
    assert echoscu(port, called_ae="NOT-PERGAMON").returncode != 0  # the default AE title is checked
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health", timeout=10) as response:
        assert json.load(response)["status"] == "ok"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    text = log.read_text()
    assert f"DICOM listener PERGAMON on 0.0.0.0:{port}" in text, text
    assert str(data.resolve()) in text


def test_sigterm_lets_a_running_association_finish(tmp_path: Path, database_url: str) -> None:
    storescu = require_tool("storescu")
    settings = make_settings(tmp_path / "data", database_url)
    settings = dataclasses.replace(settings, server=dataclasses.replace(settings.server, shutdown_timeout=60.0))
    files = samples.ct_series(tmp_path / "src", 200)
    server = ChildServer(settings, tmp_path)
    server.start()
    try:
        peer = ["127.0.0.1", str(settings.dicom.port)]
        sender = subprocess.Popen(
            [storescu, "-aec", settings.dicom.ae_title, *peer, *(str(f.path) for f in files)],
            env=dcmtk_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(lambda: index_counts(settings)["instances"] >= 10, 60, "the first stores")
            server.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            at_signal = index_counts(settings)["instances"]
            # New associations are refused from now on, the running one goes on.
            wait_for(lambda: echoscu(settings.dicom.port).returncode != 0, 15, "the listener to close")
            _, err = sender.communicate(timeout=120)
        finally:
            if sender.poll() is None:
                sender.kill()
                sender.communicate()
        assert sender.returncode == 0, err
        assert at_signal < len(files), "storescu had finished before SIGTERM: nothing was tested"
        assert server.proc.wait(60) == 0  # type: ignore[union-attr]
        assert index_counts(settings)["instances"] == len(files)
        log = server.log_text()
        assert "received SIGTERM" in log and "all associations finished" in log, log
        assert "aborting" not in log
    finally:
        server.kill()


def test_tcp_probe_does_not_delay_shutdown(tmp_path: Path, database_url: str) -> None:
    """A connection that closes without an A-ASSOCIATE-RQ (health check, port scan) holds nothing."""
    settings = make_settings(tmp_path / "data", database_url)
    settings = dataclasses.replace(settings, server=dataclasses.replace(settings.server, shutdown_timeout=30.0))
    server = ChildServer(settings, tmp_path)
    server.start()  # its readiness probe is such a connection
    try:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", settings.dicom.port)):
                pass
        time.sleep(0.3)  # let the server see the closed connections
        started = time.monotonic()
        assert server.stop(timeout=30) == 0
        assert time.monotonic() - started < 5, "SIGTERM waited for associations that never began"
        assert "aborting" not in server.log_text()
    finally:
        server.kill()


BAD_CONFIGS = [
    pytest.param('[dicom]\nprot = 104\n', {}, "dicom.prot: unknown key", id="unknown-key"),
    pytest.param('[dicom]\nport = "abc"\n', {}, "dicom.port: expected an integer", id="port-not-a-number"),
    pytest.param("[dicom]\nport = 70000\n", {}, "dicom.port: port must be between 1 and 65535", id="port-out-of-range"),
    pytest.param('[dicom]\nduplicate_policy = "maybe"\n', {}, "dicom.duplicate_policy: must be one of", id="choice"),
    pytest.param("[dicom\nport = 104\n", {}, "config file {config}: not valid TOML", id="bad-toml"),
    pytest.param("", {"PERGAMON_DICOM_PORT": "abc"}, "dicom.port: expected an integer", id="env-port-not-a-number"),
    pytest.param("", {"PERGAMON_DICOM_PROT": "104"}, "environment variable PERGAMON_DICOM_PROT", id="env-unknown"),
    pytest.param(None, {}, "config file {config}: not found", id="missing-file"),
]


@pytest.mark.parametrize(("toml", "env", "expected"), BAD_CONFIGS)
def test_bad_configuration_stops_with_one_line(
    tmp_path: Path, toml: str | None, env: dict[str, str], expected: str
) -> None:
    config = tmp_path / "pergamon.toml"
    if toml is not None:
        config.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n' + toml)
    command = [*SERVE, "--config", str(config)]
    result = subprocess.run(command, cwd=tmp_path, env=clean_env(**env), capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"pergamon: configuration error: {expected.format(config=config)}"), lines[0]
    assert not (tmp_path / "data").exists(), "started doing things before the configuration was valid"


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "pergamon.toml"
        config.write_text(
            f'[server]\ndata_dir = "{tmp_path / "data"}"\n[dicom]\nhost = "127.0.0.1"\nport = {port}\n'
            f'[http]\nhost = "127.0.0.1"\nport = {free_port()}\n'
        )
        result = subprocess.run(
            [*SERVE, "--config", str(config)], env=clean_env(), capture_output=True, text=True, timeout=60
        )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1, result.stderr
    assert "cannot start" in errors[0] and f"127.0.0.1:{port}" in errors[0] and "in use" in errors[0], errors[0]
