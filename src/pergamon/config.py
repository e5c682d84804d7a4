"""Typed settings from one TOML file, overridable by ``PERGAMON_*`` environment variables.

Every key has a default, so Pergamon starts with no file at all. A key in the file or the
environment that is unknown, of the wrong type or out of range stops start-up with one
`ConfigError` line naming the key and the problem. The environment variable of a key is
``PERGAMON_<SECTION>_<KEY>`` in upper case (``PERGAMON_DICOM_PORT=104``); list-valued keys
(``[[dicom.remote]]``) are set in the file only. ``docs/configuration.md``, generated from the
field descriptions below by ``pergamon config --markdown``, lists them all.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

ENV_PREFIX = "PERGAMON_"


class ConfigError(Exception):
    """A configuration value Pergamon cannot start with; the message names the key."""


def _doc(text: str, **kwargs: Any) -> Any:
    """A dataclass field whose description feeds the documentation and error messages."""
    return field(metadata={"doc": text}, **kwargs)


@dataclass(frozen=True)
class ServerSettings:
    data_dir: Path = _doc(
        "Folder holding the index (SQLite), the stored objects and temporary files.",
        default=Path("pergamon-data"),
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = _doc(
        "Minimum level of log lines written to stderr.", default="INFO"
    )
    shutdown_timeout: float = _doc(
        "Seconds that running associations get to finish after SIGTERM before they are aborted.",
        default=30.0,
    )


@dataclass(frozen=True)
class RemoteAE:
    ae_title: str = _doc("AE title of the peer (required).", default="")
    host: str = _doc("Host name or address of the peer.", default="127.0.0.1")
    port: int = _doc("DICOM port of the peer.", default=104)
    tls: bool = _doc(
        "Open associations to this peer over TLS (the `[tls]` policy; `port` is then its TLS port).",
        default=False,
    )


@dataclass(frozen=True)
class DicomSettings:
    ae_title: str = _doc("Pergamon's own AE title (the called AE title peers must use).", default="PERGAMON")
    host: str = _doc("Address the DICOM listener binds to.", default="0.0.0.0")
    port: int = _doc("DICOM (DIMSE) listening port.", default=11112)
    check_called_ae: bool = _doc("Refuse associations whose called AE title is not `ae_title`.", default=True)
    accept_unknown_callers: bool = _doc(
        "Accept associations from any calling AE title; when false only AE titles listed in "
        "[[dicom.remote]] may associate.",
        default=True,
    )
    duplicate_policy: Literal["replace", "ignore", "reject"] = _doc(
        "What a re-sent SOP Instance UID does: `replace` stores the new object and drops the old "
        "one; `ignore` keeps the first and answers success; `reject` answers a failure status.",
        default="replace",
    )
    max_pdu_size: int = _doc(
        "Largest PDU Pergamon accepts (bytes, 0 = unlimited). Larger PDUs mean fewer round trips.",
        default=0,
    )
    max_associations: int = _doc("Concurrent associations accepted.", default=32)
    direct_store: bool = _doc(
        "Receive associations that carry only storage and verification with Pergamon's own lean "
        "loop instead of pynetdicom's generic one (about half the CPU per instance); false is the "
        "fallback should a sender misbehave with it.",
        default=True,
    )
    store_workers: int = _doc(
        "Processes receiving storage associations beside the main one (with `direct_store`; plain "
        "TCP only): parallel senders then use several cores. 0 = none, -1 = one per CPU core.",
        default=-1,
    )
    store_workers_idle_stop: float = _doc(
        "Seconds without a store after which the store workers end, giving back their memory (~60 MiB "
        "each); they start on the first storage association or STOW-RS request, which waits about a "
        "second for them. 0 = start them with the listener and keep them running.",
        default=300.0,
    )
    network_timeout: float = _doc("Seconds of network silence before an association is aborted.", default=60.0)
    acse_timeout: float = _doc("Seconds to wait for association negotiation messages.", default=30.0)
    dimse_timeout: float = _doc("Seconds to wait for a DIMSE message from a peer.", default=60.0)
    remote: tuple[RemoteAE, ...] = _doc(
        "Known peers: C-MOVE destinations, storage commitment reply addresses and, when "
        "`accept_unknown_callers` is false, the only callers accepted. File only.",
        default=(),
    )


@dataclass(frozen=True)
class HttpSettings:
    host: str = _doc("Address the HTTP listener binds to.", default="0.0.0.0")
    port: int = _doc("HTTP port (DICOMweb, REST API, health and metrics).", default=8080)
    base_path: str = _doc("Path under which the DICOMweb services live.", default="/dicom-web")
    cors_origins: str = _doc(
        "Comma-separated origins allowed to call the API from a browser (`*` for any); empty: none.",
        default="",
    )
    workers: int = _doc("Threads serving archive calls for the HTTP door.", default=8)
    metadata_prepare_delay: float = _doc(
        "Seconds after a series' last new instance before its WADO-RS metadata is rendered in the "
        "background, so the first viewer to open it reads it from the cache. 0 = only on request.",
        default=10.0,
    )


@dataclass(frozen=True)
class Hl7Settings:
    host: str = _doc("Address the HL7 MLLP listener binds to.", default="0.0.0.0")
    port: int = _doc("HL7 v2 MLLP listening port.", default=2575)
    application: str = _doc(
        "Pergamon's HL7 application name: MSH-3 of the messages it sends, and of ACKs to messages "
        "that left MSH-5 empty.",
        default="PERGAMON",
    )
    max_message_bytes: int = _doc(
        "Largest HL7 message accepted (bytes); a longer one is kept cut to this size and rejected (AR).",
        default=10 * 1024 * 1024,
    )
    workers: int = _doc("Threads running HL7 message handlers (messages of one connection run in order).", default=4)
    idle_timeout: float = _doc("Seconds an MLLP connection may stay silent before Pergamon closes it.", default=600.0)


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = _doc(
        "SQLAlchemy URL of the index. Empty: SQLite at `<data_dir>/index.sqlite`. PostgreSQL: "
        "`postgresql+psycopg://user@host:5432/dbname`.",
        default="",
    )
    pool_size: int = _doc("Connections kept open to PostgreSQL.", default=8)
    maintenance_interval: float = _doc(
        "PostgreSQL with autovacuum off: seconds between Pergamon's checks of its tables, which it "
        "then ANALYZEs and VACUUMs by autovacuum's own thresholds (stale statistics make queries slow). "
        "0: never. Nothing is done with autovacuum on, or on SQLite.",
        default=60.0,
    )


@dataclass(frozen=True)
class StorageSettings:
    path: str = _doc("Folder of stored objects. Empty: `<data_dir>/blobs`.", default="")
    fsync: bool = _doc(
        "fsync every stored object and its folder before acknowledging it. Turn off only for "
        "throw-away test archives: a crash may then lose acknowledged objects.",
        default=True,
    )


@dataclass(frozen=True)
class QuerySettings:
    pn_case_sensitive: bool = _doc(
        "Match person names case-sensitively (PS3.4 leaves it to the SCP; most users expect not).",
        default=False,
    )
    max_results: int = _doc("Most C-FIND responses per request (0 = no limit).", default=0)


@dataclass(frozen=True)
class JobSettings:
    poll_interval: float = _doc("Seconds between checks of the job queue when idle.", default=1.0)
    retry_delay: float = _doc("Seconds before the first retry of a failed job; doubles each time.", default=5.0)
    retry_max_delay: float = _doc("Longest wait between two retries of a job, in seconds.", default=600.0)
    max_attempts: int = _doc("Attempts before a job is marked failed (0 = retry forever).", default=0)


@dataclass(frozen=True)
class TlsSettings:
    certificate: str = _doc(
        "PEM file of this node's certificate (with its chain). Empty: no TLS listeners.", default=""
    )
    private_key: str = _doc("PEM file of the certificate's private key.", default="")
    ca_certificates: str = _doc("PEM bundle of the CAs whose certificates peers must present.", default="")
    verify_peers: bool = _doc(
        "Mutual TLS node authentication: TLS listeners require a client certificate from `ca_certificates`, "
        "and TLS clients verify the server's.",
        default=True,
    )
    dicom_port: int = _doc("DICOM TLS listening port (0: none; the plain `dicom.port` stays open).", default=0)
    http_port: int = _doc("HTTPS listening port (0: none; the plain `http.port` stays open).", default=0)
    hl7_port: int = _doc("HL7 MLLP over TLS listening port (0: none).", default=0)
    legacy_cipher: bool = _doc(
        'Also offer TLS_RSA_WITH_AES_128_CBC_SHA (TLS 1.2 only), the suite of the older ATNA "TLS" '
        "option, for peers that know no other. Off: RFC 9325 advises against static RSA.",
        default=False,
    )


@dataclass(frozen=True)
class AuditSettings:
    enabled: bool = _doc("Emit DICOM PS3.15 A.5 audit messages for every audited event.", default=True)
    repositories: str = _doc(
        "Comma-separated Audit Record Repositories: `udp://host:port` (RFC 5426) or `tls://host:port` "
        "(RFC 5425). Default: Pergamon's own repository.",
        default="udp://127.0.0.1:5514",
    )
    source_id: str = _doc("Audit Source ID of the messages. Empty: the DICOM AE title.", default="")
    enterprise_site_id: str = _doc("Audit Enterprise Site ID of the messages (optional).", default="")
    transfer_batch_seconds: float = _doc(
        "Instances a peer stores of one study are audited in one DICOM Instances Transferred message, "
        "sent once no more came for this many seconds (at most 10 times as long after the first, and "
        "at most 1000 instances per message). 0: one message per instance.",
        default=1.0,
    )


@dataclass(frozen=True)
class AuditRepositorySettings:
    enabled: bool = _doc("Run Pergamon's own Audit Record Repository (syslog receiver + search).", default=True)
    host: str = _doc("Address the repository's syslog listeners bind to.", default="0.0.0.0")
    udp_port: int = _doc("Syslog over UDP port (RFC 5426).", default=5514)
    tls_port: int = _doc("Syslog over TLS port (RFC 5425); listens only when `tls.certificate` is set.", default=6514)
    max_message_bytes: int = _doc(
        "Largest syslog message kept whole; longer ones are kept truncated and flagged.", default=65536
    )


@dataclass(frozen=True)
class TimeSettings:
    servers: str = _doc(
        "Comma-separated NTP servers (`host` or `host:port`) to check the clock against. Empty: no check.", default=""
    )
    check_interval: float = _doc("Seconds between clock checks.", default=600.0)
    max_offset: float = _doc("Clock offset in seconds above which Pergamon warns and audits.", default=1.0)


@dataclass(frozen=True)
class PixSettings:
    """PIX Consumer (ITI-9 query, ITI-10 update notifications): the PIX Manager and our identifier domain."""

    manager_host: str = _doc("Host of the PIX Manager queried with ITI-9 (QBP^Q23). Empty: no PIX queries.", default="")
    manager_port: int = _doc("MLLP port of the PIX Manager.", default=3600)
    manager_tls: bool = _doc("Query the PIX Manager over MLLP inside TLS (the `[tls]` policy).", default=False)
    timeout: float = _doc("Seconds to wait for the PIX Manager's answer to a query.", default=10.0)
    sending_application: str = _doc("MSH-3 Sending Application of our PIX queries.", default="PERGAMON")
    sending_facility: str = _doc("MSH-4 Sending Facility of our PIX queries.", default="PERGAMON")
    receiving_application: str = _doc("MSH-5 Receiving Application: the PIX Manager's name.", default="PIX_MANAGER")
    receiving_facility: str = _doc("MSH-6 Receiving Facility: the PIX Manager's facility.", default="")
    assigning_authority: str = _doc(
        "Namespace ID of Pergamon's own patient identifier domain (CX-4.1); patients stored without "
        "Issuer of Patient ID belong to it.",
        default="PERGAMON",
    )
    assigning_authority_uid: str = _doc(
        "Universal ID (ISO OID) of Pergamon's own identifier domain (CX-4.2). Empty: only the namespace is sent.",
        default="",
    )


@dataclass(frozen=True)
class WorkflowSettings:
    mpps_forward: tuple[str, ...] = _doc(
        "AE titles (each a `[[dicom.remote]]`) every received MPPS is forwarded to, unchanged and with the "
        'same SOP Instance UID (IHE PPS Manager: Order Filler, Report Manager), e.g. `["RIS"]`. File only.',
        default=(),
    )
    ian_destinations: tuple[str, ...] = _doc(
        "AE titles (each a `[[dicom.remote]]`) sent an Instance Availability Notification (IHE RAD-49) once "
        "every instance a completed or discontinued MPPS references is stored. File only.",
        default=(),
    )


@dataclass(frozen=True)
class ViewerSettings:
    enabled: bool = _doc(
        "Serve the bundled web viewer (OHIF) at `/viewer/` and the study list at `/ui/studies`.", default=True
    )
    path: str = _doc(
        "Folder of the installed viewer (`pergamon viewer install` writes it). Empty: "
        "`<python prefix>/share/pergamon-viewer`, i.e. `.venv/share/pergamon-viewer`.",
        default="",
    )


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    dicom: DicomSettings = field(default_factory=DicomSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    hl7: Hl7Settings = field(default_factory=Hl7Settings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    query: QuerySettings = field(default_factory=QuerySettings)
    jobs: JobSettings = field(default_factory=JobSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    audit_repository: AuditRepositorySettings = field(default_factory=AuditRepositorySettings)
    time: TimeSettings = field(default_factory=TimeSettings)
    viewer: ViewerSettings = field(default_factory=ViewerSettings)
    workflow: WorkflowSettings = field(default_factory=WorkflowSettings)
    pix: PixSettings = field(default_factory=PixSettings)

    @property
    def database_url(self) -> str:
        """The index URL, defaulting to SQLite inside the data folder."""
        if self.database.url:
            return self.database.url
        return f"sqlite:///{(self.server.data_dir / 'index.sqlite').resolve()}"

    @property
    def blob_path(self) -> Path:
        """The folder of stored objects."""
        return Path(self.storage.path) if self.storage.path else self.server.data_dir / "blobs"

    @property
    def viewer_path(self) -> Path:
        """The folder of the installed web viewer."""
        return Path(self.viewer.path) if self.viewer.path else Path(sys.prefix) / "share" / "pergamon-viewer"

    def remote_ae(self, ae_title: str) -> RemoteAE | None:
        """The configured peer with this AE title, if any."""
        for remote in self.dicom.remote:
            if remote.ae_title == ae_title.strip():
                return remote
        return None


_PORT_KEYS = {"port", "udp_port", "tls_port"}
_OPTIONAL_PORT_KEYS = {"tls.dicom_port", "tls.http_port", "tls.hl7_port"}
_AUTO_KEYS = {"dicom.store_workers"}  # -1 means "one per CPU core"
_POSITIVE_KEYS = {
    "max_associations",
    "pool_size",
    "poll_interval",
    "retry_delay",
    "retry_max_delay",
    "workers",
    "check_interval",
    "max_offset",
    "max_message_bytes",
    "idle_timeout",
}


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the TOML file (if any), apply ``PERGAMON_*`` overrides and validate everything.

    Raises:
        ConfigError: naming the first bad key and what is wrong with it.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path}: not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: not valid TOML ({exc})") from None
    env = os.environ if environ is None else environ
    _apply_environment(raw, env)
    settings: Settings = _build(Settings, raw, "")
    seen: set[str] = set()
    for i, remote in enumerate(settings.dicom.remote):
        if not remote.ae_title:
            raise ConfigError(f"dicom.remote[{i}].ae_title: required for every [[dicom.remote]]")
        if remote.ae_title in seen:
            raise ConfigError(f"dicom.remote[{i}].ae_title: {remote.ae_title} is listed twice")
        seen.add(remote.ae_title)
    _check_tls(settings)
    _check_workflow(settings)
    return settings


def _check_workflow(settings: Settings) -> None:
    """Every MPPS forwarding and IAN destination is a configured `[[dicom.remote]]` (its address is needed)."""
    known = {remote.ae_title for remote in settings.dicom.remote}
    for key in ("mpps_forward", "ian_destinations"):
        for i, title in enumerate(getattr(settings.workflow, key)):
            if title.strip() not in known:
                raise ConfigError(
                    f"workflow.{key}[{i}]: {title!r} is not the ae_title of any [[dicom.remote]] "
                    f"(known: {', '.join(sorted(known)) or 'none'})"
                )


def _check_tls(settings: Settings) -> None:
    """TLS ports distinct from the plain ones; certificate, key and CA files present and loadable."""
    from pergamon.security import tls

    plain = {"dicom.port": settings.dicom.port, "http.port": settings.http.port, "hl7.port": settings.hl7.port}
    for key in ("dicom_port", "http_port", "hl7_port"):
        port = getattr(settings.tls, key)
        clash = [name for name, value in plain.items() if value == port]
        if port and clash:
            raise ConfigError(f"tls.{key}: {port} is also {clash[0]}")
    tls.check(settings)


def _apply_environment(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    """Copy ``PERGAMON_SECTION_KEY`` variables into the raw tree (as strings, parsed later)."""
    known: dict[str, tuple[str, str]] = {}
    for section in dataclasses.fields(Settings):
        for key in dataclasses.fields(_section_type(section)):
            known[f"{ENV_PREFIX}{section.name}_{key.name}".upper()] = (section.name, key.name)
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name in ("PERGAMON_CONFIG",):
            continue
        if name.startswith("PERGAMON_TEST_"):
            continue
        if name not in known:
            raise ConfigError(f"environment variable {name}: not a Pergamon setting")
        section, key = known[name]
        raw.setdefault(section, {})[key] = _EnvString(value)


class _EnvString(str):
    """A value that came from the environment: parsed from text rather than TOML-typed."""


def _section_type(section: dataclasses.Field[Any]) -> type[Any]:
    hints = typing.get_type_hints(Settings)
    return typing.cast(type[Any], hints[section.name])


def _build(cls: type[Any], raw: Any, prefix: str) -> Any:
    """Construct dataclass `cls` from a TOML table, checking keys and types."""
    where = prefix.rstrip(".") or "config"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key (known: {', '.join(sorted(names))})")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in raw:
            values[f.name] = _convert(hints[f.name], raw[f.name], f"{prefix}{f.name}")
    return cls(**values)


def _convert(hint: Any, value: Any, key: str) -> Any:
    """Check and convert one value to the field's type; env strings are parsed."""
    origin = get_origin(hint)
    from_env = isinstance(value, _EnvString)
    if dataclasses.is_dataclass(hint):
        return _build(typing.cast(type[Any], hint), value, f"{key}.")
    if origin is tuple:
        (item_type, _ellipsis) = get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected an array of tables ([[{key}]])")
        return tuple(_convert(item_type, item, f"{key}[{i}]") for i, item in enumerate(value))
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise ConfigError(f"{key}: must be one of {', '.join(map(str, choices))}; got {value!r}")
        return str(value)
    if hint is bool:
        if from_env:
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
        elif isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if hint is int:
        number = _parse_number(int, value, key, from_env)
        _check_range(key, number)
        return number
    if hint is float:
        number = _parse_number(float, value, key, from_env)
        _check_range(key, number)
        return number
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}: expected a non-empty path string, got {value!r}")
        return Path(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        if key.endswith("ae_title"):
            _check_ae_title(key, value)
        return str(value)
    if isinstance(hint, types.UnionType):  # pragma: no cover - no such field yet
        raise ConfigError(f"{key}: unsupported type")
    raise ConfigError(f"{key}: unsupported type {hint!r}")  # pragma: no cover


def _parse_number(kind: type[int] | type[float], value: Any, key: str, from_env: bool) -> Any:
    if from_env:
        try:
            return kind(value.strip())
        except ValueError:
            pass
    elif isinstance(value, bool):
        pass
    elif isinstance(value, int) or (kind is float and isinstance(value, float)):
        return kind(value)
    noun = "an integer" if kind is int else "a number"
    raise ConfigError(f"{key}: expected {noun}, got {value!r}")


def _check_range(key: str, number: float) -> None:
    name = key.rsplit(".", 1)[-1]
    if key in _OPTIONAL_PORT_KEYS and not 0 <= number <= 65535:
        raise ConfigError(f"{key}: port must be between 0 (none) and 65535, got {number}")
    if name in _PORT_KEYS and not 1 <= number <= 65535:
        raise ConfigError(f"{key}: port must be between 1 and 65535, got {number}")
    if name in _POSITIVE_KEYS and number <= 0:
        raise ConfigError(f"{key}: must be greater than 0, got {number}")
    if key in _AUTO_KEYS and number == -1:
        return
    if number < 0:
        raise ConfigError(f"{key}: must not be negative, got {number}")


def _check_ae_title(key: str, value: str) -> None:
    """PS3.5 AE VR: 1-16 characters of the default repertoire, no backslash or control chars."""
    stripped = value.strip()
    if not stripped:
        raise ConfigError(f"{key}: an AE title must not be empty")
    if len(stripped) > 16:
        raise ConfigError(f"{key}: AE titles have at most 16 characters, got {len(stripped)}")
    if any(ch == "\\" or ord(ch) < 32 or ord(ch) > 126 for ch in stripped):
        raise ConfigError(f"{key}: AE titles use printable ASCII without backslash, got {value!r}")


def describe(cls: type[Any] = Settings, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, default, environment variable, description) for every setting, for the docs."""
    rows: list[tuple[str, str, str, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            rows.extend(describe(typing.cast(type[Any], hint), f"{prefix}{f.name}."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else ""
        shown = "[]" if default == () else repr(default if not isinstance(default, Path) else str(default))
        shown = shown.replace("'", '"').lower() if isinstance(default, bool) else shown.replace("'", '"')
        env = "(file only)" if get_origin(hint) is tuple else f"{ENV_PREFIX}{prefix}{f.name}".replace(".", "_").upper()
        rows.append((f"{prefix}{f.name}", shown, env, f.metadata.get("doc", "")))
    return rows


def markdown_table() -> str:
    """The configuration reference as a Markdown table."""
    lines = ["| key | default | environment | meaning |", "|---|---|---|---|"]
    for key, default, env, doc in describe():
        lines.append(f"| `{key}` | `{default}` | `{env}` | {doc} |")
    return "\n".join(lines) + "\n"
