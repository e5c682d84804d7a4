"""The one TLS policy of every door and client (IHE ITI TF-2 3.19 Authenticate Node [ITI-19]).

Pergamon claims the ATNA Secure Application options "STX: TLS 1.2 Floor using BCP195" and "STX:
No Secure Transport" (plain ports stay open). Every TLS listener (DIMSE, HTTPS, MLLP, syslog) takes
`server_context`, every TLS client (C-MOVE / storage commitment associations, syslog sender) takes
`client_context`; nothing else in Pergamon builds an `ssl.SSLContext`.

The policy (BCP 195 = RFC 8996 + RFC 9325):

* Protocols: TLS 1.2 and TLS 1.3 only (RFC 8996; RFC 9325 §3.1.1; ITI-19 3.19.6.2.3 "shall be
  able to restrict to TLS 1.2 or higher").
* TLS 1.2 cipher suites, in server preference order:
  - RFC 9325 §4.2 RECOMMENDED: TLS_ECDHE_{ECDSA,RSA}_WITH_AES_{128_GCM_SHA256,256_GCM_SHA384};
  - TLS_ECDHE_{ECDSA,RSA}_WITH_CHACHA20_POLY1305_SHA256 (AEAD with forward secrecy, RFC 9325 §4.1
    "prefer ... forward secrecy"; ITI-19 allows "others of similar or greater strength");
  - TLS_DHE_RSA_WITH_AES_{128_GCM_SHA256,256_GCM_SHA384}: ITI-19 3.19.6.2.3 says the actor
    "shall support" them (with the two ECDHE_RSA GCM suites above). RFC 9325 §4.1 says TLS 1.2
    SHOULD NOT negotiate TLS_DHE_*, so they come last and the server's preference picks ECDHE
    whenever the peer offers it; the DH group is RFC 7919 ffdhe2048 (>= 2048 bits, RFC 9325 §4.1).
  - TLS_RSA_WITH_AES_128_CBC_SHA (static RSA, no forward secrecy) was mandatory in the older ATNA
    "TLS" option (Gazelle assertion ITI19-15) and is NOT part of the TLS 1.2 Floor option we
    claim; RFC 9325 §4.1 says SHOULD NOT. It is offered only with `tls.legacy_cipher = true`,
    for old peers, and even then only over TLS 1.2.
  No NULL, EXPORT, RC4, 3DES, anonymous or static-DH suites (RFC 9325 §4.1 MUST NOT / SHOULD NOT).
* TLS 1.3 suites are OpenSSL's defaults (TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256,
  TLS_AES_128_GCM_SHA256), all AEAD; Python's `ssl` cannot restrict them further.
* No TLS compression (RFC 9325 §3.3); no renegotiation (RFC 9325 §3.5 asks for RFC 5746 if
  renegotiation is used; Pergamon never needs it, so it is refused); extended master secret is
  OpenSSL's default (RFC 9325 §3.7); clients send SNI when given a host name (RFC 9325 §3.6).
* Certificates (ITI-19 3.19.6.1): peers are validated against `tls.ca_certificates` both by chain
  to a CA in it and by direct comparison with a (possibly self-signed) certificate in it (OpenSSL's
  partial-chain flag). Host names are not checked: the "FQDN Validation of Server Certificate"
  option is not claimed, and DICOM peers are configured by address. Mutual authentication:
  with `tls.verify_peers` listeners require a client certificate and clients verify the server.
  DER files are accepted for `tls.ca_certificates` (a single certificate).

`check(settings)` loads every file once at startup and raises `ConfigError` naming the key.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pergamon.config import Settings, TlsSettings

TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256",
    "DHE-RSA-AES256-GCM-SHA384",
)
"""OpenSSL names of the TLS 1.2 suites offered, most preferred first (see the module docstring)."""

LEGACY_CIPHER = "AES128-SHA"
"""TLS_RSA_WITH_AES_128_CBC_SHA, the older ATNA baseline; only with `tls.legacy_cipher`."""

ITI19_REQUIRED = (
    "DHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "DHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
)
"""The four suites ITI-19 3.19.6.2.3 (STX: TLS 1.2 Floor using BCP195) requires support for."""

HANDSHAKE_TIMEOUT = 30.0
"""Seconds a peer gets to complete the TLS handshake on a listener."""

HandshakeReporter = Callable[[str, str], None]
"""Called with (peer "host:port", reason) when a TLS handshake fails."""


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The context of every TLS listener, or None when no certificate is configured.

    Raises:
        ssl.SSLError, OSError: a file cannot be loaded (`check` turns these into `ConfigError`).
    """
    tls = settings.tls
    if not tls.certificate:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _apply_policy(ctx, tls)
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_SINGLE_DH_USE | ssl.OP_SINGLE_ECDH_USE
    with resources.as_file(resources.files(__package__).joinpath("ffdhe2048.pem")) as dh_params:
        ctx.load_dh_params(str(dh_params))
    ctx.load_cert_chain(tls.certificate, tls.private_key or None, password=_no_password)
    if tls.verify_peers:
        ctx.verify_mode = ssl.CERT_REQUIRED
        _load_trust(ctx, tls)
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_context(settings: Settings) -> ssl.SSLContext | None:
    """The context of every TLS client, or None when neither certificate nor CAs are configured.

    The client presents `tls.certificate` when set (mutual TLS) and, with `tls.verify_peers`,
    requires the server's certificate to validate against `tls.ca_certificates`.
    """
    tls = settings.tls
    if not tls.certificate and not tls.ca_certificates:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _apply_policy(ctx, tls)
    ctx.check_hostname = False  # "FQDN Validation of Server Certificate" not claimed (ITI-19 3.19.6.1)
    if tls.certificate:
        ctx.load_cert_chain(tls.certificate, tls.private_key or None, password=_no_password)
    if tls.verify_peers:
        ctx.verify_mode = ssl.CERT_REQUIRED
        _load_trust(ctx, tls)
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def cipher_string(tls: TlsSettings) -> str:
    """The OpenSSL cipher list for TLS 1.2 under this configuration."""
    return ":".join((*TLS12_CIPHERS, LEGACY_CIPHER) if tls.legacy_cipher else TLS12_CIPHERS)


