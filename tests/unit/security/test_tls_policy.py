"""The TLS policy (RFC 9325, IHE ITI-19), its configuration checks and the lab certificates."""

from __future__ import annotations

import dataclasses
import datetime
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from pergamon.cli import main
from pergamon.config import ConfigError, RemoteAE, Settings, TlsSettings, load_settings
from pergamon.security import tls
from pergamon.security.certs import NodeFiles, create_lab_pki


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, NodeFiles, NodeFiles]:
    root = tmp_path_factory.mktemp("lab")
    server, client = create_lab_pki(root, ["localhost,127.0.0.1", "client"], key_size=2048)
    return root / "ca.pem", server, client


def settings_with(ca: Path | str, node: NodeFiles | None, **overrides: object) -> Settings:
    values = {
        "certificate": str(node.certificate) if node else "",
        "private_key": str(node.private_key) if node else "",
        "ca_certificates": str(ca),
        **overrides,
    }
    return dataclasses.replace(Settings(), tls=TlsSettings(**values))  # type: ignore[arg-type]


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> tuple[str | None, BaseException | None]:
    """One in-memory handshake over a socket pair: (negotiated TLS version, server-side error)."""
    left, right = socket.socketpair()
    outcome: dict[str, BaseException] = {}

    def serve() -> None:
        try:
            with server.wrap_socket(left, server_side=True) as s:
                s.recv(1)
        except (OSError, ssl.SSLError) as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=serve)
    thread.start()
    version = None
    try:
        with client.wrap_socket(right, server_hostname="localhost") as c:
            version = c.version()
            c.sendall(b"x")
    except (OSError, ssl.SSLError):
        pass
    thread.join(10)
    return version, outcome.get("error")


def test_no_contexts_without_configuration() -> None:
    assert tls.server_context(Settings()) is None
    assert tls.client_context(Settings()) is None


def test_policy_tls12_floor_aead_suites_no_compression_no_renegotiation(lab: tuple[Path, NodeFiles, NodeFiles]) -> None:
    ca, server, _client = lab
    for ctx in (tls.server_context(settings_with(ca, server)), tls.client_context(settings_with(ca, server))):
        assert ctx is not None
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
        assert ctx.maximum_version == ssl.TLSVersion.TLSv1_3
        assert ctx.options & ssl.OP_NO_COMPRESSION and ctx.options & ssl.OP_NO_RENEGOTIATION
        assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN
        names = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
        assert names == set(tls.TLS12_CIPHERS)
        assert set(tls.ITI19_REQUIRED) <= names
        assert all(c["aead"] for c in ctx.get_ciphers())
    client_ctx = tls.client_context(settings_with(ca, server))
    assert client_ctx is not None and client_ctx.check_hostname is False


def test_legacy_cipher_is_opt_in(lab: tuple[Path, NodeFiles, NodeFiles]) -> None:
    ca, server, _client = lab
    ctx = tls.server_context(settings_with(ca, server, legacy_cipher=True))
    assert ctx is not None
    assert "AES128-SHA" in {c["name"] for c in ctx.get_ciphers()}
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


def test_verify_peers_off_asks_no_client_certificate(lab: tuple[Path, NodeFiles, NodeFiles]) -> None:
    ca, server, _client = lab
    ctx = tls.server_context(settings_with(ca, server, verify_peers=False))
    assert ctx is not None and ctx.verify_mode == ssl.CERT_NONE


def test_mutual_handshake_and_refusal(lab: tuple[Path, NodeFiles, NodeFiles], tmp_path: Path) -> None:
    ca, server, client = lab
    server_ctx = tls.server_context(settings_with(ca, server))
    client_ctx = tls.client_context(settings_with(ca, client))
    assert server_ctx is not None and client_ctx is not None
    version, error = handshake(server_ctx, client_ctx)
    assert version in ("TLSv1.2", "TLSv1.3") and error is None
    anonymous = tls.client_context(settings_with(ca, None))
    assert anonymous is not None
    _version, error = handshake(server_ctx, anonymous)
    assert error is not None and tls.is_authentication_failure(error)
    assert "certificate" in tls.describe_failure(error)


def _self_signed(path: Path) -> NodeFiles:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modality")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    files = NodeFiles("modality", path / "modality.pem", path / "modality-key.pem")
    files.certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.private_key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files


def test_direct_trust_of_a_listed_self_signed_certificate(
    lab: tuple[Path, NodeFiles, NodeFiles], tmp_path: Path
) -> None:
    """ITI-19 3.19.6.1: validation by direct comparison with configured (self-signed) certificates, DER too."""
    ca, server, _client = lab
    modality = _self_signed(tmp_path)
    der = tmp_path / "modality.der"
    der.write_bytes(
        x509.load_pem_x509_certificate(modality.certificate.read_bytes()).public_bytes(serialization.Encoding.DER)
    )
    server_ctx = tls.server_context(settings_with(der, server))
    client_ctx = tls.client_context(settings_with(ca, modality))
    assert server_ctx is not None and client_ctx is not None
    _version, error = handshake(server_ctx, client_ctx)
    assert error is None
    (tmp_path / "other").mkdir()
    stranger_ctx = tls.client_context(settings_with(ca, _self_signed(tmp_path / "other")))
    assert stranger_ctx is not None
    _version, error = handshake(server_ctx, stranger_ctx)
    assert error is not None and "verify failed" in tls.describe_failure(error)


