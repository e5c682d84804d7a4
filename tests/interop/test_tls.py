"""TLS on every door (IHE ITI-19 Authenticate Node, "STX: TLS 1.2 Floor using BCP195"; RFC 9325).

Real peers: dcmtk echoscu / storescu / movescu / storescp with +tls, OpenSSL s_client, sslscan, and
httpx for HTTPS. Certificates come from `pergamon.security.certs` (a lab CA, Pergamon's node
certificate, a client certificate, and a "rogue" client signed by another CA). Checked: only TLS
1.2 / 1.3 and only the configured suites are offered on the DICOM and HTTPS ports; store, echo
and C-MOVE (to a TLS storescp) work with mutual TLS; a peer without a certificate or with one from
an unknown CA is refused and reported as `NodeAuthenticationFailed`; a client stalling its
handshake does not block other peers; the plain ports stay open ("STX: No Secure Transport").
"""

from __future__ import annotations

import dataclasses
import json
import socket
import ssl
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import samples
from conftest import dcmtk_env, free_port, make_settings, require_tool, wait_for_port
from pydicom import dcmread

from pergamon.archive.events import NodeAuthenticationFailed
from pergamon.archive.origin import Origin
from pergamon.config import RemoteAE, Settings, TlsSettings
from pergamon.runtime import Pergamon
from pergamon.security import tls
from pergamon.security.certs import NodeFiles, create_lab_pki

pytestmark = pytest.mark.interop

TLS13_SUITES = {"TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"}
CT = "1.2.840.10008.5.1.4.1.1.2"
RSA_CERTIFICATE_EXCLUDES = {
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
}
"""Suites that need an ECDSA certificate: not negotiable with the lab's RSA certificates."""


@dataclasses.dataclass
class Pki:
    ca: Path
    server: NodeFiles
    client: NodeFiles
    rogue: NodeFiles


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    server, client = create_lab_pki(root / "lab", ["localhost,127.0.0.1", "client"])
    (rogue,) = create_lab_pki(root / "rogue", ["rogue"])
    return Pki(root / "lab" / "ca.pem", server, client, rogue)


def tls_settings(pki: Pki, **overrides: Any) -> TlsSettings:
    return TlsSettings(
        certificate=str(pki.server.certificate),
        private_key=str(pki.server.private_key),
        ca_certificates=str(pki.ca),
        dicom_port=free_port(),
        http_port=free_port(),
        **overrides,
    )


@pytest.fixture
def start(tmp_path: Path, database_url: str, pki: Pki) -> Iterator[Callable[..., tuple[Pergamon, list[Any]]]]:
    """Start a TLS-enabled Pergamon; returns it with the list of events it emits."""
    apps: list[Pergamon] = []

    def run(*remotes: RemoteAE, **tls_overrides: Any) -> tuple[Pergamon, list[Any]]:
        base = make_settings(tmp_path / f"data{len(apps)}", database_url, remotes=remotes)
        settings: Settings = dataclasses.replace(base, tls=tls_settings(pki, **tls_overrides))
        tls.check(settings)
        app = Pergamon(settings)
        events: list[Any] = []
        app.archive.bus.subscribe(events.append)
        app.start()
        apps.append(app)
        return app, events

    yield run
    for app in apps:
        app.stop()


def refusals(events: list[Any], door: str) -> list[NodeAuthenticationFailed]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = [e for e in events if isinstance(e, NodeAuthenticationFailed) and e.door == door]
        if found:
            return found
        time.sleep(0.05)
    return []


def dcmtk(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool(tool), *args],
        env=dcmtk_env(),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def client_tls(pki: Pki, node: NodeFiles | None = None) -> list[str]:
    node = node or pki.client
    return ["+tls", str(node.private_key), str(node.certificate), "+cf", str(pki.ca)]