def _apply_policy(ctx: ssl.SSLContext, tls: TlsSettings) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_ciphers(cipher_string(tls))
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION


def _load_trust(ctx: ssl.SSLContext, tls: TlsSettings) -> None:
    """CAs and directly trusted peer certificates (PEM bundle, or one DER certificate)."""
    data = Path(tls.ca_certificates).read_bytes()
    if b"-----BEGIN" in data:
        ctx.load_verify_locations(cafile=tls.ca_certificates)
    else:
        ctx.load_verify_locations(cadata=data)
    # ITI-19 3.19.6.1: a configured peer certificate is trusted by direct comparison too.
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN


def _no_password() -> bytes:
    raise ValueError("the private key is encrypted; Pergamon needs an unencrypted key file (readable by it only)")


def describe_failure(exc: BaseException) -> str:
    """A short reason for a failed handshake: OpenSSL's reason code and verify message if any."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc).lower().replace("_", " ")
    if isinstance(exc, TimeoutError):
        return "handshake timed out"
    return f"{type(exc).__name__}: {exc}"


def is_authentication_failure(exc: BaseException) -> bool:
    """Whether a failed handshake is worth a Node-Authentication-failure event (ITI-20).

    TLS errors are (no or untrusted certificate, protocol or cipher refused); a peer that
    connects and leaves or stalls without a TLS alert (port probe, health check) is not.
    """
    return isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError)


def peer_name(address: Any) -> str:
    """'host:port' of a socket address tuple (IPv4 or IPv6), else its text."""
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


def check(settings: Settings) -> None:
    """Load every configured TLS file once; raise `ConfigError` naming the key when one fails."""
    from pergamon.config import ConfigError

    tls = settings.tls
    for key in ("certificate", "private_key", "ca_certificates"):
        value = getattr(tls, key)
        if value and not Path(value).is_file():
            raise ConfigError(f"tls.{key}: file {value} not found")
    if tls.private_key and not tls.certificate:
        raise ConfigError("tls.private_key: set, but tls.certificate is empty")
    for key in ("dicom_port", "http_port", "hl7_port"):
        if getattr(tls, key) and not tls.certificate:
            raise ConfigError(f"tls.{key}: a TLS port needs tls.certificate (and tls.private_key)")
    if tls.verify_peers and tls.certificate and not tls.ca_certificates:
        raise ConfigError("tls.ca_certificates: required when tls.verify_peers is true (mutual TLS)")
    if tls.certificate and b"-----BEGIN CERTIFICATE-----" not in Path(tls.certificate).read_bytes():
        raise ConfigError(f"tls.certificate: no PEM certificate in {tls.certificate}")
    if tls.ca_certificates:
        try:
            probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            _load_trust(probe, tls)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(f"tls.ca_certificates: cannot load {tls.ca_certificates} ({exc})") from None
        if not probe.get_ca_certs():
            raise ConfigError(f"tls.ca_certificates: no certificate in {tls.ca_certificates}")
    if tls.certificate:
        try:
            server_context(settings)
        except ValueError as exc:
            raise ConfigError(f"tls.private_key: {exc}") from None
        except (ssl.SSLError, OSError) as exc:
            text = str(exc)
            if "KEY_VALUES_MISMATCH" in text:
                raise ConfigError("tls.private_key: does not match tls.certificate") from None
            key = "tls.private_key" if tls.private_key else "tls.certificate"
            raise ConfigError(f"{key}: cannot load the certificate and key ({text})") from None
    for i, remote in enumerate(settings.dicom.remote):
        if not remote.tls:
            continue
        if not (tls.certificate or tls.ca_certificates):
            raise ConfigError(f"dicom.remote[{i}].tls: needs tls.ca_certificates (and tls.certificate)")
        if tls.verify_peers and not tls.ca_certificates:
            raise ConfigError(f"dicom.remote[{i}].tls: tls.verify_peers needs tls.ca_certificates")


def report_client_failures(ctx: ssl.SSLContext, report: HandshakeReporter) -> ssl.SSLContext:
    """Make `ctx` call `report(peer, reason)` when a client handshake made with it fails.

    pynetdicom logs a failed client handshake and answers "association aborted" without the
    reason; `SSLContext.sslsocket_class` (public since Python 3.7) lets us see the error first.
    """

    class _ReportingSocket(ssl.SSLSocket):
        def do_handshake(self, block: bool = False) -> None:
            try:
                super().do_handshake(block)
            except OSError as exc:
                if is_authentication_failure(exc):
                    try:
                        peer = peer_name(self.getpeername())
                    except OSError:
                        peer = "unknown"
                    report(peer, describe_failure(exc))
                raise

    ctx.sslsocket_class = _ReportingSocket
    return ctx