# --- configuration -------------------------------------------------------------------------------


def load(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "pergamon.toml"
    path.write_text(text)
    return load_settings(path, environ={})


def tls_table(ca: Path, node: NodeFiles, extra: str = "") -> str:
    return (
        f'[tls]\ncertificate = "{node.certificate}"\nprivate_key = "{node.private_key}"\n'
        f'ca_certificates = "{ca}"\n{extra}'
    )


def test_valid_tls_configuration_loads(lab: tuple[Path, NodeFiles, NodeFiles], tmp_path: Path) -> None:
    ca, server, _client = lab
    settings = load(tmp_path, tls_table(ca, server, "dicom_port = 2762\nhttp_port = 0\n"))
    assert settings.tls.dicom_port == 2762 and settings.tls.http_port == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("dicom_port = 70000\n", "tls.dicom_port: port must be between 0 (none) and 65535"),
        ("http_port = -1\n", "tls.http_port: port must be between 0 (none) and 65535"),
        ("dicom_port = 11112\n", "tls.dicom_port: 11112 is also dicom.port"),
    ],
)
def test_tls_port_errors(lab: tuple[Path, NodeFiles, NodeFiles], tmp_path: Path, extra: str, message: str) -> None:
    ca, server, _client = lab
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load(tmp_path, tls_table(ca, server, extra))


def test_tls_file_errors_name_the_key(lab: tuple[Path, NodeFiles, NodeFiles], tmp_path: Path) -> None:
    ca, server, client = lab
    with pytest.raises(ConfigError, match=r"^tls.certificate: file .*missing.pem not found"):
        load(tmp_path, f'[tls]\ncertificate = "{tmp_path / "missing.pem"}"\n')
    with pytest.raises(ConfigError, match=r"^tls.private_key: does not match tls.certificate"):
        load(tmp_path, tls_table(ca, NodeFiles("x", server.certificate, client.private_key)))
    with pytest.raises(ConfigError, match=r"^tls.ca_certificates: required when tls.verify_peers"):
        load(tmp_path, f'[tls]\ncertificate = "{server.certificate}"\nprivate_key = "{server.private_key}"\n')
    with pytest.raises(ConfigError, match=r"^tls.dicom_port: a TLS port needs tls.certificate"):
        load(tmp_path, "[tls]\ndicom_port = 2762\n")
    with pytest.raises(ConfigError, match=r"^tls.certificate: no PEM certificate"):
        load(tmp_path, tls_table(ca, NodeFiles("x", server.private_key, server.private_key)))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"^tls.ca_certificates: cannot load"):
        load(tmp_path, f'[tls]\nca_certificates = "{garbage}"\n')
    encrypted = tmp_path / "encrypted-key.pem"
    key = serialization.load_pem_private_key(server.private_key.read_bytes(), password=None)
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ConfigError, match=r"^tls.private_key: the private key is encrypted"):
        load(
            tmp_path,
            f'[tls]\ncertificate = "{server.certificate}"\nprivate_key = "{encrypted}"\nca_certificates = "{ca}"\n',
        )


def test_tls_remote_needs_a_tls_client(lab: tuple[Path, NodeFiles, NodeFiles], tmp_path: Path) -> None:
    ca, server, _client = lab
    remote = '[[dicom.remote]]\nae_title = "DEST"\nport = 2762\ntls = true\n'
    with pytest.raises(ConfigError, match=r"^dicom.remote\[0\].tls: needs tls.ca_certificates"):
        load(tmp_path, remote)
    settings = load(tmp_path, tls_table(ca, server) + remote)
    assert settings.dicom.remote == (RemoteAE("DEST", "127.0.0.1", 2762, tls=True),)


# --- lab certificates ----------------------------------------------------------------------------


def test_lab_pki_reuses_its_ca_and_protects_keys(tmp_path: Path) -> None:
    (first,) = create_lab_pki(tmp_path, ["pacs.example.org,10.0.0.5"], days=30)
    ca_before = (tmp_path / "ca.pem").read_bytes()
    (second,) = create_lab_pki(tmp_path, ["modality"], key_size=2048)
    assert (tmp_path / "ca.pem").read_bytes() == ca_before
    for node in (first, second):
        assert stat.S_IMODE(node.private_key.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(first.certificate.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["pacs.example.org"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 31
    with pytest.raises(ValueError, match="2048-4096"):
        create_lab_pki(tmp_path, ["x"], key_size=1024)


def test_certs_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certs", str(tmp_path / "pki"), "--hosts", "localhost", "--key-size", "2048"]) == 0
    out = capsys.readouterr().out
    assert "[tls]" in out and "ca_certificates" in out
    assert (tmp_path / "pki" / "localhost.pem").exists()
