"""ATX: TLS Syslog and ATX: UDP Syslog (ITI TF-1 9.2.7, ITI TF-2 3.20) with rsyslog as the repository.

A private rsyslogd (``apt-get install rsyslog rsyslog-gnutls``) listens on free ports: imudp
(RFC 5426) and imtcp with the gtls driver (RFC 5425, mutual TLS with certificates made here),
writing each received message as one JSON line. Checked: the audit XML arrives unchanged over
both transports with the ITI-20 header; while the repository is down messages wait in the spool
and arrive once it is back - every one, none twice (TLS); a restarted sender delivers what the
previous one left.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, make_settings, require_tool, wait_for_port
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pergamon.archive.service import Archive
from pergamon.audit.sender import AuditSender
from pergamon.config import Settings

pytestmark = [pytest.mark.interop, pytest.mark.slow]

GTLS_DRIVER = Path("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so")


def audit_xml(n: int) -> bytes:
    """A distinct audit message with what must survive transport: newlines, tabs, quotes, UTF-8."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<AuditMessage>\n\t<EventIdentification EventActionCode="R" '
        f'EventDateTime="2024-01-01T00:00:00Z" EventOutcomeIndicator="0"><EventID csd-code="110112" '
        f'codeSystemName="DCM" originalText="Query"/></EventIdentification>\n\t<ParticipantObjectIdentification '
        f'ParticipantObjectID="PAT-{n}" ParticipantObjectName="Müller^Jürgen &amp; «Łukasz»"/>\n</AuditMessage>'
    ).encode()


def make_pki(folder: Path) -> dict[str, Path]:
    """A test CA and a server and a client certificate (both for 127.0.0.1/localhost)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Pergamon test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": folder / "ca.pem"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for name in ("server", "client"):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        paths[name] = folder / f"{name}.pem"
        paths[name].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[f"{name}_key"] = folder / f"{name}.key"
        paths[f"{name}_key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return paths


class Rsyslog:
    """A private rsyslogd: imudp + imtcp/gtls (x509/certvalid: client certificate required)."""

    def __init__(self, folder: Path, pki: dict[str, Path]) -> None:
        self.folder = folder
        self.udp_port = free_port()
        self.tls_port = free_port()
        self.output = folder / "received.jsonl"
        self.config = folder / "rsyslog.conf"
        self.pidfile = folder / "rsyslogd.pid"
        self.log = folder / "rsyslogd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        fields = ",".join(
            f'\\"{key}\\":\\"%{prop}%\\"'
            for key, prop in (
                ("input", "inputname"),
                ("pri", "pri"),
                ("msgid", "msgid:::json"),
                ("app", "app-name:::json"),
                ("host", "hostname:::json"),
                ("procid", "procid:::json"),
                ("sd", "structured-data:::json"),
                ("msg", "msg:::json"),
            )
        )
        self.config.write_text(
            f'global(workDirectory="{folder}" maxMessageSize="256k" parser.escapeControlCharactersOnReceive="off"\n'
            f'  DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{pki["ca"]}"\n'
            f'  DefaultNetstreamDriverCertFile="{pki["server"]}" DefaultNetstreamDriverKeyFile="{pki["server_key"]}")\n'
            'module(load="imudp")\n'
            'module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1"\n'
            '  StreamDriver.AuthMode="x509/certvalid")\n'
            f'template(name="json" type="string" string="{{{fields}}}\\n")\n'
            f'ruleset(name="audit") {{ action(type="omfile" file="{self.output}" template="json") }}\n'
            f'input(type="imudp" address="127.0.0.1" port="{self.udp_port}" ruleset="audit")\n'
            f'input(type="imtcp" address="127.0.0.1" port="{self.tls_port}" ruleset="audit")\n'
        )

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [require_tool("rsyslogd"), "-n", "-f", str(self.config), "-i", str(self.pidfile)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.tls_port, self.proc)  # a bare TCP probe: rsyslog logs a TLS error, harmless
        time.sleep(0.2)  # imudp binds in the same start-up; give it a moment

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        self.proc = None

    def received(self) -> list[dict[str, Any]]:
        """The messages rsyslog has written so far; a last line without its newline is still being written."""
        if not self.output.exists():
            return []
        complete = self.output.read_text(encoding="utf-8").split("\n")[:-1]
        return [json.loads(line) for line in complete if line]

    def wait_for(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The received messages once there are `count` of them (or the timeout passed)."""
        deadline = time.monotonic() + timeout
        while True:
            received = self.received()
            if len(received) >= count or time.monotonic() > deadline:
                return received
            time.sleep(0.05)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    return make_pki(tmp_path)


@pytest.fixture
def rsyslog(tmp_path: Path, pki: dict[str, Path]) -> Iterator[Rsyslog]:
    require_tool("rsyslogd")
    if not GTLS_DRIVER.exists() and os.environ.get("PERGAMON_TEST_REQUIRE_PEERS") != "1":
        pytest.skip("rsyslog-gnutls is not installed")
    folder = tmp_path / "rsyslog"
    folder.mkdir()
    peer = Rsyslog(folder, pki)
    yield peer
    peer.stop()


def sender_settings(tmp_path: Path, database_url: str, pki: dict[str, Path], repositories: str) -> Settings:
    base = make_settings(tmp_path / "data", database_url)
    return dataclasses.replace(
        base,
        audit=dataclasses.replace(base.audit, repositories=repositories),
        tls=dataclasses.replace(
            base.tls,
            ca_certificates=str(pki["ca"]),
            certificate=str(pki["client"]),
            private_key=str(pki["client_key"]),
        ),
    )


