"""`pergamon certs DIR --hosts ...`: a test CA and node certificates for a lab (IHE ITI-19 node authentication).

For test benches and Connectathon-style labs, not production PKI. In DIR it writes:

* ``ca.pem`` / ``ca-key.pem``: a self-signed RSA CA (reused when already there, so nodes can be
  added later); ``ca.pem`` is what every node lists in `tls.ca_certificates`;
* ``<name>.pem`` / ``<name>-key.pem`` per host: an RSA node certificate signed by the CA, usable
  both as TLS server and TLS client (mutual TLS: extended key usages serverAuth and clientAuth),
  with the host (and any aliases given as ``name,alias,...``) as DNS or IP subject alternative
  names.

ITI-19 3.19.6.1 allows RSA keys of 1024-4096 bits; RFC 9325 §4.3 (and OpenSSL's default security
level, which Pergamon's TLS stack uses) asks for at least 2048, so keys are 2048-4096 bits (2048 by
default). ITI-19 recommends a certificate lifetime of at most two years (730 days by default).
Private keys are written unencrypted with mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_DAYS = 730
DEFAULT_KEY_SIZE = 2048


@dataclass(frozen=True)
class NodeFiles:
    """The files of one node certificate."""

    name: str
    certificate: Path
    private_key: Path


def create_lab_pki(
    directory: Path, hosts: list[str], *, days: int = DEFAULT_DAYS, key_size: int = DEFAULT_KEY_SIZE
) -> list[NodeFiles]:
    """Create (or reuse) the CA in `directory` and one node certificate per entry of `hosts`.

    An entry is ``name`` or ``name,alias,...``; every name becomes a subject alternative name
    (IP address or DNS name), the first also the common name and the file name.

    Raises:
        ValueError: an empty host entry, or a key size outside 2048-4096.
    """
    if not 2048 <= key_size <= 4096:
        raise ValueError(f"key size must be 2048-4096 bits (ITI-19 3.19.6.1, RFC 9325 §4.3), got {key_size}")
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _load_or_create_ca(directory, days, key_size)
    created = []
    for entry in hosts:
        names = [n.strip() for n in entry.split(",") if n.strip()]
        if not names:
            raise ValueError(f"empty host entry {entry!r}")
        created.append(_create_node(directory, names, ca_cert, ca_key, days, key_size))
    return created


def _load_or_create_ca(directory: Path, days: int, key_size: int) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    cert_path, key_path = directory / "ca.pem", directory / "ca-key.pem"
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{key_path}: not an RSA key")
        return cert, key
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Pergamon lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Pergamon lab CA"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _create_node(
    directory: Path, names: list[str], ca_cert: x509.Certificate, ca_key: rsa.RSAPrivateKey, days: int, key_size: int
) -> NodeFiles:
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    alt_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    not_after = min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Pergamon lab"),
                    x509.NameAttribute(NameOID.COMMON_NAME, names[0]),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", names[0])
    files = NodeFiles(names[0], directory / f"{stem}.pem", directory / f"{stem}-key.pem")
    _write_key(files.private_key, key)
    files.certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    """The key in PKCS#8 PEM, unencrypted, readable by its owner only."""
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def config_snippet(directory: Path, node: NodeFiles) -> str:
    """The `[tls]` table a node needs to use these files."""
    ca = (directory / "ca.pem").resolve()
    return (
        "[tls]\n"
        f'certificate = "{node.certificate.resolve()}"\n'
        f'private_key = "{node.private_key.resolve()}"\n'
        f'ca_certificates = "{ca}"\n'
        "dicom_port = 2762\n"
        "http_port = 8443\n"
    )