def s_client(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    command = [require_tool("openssl"), "s_client", "-connect", f"127.0.0.1:{port}", "-brief", *args]
    return subprocess.run(command, input="", capture_output=True, text=True, timeout=60)


# --- DICOM ---------------------------------------------------------------------------------------


def test_echo_and_store_over_mutual_tls(start: Any, pki: Pki, tmp_path: Path) -> None:
    app, events = start()
    port = str(app.settings.tls.dicom_port)
    assert dcmtk("echoscu", "-aec", "PERGAMON", *client_tls(pki), "127.0.0.1", port).returncode == 0
    # -ic: the client does not check our certificate; we still check its certificate.
    ignore = ["+tls", str(pki.client.private_key), str(pki.client.certificate), "-ic"]
    assert dcmtk("echoscu", "-aec", "PERGAMON", *ignore, "localhost", port).returncode == 0
    ds = samples.make_instance(CT)
    sample = samples.write(ds, tmp_path / "ct.dcm")
    result = dcmtk("storescu", "-aec", "PERGAMON", *client_tls(pki), "127.0.0.1", port, str(sample.path))
    assert result.returncode == 0, result.stderr
    assert app.archive.counts()["instances"] == 1
    # C-FIND answers, batched into one socket write (find_responses), go through TLS whole
    more = [samples.write(samples.make_instance(CT), tmp_path / f"ct{n}.dcm").path for n in (2, 3)]
    assert dcmtk("storescu", "-aec", "PERGAMON", *client_tls(pki), "127.0.0.1", port, *map(str, more)).returncode == 0
    keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID"]
    found = dcmtk("findscu", "-S", "-v", "-aec", "PERGAMON", *client_tls(pki), *keys, "127.0.0.1", port)
    assert found.returncode == 0, found.stderr
    assert found.stderr.count("Find Response:") == 3, found.stderr
    assert "Received Final Find Response (Success)" in found.stderr, found.stderr
    # the plain port stays open ("STX: No Secure Transport")
    assert dcmtk("echoscu", "-aec", "PERGAMON", "127.0.0.1", str(app.settings.dicom.port)).returncode == 0
    assert not [e for e in events if isinstance(e, NodeAuthenticationFailed)]


def test_dicom_peer_without_or_with_untrusted_certificate_is_refused(start: Any, pki: Pki) -> None:
    app, events = start()
    port = str(app.settings.tls.dicom_port)
    anonymous = dcmtk("echoscu", "-aec", "PERGAMON", "+tla", "+cf", str(pki.ca), "127.0.0.1", port)
    assert anonymous.returncode != 0
    (refused,) = refusals(events, "dicom")
    assert refused.peer.startswith("127.0.0.1:") and "certificate" in refused.reason
    rogue = dcmtk("echoscu", "-aec", "PERGAMON", *client_tls(pki, pki.rogue), "127.0.0.1", port)
    assert rogue.returncode != 0
    deadline = time.monotonic() + 5
    while len(refusals(events, "dicom")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "verify failed" in refusals(events, "dicom")[1].reason
    # an unknown client is the only problem: a valid one still gets through afterwards
    assert dcmtk("echoscu", "-aec", "PERGAMON", *client_tls(pki), "127.0.0.1", port).returncode == 0


def test_without_verify_peers_no_client_certificate_is_needed(start: Any, pki: Pki) -> None:
    app, _events = start(verify_peers=False)
    port = str(app.settings.tls.dicom_port)
    assert dcmtk("echoscu", "-aec", "PERGAMON", "+tla", "+cf", str(pki.ca), "127.0.0.1", port).returncode == 0


def test_legacy_atna_cipher_only_when_configured(start: Any, pki: Pki) -> None:
    """TLS_RSA_WITH_AES_128_CBC_SHA (dcmtk +pa, the retired AES profile) is off unless tls.legacy_cipher."""
    app, _events = start()
    legacy = ["echoscu", "-aec", "PERGAMON", *client_tls(pki), "+pa", "127.0.0.1"]
    assert dcmtk(*legacy, str(app.settings.tls.dicom_port)).returncode != 0
    app2, _events2 = start(legacy_cipher=True)
    assert dcmtk(*legacy, str(app2.settings.tls.dicom_port)).returncode == 0


def test_stalled_handshake_does_not_block_other_peers(start: Any, pki: Pki) -> None:
    app, _events = start()
    port = app.settings.tls.dicom_port
    with socket.create_connection(("127.0.0.1", port)), socket.create_connection(("127.0.0.1", port)):
        began = time.monotonic()
        result = dcmtk("echoscu", "-aec", "PERGAMON", *client_tls(pki), "127.0.0.1", str(port))
        assert result.returncode == 0 and time.monotonic() - began < 10


def test_openssl_s_client_with_and_without_a_client_certificate(start: Any, pki: Pki) -> None:
    app, events = start()
    port = app.settings.tls.dicom_port
    identity = ["-CAfile", str(pki.ca), "-cert", str(pki.client.certificate), "-key", str(pki.client.private_key)]
    for version in ("-tls1_2", "-tls1_3"):
        ok = s_client(port, version, *identity)
        assert ok.returncode == 0 and "Verification: OK" in ok.stderr, ok.stderr
    refused = s_client(port, "-tls1_2", "-CAfile", str(pki.ca))
    assert refused.returncode != 0
    assert refusals(events, "dicom")
    for old in ("-tls1", "-tls1_1"):
        assert s_client(port, old, "-cipher", "DEFAULT@SECLEVEL=0", *identity).returncode != 0


def test_move_to_a_tls_destination(start: Any, pki: Pki, tmp_path: Path) -> None:
    out = tmp_path / "received"
    out.mkdir()
    dest_port = free_port()
    server_tls = ["+tls", str(pki.client.private_key), str(pki.client.certificate), "+cf", str(pki.ca)]
    command = [require_tool("storescp"), "-aet", "DEST", "-od", str(out), *server_tls, str(dest_port)]
    proc = subprocess.Popen(command, env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rogue_port = free_port()
    rogue_tls = ["+tls", str(pki.rogue.private_key), str(pki.rogue.certificate), "+cf", str(pki.ca)]
    rogue = subprocess.Popen(
        [require_tool("storescp"), "-aet", "ROGUE", "-od", str(out), *rogue_tls, str(rogue_port)],
        env=dcmtk_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(dest_port)
        wait_for_port(rogue_port)
        remotes = (
            RemoteAE("DEST", "127.0.0.1", dest_port, tls=True),
            RemoteAE("ROGUE", "127.0.0.1", rogue_port, tls=True),
        )
        app, events = start(*remotes)
        ds = samples.make_instance(CT)
        sample = samples.write(ds, tmp_path / "ct.dcm")
        app.archive.store_file(sample.path, Origin.from_import(str(sample.path)))
        keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={sample.study_uid}"]
        plain = ["127.0.0.1", str(app.settings.dicom.port)]
        result = dcmtk("movescu", "-S", "-aec", "PERGAMON", "-aem", "DEST", *keys, *plain)
        assert result.returncode == 0, result.stderr
        (received,) = list(out.iterdir())
        assert dcmread(received).SOPInstanceUID == ds.SOPInstanceUID
        # a destination whose certificate our CA did not sign: the sub-operation fails, and is reported
        result = dcmtk("movescu", "-S", "-aec", "PERGAMON", "-aem", "ROGUE", *keys, *plain)
        assert "Failed" in result.stderr or result.returncode != 0 or "0xa702" in result.stderr.lower()
        (refused,) = refusals(events, "dicom")
        assert refused.peer.startswith("ROGUE@127.0.0.1:") and "verify failed" in refused.reason
        assert len(list(out.iterdir())) == 1
    finally:
        for p in (proc, rogue):
            p.terminate()
            p.wait(timeout=10)


# --- HTTPS ---------------------------------------------------------------------------------------


def https_client(pki: Pki, node: NodeFiles | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if node is not None:
        context.load_cert_chain(str(node.certificate), str(node.private_key))
    return context


def test_https_health_with_mutual_tls(start: Any, pki: Pki) -> None:
    app, events = start()
    url = f"https://127.0.0.1:{app.settings.tls.http_port}/health"
    response = httpx.get(url, verify=https_client(pki, pki.client), timeout=10)
    assert response.status_code == 200
    with pytest.raises(httpx.HTTPError):
        httpx.get(url, verify=https_client(pki, None), timeout=10)
    (refused,) = refusals(events, "http")
    assert refused.peer.startswith("127.0.0.1:") and "certificate" in refused.reason
    plain = httpx.get(f"http://127.0.0.1:{app.settings.http.port}/health", timeout=10)
    assert plain.status_code == 200


# --- scanners ------------------------------------------------------------------------------------


def sslscan(pki: Pki, port: int) -> ET.Element:
    command = [
        require_tool("sslscan"),
        "--xml=-",
        "--no-colour",
        f"--certs={pki.client.certificate}",
        f"--pk={pki.client.private_key}",
        f"127.0.0.1:{port}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    return ET.fromstring(result.stdout[result.stdout.index("<?xml") :])


@pytest.mark.slow
@pytest.mark.parametrize("door", ["dicom", "http"])
def test_sslscan_sees_only_tls12_tls13_and_the_configured_suites(start: Any, pki: Pki, door: str) -> None:
    app, _events = start()
    port = app.settings.tls.dicom_port if door == "dicom" else app.settings.tls.http_port
    report = sslscan(pki, port).find("ssltest")
    assert report is not None
    enabled = {(p.get("type"), p.get("version")) for p in report.iter("protocol") if p.get("enabled") == "1"}
    assert enabled == {("tls", "1.2"), ("tls", "1.3")}
    suites = {(c.get("sslversion"), c.get("cipher")) for c in report.iter("cipher")}
    tls12 = {name for version, name in suites if version == "TLSv1.2"}
    tls13 = {name for version, name in suites if version == "TLSv1.3"}
    assert {v for v, _ in suites} == {"TLSv1.2", "TLSv1.3"}
    assert tls12 == set(tls.TLS12_CIPHERS) - RSA_CERTIFICATE_EXCLUDES
    assert set(tls.ITI19_REQUIRED) <= tls12
    assert tls13 <= TLS13_SUITES
    compression = report.find("compression")
    assert compression is None or compression.get("supported") == "0"
    renegotiation = report.find("renegotiation")
    assert renegotiation is None or renegotiation.get("supported") == "0"


@pytest.mark.slow
@pytest.mark.parametrize("door", ["dicom", "http"])
def test_testssl_finds_no_old_protocol_and_only_aead_suites(start: Any, pki: Pki, door: str, tmp_path: Path) -> None:
    app, _events = start()
    port = app.settings.tls.dicom_port if door == "dicom" else app.settings.tls.http_port
    report = tmp_path / "testssl.json"
    command = [require_tool("testssl"), "--quiet", "--color", "0", "-p", "-e", "--jsonfile", str(report)]
    subprocess.run([*command, f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=600)
    findings = {item["id"]: item["finding"] for item in json.loads(report.read_text())}
    for old in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert findings[old].startswith("not offered"), (old, findings[old])
    assert findings["TLS1_2"].startswith("offered") and findings["TLS1_3"].startswith("offered")
    names = {text.split()[1] for key, text in findings.items() if key.startswith("cipher_x")}
    offered = {name for name in names if not name.startswith("TLS_")}  # TLS 1.3 suites are TLS_*
    assert names - offered <= TLS13_SUITES
    assert offered == set(tls.TLS12_CIPHERS) - RSA_CERTIFICATE_EXCLUDES