@pytest.fixture
def open_archive() -> Iterator[Any]:
    opened: list[Archive] = []

    def open_(settings: Settings) -> Archive:
        opened.append(Archive.open(settings))
        return opened[-1]

    yield open_
    for archive in opened:
        archive.close()


def new_sender(archive: Archive) -> AuditSender:
    return AuditSender(archive, retry_delay=0.1, retry_max_delay=0.5)


def test_refused_client_certificate_loses_nothing(
    tmp_path: Path, database_url: str, pki: dict[str, Path], rsyslog: Rsyslog, open_archive: Any
) -> None:
    rsyslog.start()
    settings = sender_settings(tmp_path, database_url, pki, f"tls://127.0.0.1:{rsyslog.tls_port}")
    anonymous = dataclasses.replace(settings, tls=dataclasses.replace(settings.tls, certificate="", private_key=""))
    archive = open_archive(anonymous)
    sender = new_sender(archive)
    sender.start()
    for n in range(5):
        sender.send(audit_xml(n))
    time.sleep(1.0)
    sender.stop()
    assert rsyslog.received() == []  # rsyslog (x509/certvalid) refuses a client without certificate
    with_certificate = new_sender(open_archive(settings))
    with_certificate.start()
    assert numbers(rsyslog.wait_for(5)) == list(range(5))  # they waited in the spool
    with_certificate.stop()


def numbers(received: list[dict[str, Any]]) -> list[int]:
    """The PAT-n numbers of received audit messages, in arrival order."""
    return [int(r["msg"].split('ParticipantObjectID="PAT-')[1].split('"')[0]) for r in received]


def test_messages_arrive_intact_over_udp_and_tls(
    tmp_path: Path,
    database_url: str,
    pki: dict[str, Path],
    rsyslog: Rsyslog,
    open_archive: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "pergamon.audit.sender")
    rsyslog.start()
    repositories = f"udp://127.0.0.1:{rsyslog.udp_port},tls://127.0.0.1:{rsyslog.tls_port}"
    sender = new_sender(open_archive(sender_settings(tmp_path, database_url, pki, repositories)))
    sender.start()
    sent = [audit_xml(n) for n in range(10)]
    for message in sent[:5]:
        sender.send(message)
    rsyslog.wait_for(10)
    time.sleep(0.3)  # the TLS connection idles (TLS 1.3 session tickets arrive meanwhile), then is reused
    for message in sent[5:]:
        sender.send(message)
    received = rsyslog.wait_for(20)
    sender.stop()
    assert not [r for r in caplog.records if r.levelno >= logging.INFO], caplog.text  # one connection, no error
    assert len(received) == 20, rsyslog.log.read_text()
    for transport in ("imudp", "imtcp"):
        got = [r for r in received if r["input"] == transport]
        assert sorted(r["msg"].encode() for r in got) == sorted(sent)  # the XML, byte for byte
        for r in got:  # the ITI TF-2 3.20.4.1.2 header as rsyslog parsed it
            assert (r["pri"], r["msgid"], r["app"], r["sd"]) == ("85", "IHE+RFC-3881", "pergamon", "-")
            assert r["procid"] == str(os.getpid())
    assert numbers([r for r in received if r["input"] == "imtcp"]) == list(range(10))  # TLS keeps the order


def test_tls_repository_down_then_up_every_message_once(
    tmp_path: Path, database_url: str, pki: dict[str, Path], rsyslog: Rsyslog, open_archive: Any
) -> None:
    sender = new_sender(
        open_archive(sender_settings(tmp_path, database_url, pki, f"tls://127.0.0.1:{rsyslog.tls_port}"))
    )
    sender.start()
    for n in range(100):  # the repository was never started
        sender.send(audit_xml(n))
    time.sleep(1.0)  # several failed connection attempts
    assert rsyslog.received() == [] and sender.pending() == 1
    rsyslog.start()
    received = rsyslog.wait_for(100)
    assert numbers(received) == list(range(100))
    # down again while the sender holds a connection it believes open: nothing goes into the dead connection
    rsyslog.stop()
    for n in range(100, 200):
        sender.send(audit_xml(n))
    time.sleep(1.0)
    rsyslog.start()
    received = rsyslog.wait_for(200)
    sender.stop()
    time.sleep(0.5)
    assert numbers(rsyslog.received()) == list(range(200))  # every message, none twice, in order
    assert sender.pending() == 0


def test_restarted_sender_delivers_what_the_previous_one_left(
    tmp_path: Path, database_url: str, pki: dict[str, Path], rsyslog: Rsyslog, open_archive: Any
) -> None:
    settings = sender_settings(tmp_path, database_url, pki, f"tls://127.0.0.1:{rsyslog.tls_port}")
    archive = open_archive(settings)
    first = new_sender(archive)
    first.start()
    for n in range(30):
        first.send(audit_xml(n))
    time.sleep(0.3)
    first.stop()  # the repository is down: everything stays in the spool
    spool = settings.server.data_dir / "audit-spool"
    assert any(spool.rglob("*.seg"))
    rsyslog.start()
    second = new_sender(archive)
    second.start()
    assert numbers(rsyslog.wait_for(30)) == list(range(30))
    second.send(audit_xml(30))
    assert numbers(rsyslog.wait_for(31)) == list(range(31))
    second.stop()
    third = new_sender(archive)  # a clean stop persisted the offset: nothing is sent again
    third.start()
    third.send(audit_xml(31))
    rsyslog.wait_for(32)
    time.sleep(0.5)
    third.stop()
    assert numbers(rsyslog.received()) == list(range(32))
