"""Audit Record Repository (ITI TF-2 3.20, ATX: UDP Syslog + TLS Syslog) and its ITI-81 FHIR search.

Real syslog reaches the repository: datagrams written by hand per RFC 5426, TLS streams per
RFC 5425 (octet counting) and RFC 6587 (LF-terminated), and a private rsyslogd (``apt-get install
rsyslog rsyslog-gnutls``) forwarding with omfwd over UDP and TLS. The ATNA samples and the
malformed inputs come from ``../shared/schemas/atna`` (see shared/schemas/SOURCES.md).
"""

from __future__ import annotations

import base64
import dataclasses
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import httpx
import pytest
from conftest import free_port, make_settings, require_tool, wait_for_port
from sqlalchemy import func, select

from pergamon.archive.index.schema import audit_record
from pergamon.archive.service import Archive
from pergamon.audit.repository import AuditRepository, Received, row, store
from pergamon.config import Settings
from pergamon.security.certs import create_lab_pki
from pergamon.web.server import HttpServer

pytestmark = [pytest.mark.interop]

VENDORED = Path(__file__).resolve().parents[1] / "data" / "atna"  # the Apache-2.0 IPF samples
ATNA = Path(os.environ.get("PERGAMON_ATNA_SAMPLES", Path(__file__).resolve().parents[3] / "shared/schemas/atna"))
IPF_SAMPLES = ("start.xml", "stop.xml", "pixquery.xml", "pdqv3.xml")
GTLS_DRIVER = Path("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so")
BOM = b"\xef\xbb\xbf"
CAROL = {"user": "carol", "user_name": "Carol", "source": "PACS-B"}


def atna(*parts: str) -> Path:
    """A sample file: vendored when its licence allows, else from shared/schemas/atna (skip without it).

    The malformed inputs are reference data without a licence, not a peer: their absence skips
    even on CI; tests/unit/audit/test_syslog.py reproduces each of their defects inline.
    """
    vendored = VENDORED.joinpath(*parts)
    if vendored.exists():
        return vendored
    path = ATNA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is missing (set PERGAMON_ATNA_SAMPLES to shared/schemas/atna)")
    return path


def syslog(xml: bytes, *, msgid: str = "IHE+RFC-3881", host: str = "modality-1", bom: bool = False) -> bytes:
    """An ITI-20 message (RFC 5424 6: PRI 85 = authpriv.notice, VERSION 1, no STRUCTURED-DATA)."""
    header = f"<85>1 2024-05-06T07:08:09.123Z {host} pergamon-test 4242 {msgid} - ".encode()
    return header + (BOM if bom else b"") + xml


def audit_xml(
    *,
    event: str = "110112",
    subtype: tuple[str, str] = ("ITI-9", "IHE Transactions"),
    when: str = "2024-05-06T07:08:09Z",
    user: str = "alice",
    user_name: str = "Alice Liddell",
    address: str = "10.1.2.3",
    patient: str = "PID-1^^^&1.2.3.4&ISO",
    study: str = "1.2.840.99.1",
    source: str = "PACS-A",
    outcome: str = "0",
) -> bytes:
    """A DICOM PS3.15 A.5.1 audit message with the values the search tests look for."""
    patient = escape(patient)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<AuditMessage>\n'
        f'\t<EventIdentification EventActionCode="R" EventDateTime="{when}" EventOutcomeIndicator="{outcome}">\n'
        f'\t\t<EventID csd-code="{event}" codeSystemName="DCM" originalText="Event {event}"/>\n'
        f'\t\t<EventTypeCode csd-code="{subtype[0]}" codeSystemName="{subtype[1]}" originalText="Subtype"/>\n'
        "\t</EventIdentification>\n"
        f'\t<ActiveParticipant UserID="{user}" UserName="{user_name}" UserIsRequestor="true" '
        f'NetworkAccessPointID="{address}" NetworkAccessPointTypeCode="2">\n'
        '\t\t<RoleIDCode csd-code="110153" codeSystemName="DCM" originalText="Source Role ID"/>\n'
        "\t</ActiveParticipant>\n"
        f'\t<AuditSourceIdentification AuditSourceID="{source}"/>\n'
        f'\t<ParticipantObjectIdentification ParticipantObjectID="{patient}" ParticipantObjectTypeCode="1" '
        'ParticipantObjectTypeCodeRole="1">\n'
        '\t\t<ParticipantObjectIDTypeCode csd-code="2" codeSystemName="RFC-3881" originalText="Patient Number"/>\n'
        "\t\t<ParticipantObjectName>Müller^Jürgen «Łukasz»</ParticipantObjectName>\n"
        "\t</ParticipantObjectIdentification>\n"
        f'\t<ParticipantObjectIdentification ParticipantObjectID="{study}" ParticipantObjectTypeCode="2" '
        'ParticipantObjectTypeCodeRole="3">\n'
        '\t\t<ParticipantObjectIDTypeCode csd-code="110180" codeSystemName="DCM" originalText="Study Instance UID"/>\n'
        "\t</ParticipantObjectIdentification>\n</AuditMessage>"
    ).encode()


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "pki"
    server, client = create_lab_pki(folder, ["server,127.0.0.1,localhost", "client,127.0.0.1"], key_size=2048)
    return {
        "ca": folder / "ca.pem",
        "server": server.certificate,
        "server_key": server.private_key,
        "client": client.certificate,
        "client_key": client.private_key,
    }


def repository_settings(tmp_path: Path, database_url: str, pki: dict[str, Path], max_bytes: int = 8192) -> Settings:
    base = make_settings(tmp_path / "data", database_url)
    return dataclasses.replace(
        base,
        tls=dataclasses.replace(
            base.tls,
            certificate=str(pki["server"]),
            private_key=str(pki["server_key"]),
            ca_certificates=str(pki["ca"]),
            verify_peers=True,
        ),
        audit_repository=dataclasses.replace(base.audit_repository, max_message_bytes=max_bytes),
    )


@pytest.fixture
def archive(tmp_path: Path, database_url: str, pki: dict[str, Path]) -> Iterator[Archive]:
    core = Archive.open(repository_settings(tmp_path, database_url, pki))
    yield core
    core.close()


@pytest.fixture
def repository(archive: Archive) -> Iterator[AuditRepository]:
    repo = AuditRepository(archive)
    repo.idle_timeout = 2.0
    repo.handshake_timeout = 2.0
    repo.start()
    yield repo
    repo.stop()


@pytest.fixture
def fhir(archive: Archive) -> Iterator[httpx.Client]:
    """An HTTP client of Pergamon's web door (where ITI-81 lives) on the test archive."""
    http = HttpServer(archive)
    http.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{archive.settings.http.port}", timeout=30) as client:
            yield client
    finally:
        http.stop()


def send_udp(repo: AuditRepository, *messages: bytes) -> None:
    assert repo.udp_address is not None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for message in messages:
            s.sendto(message, repo.udp_address)


def tls_client(repo: AuditRepository, pki: dict[str, Path]) -> ssl.SSLSocket:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(pki["ca"])
    context.load_cert_chain(pki["client"], pki["client_key"])
    assert repo.tls_address is not None
    raw = socket.create_connection(repo.tls_address, timeout=10)
    return context.wrap_socket(raw)


def send_tls(repo: AuditRepository, pki: dict[str, Path], *chunks: bytes, pause: float = 0.0) -> None:
    """Send over one TLS connection and close it cleanly (close_notify both ways, so nothing is reset)."""
    with tls_client(repo, pki) as conn:
        for chunk in chunks:
            conn.sendall(chunk)
            time.sleep(pause)
        conn.unwrap().close()


def octets(message: bytes) -> bytes:
    """RFC 5425 4.3 octet-counting frame: MSG-LEN SP SYSLOG-MSG."""
    return str(len(message)).encode() + b" " + message


def stored(archive: Archive) -> list[Any]:
    with archive.db.read() as conn:
        return list(conn.execute(select(audit_record).order_by(audit_record.c.pk)))


def wait_records(archive: Archive, count: int, timeout: float = 15.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        with archive.db.read() as conn:
            n = conn.execute(select(func.count()).select_from(audit_record)).scalar_one()
        if n >= count or time.monotonic() > deadline:
            return stored(archive)
        time.sleep(0.05)


def search(client: httpx.Client, query: str = "", status: int = 200) -> dict[str, Any]:
    response = client.get(f"/fhir/AuditEvent?{query}")
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body: dict[str, Any] = response.json()
    return body


def ids(bundle: dict[str, Any]) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", [])}


def validate_r4(resource: dict[str, Any]) -> None:
    """FHIR R4 shape (fhir.resources, R4B = R4 for AuditEvent), plus the elements ITI-81 relies on."""
    from fhir.resources.R4B.auditevent import AuditEvent

    AuditEvent.model_validate(resource)
    assert resource["resourceType"] == "AuditEvent"
    assert resource["type"]["code"] and resource["recorded"] and resource["agent"]
    assert resource["source"]["observer"]


# -- transports -----------------------------------------------------------------------------------


def test_samples_over_udp_and_tls_are_stored_and_searchable(
    repository: AuditRepository, archive: Archive, fhir: httpx.Client, pki: dict[str, Path]
) -> None:
    samples = [atna("samples", n) for n in IPF_SAMPLES] + sorted(atna("samples", "ehealthsuisse").glob("*.xml"))
    messages = [syslog(p.read_bytes(), bom=i % 2 == 0) for i, p in enumerate(samples)]
    send_udp(repository, *messages)
    send_tls(repository, pki, b"".join(octets(m) for m in messages))
    rows = wait_records(archive, 2 * len(messages))
    assert len(rows) == 2 * len(messages)
    assert {r.transport for r in rows} == {"udp", "tls"}
    assert sorted(r.raw for r in rows) == sorted(messages * 2)  # byte-exact, BOM and UTF-8 included
    for r in rows:
        if r.raw.endswith(tuple(atna("samples", n).read_bytes() for n in IPF_SAMPLES)):
            assert r.flag is None, r.detail
    # every sample is found again, by its event type and one of its participant object IDs
    bundle = search(fhir, "type=110112&_count=100")
    assert bundle["total"] == 2 * 4  # pixquery, pdqv3, iti-18, iti-47 (Query)
    assert len(search(fhir, "entity-id=10501108")["entry"]) == 2  # pixquery's query object
    assert search(fhir, "subtype=urn:ihe:event-type-code|ITI-9")["total"] == 2
    assert search(fhir, "type=110100&subtype=110120")["total"] == 2  # start.xml
    everything = search(fhir, "_count=1000")
    for entry in everything["entry"]:
        validate_r4(entry["resource"])


def test_tls_framing_octet_counting_and_lf(repository: AuditRepository, archive: Archive, pki: dict[str, Path]) -> None:
    one, two, three, four = (syslog(audit_xml(user=f"user-{i}")) for i in range(4))
    send_tls(
        repository,
        pki,
        octets(one) + octets(two)[:5],  # two frames, the second split mid-header
        octets(two)[5:],
        three.replace(b"\n", b" ") + b"\n",  # RFC 6587 non-transparent framing
        octets(four),
        pause=0.1,
    )
    rows = wait_records(archive, 4)
    assert [r.raw for r in rows] == [one, two, three.replace(b"\n", b" "), four]
    assert all(r.flag is None for r in rows), [r.detail for r in rows]


def test_malformed_inputs_are_kept_flagged(
    repository: AuditRepository, archive: Archive, fhir: httpx.Client, pki: dict[str, Path]
) -> None:
    inputs = sorted(atna("arr-robustness-inputs").iterdir())
    assert len(inputs) == 9
    payloads = [p.read_bytes() for p in inputs]
    garbage = [b"\x00\xff\xfe not syslog at all", b"<13>Oct 11 22:14:15 mymachine su: BSD syslog", b"<85>1 - - - - - -"]
    send_udp(repository, *payloads, *garbage)
    rows = wait_records(archive, len(payloads) + len(garbage))
    assert len(rows) == len(payloads) + len(garbage)
    assert sorted(r.raw for r in rows) == sorted(payloads + garbage)
    assert all(r.flag for r in rows), [(r.raw[:40], r.flag) for r in rows if not r.flag]
    final = syslog(audit_xml(user="after-the-storm"))
    send_tls(repository, pki, b"".join(octets(p) for p in payloads), octets(final))
    rows = wait_records(archive, 2 * len(payloads) + len(garbage) + 1)
    assert sorted(r.raw for r in rows if r.transport == "tls") == sorted([*payloads, final])
    last = rows[-1]
    assert last.flag is None and b"after-the-storm" in last.raw
    flagged = search(fhir, "_tag=urn:pergamon:audit-flag|syslog-header&_count=100")
    assert flagged["total"] >= 3
    for entry in search(fhir, "_count=100")["entry"]:
        resource = entry["resource"]
        validate_r4(resource)
        if resource["id"] != str(last.pk):
            assert resource["meta"]["tag"], resource
            raw = next(e for e in resource["extension"] if e["url"].endswith("syslog-message"))
            assert base64.b64decode(raw["valueBase64Binary"]) in {r.raw for r in rows}


def test_oversize_message_is_kept_truncated_and_flagged(
    tmp_path: Path, database_url: str, pki: dict[str, Path]
) -> None:
    core = Archive.open(repository_settings(tmp_path, database_url, pki, max_bytes=2048))
    repo = AuditRepository(core)
    repo.start()
    try:
        big = syslog(audit_xml(user="x" * 5000))
        small = syslog(audit_xml(user="small"))
        send_udp(repo, big)
        send_tls(
            repo,
            pki,
            octets(big) + octets(small),  # the stream resynchronises after the oversize frame
            big.replace(b"\n", b" ") + b"\n" + small.replace(b"\n", b" ") + b"\n",
        )
        rows = wait_records(core, 5)
        assert len(rows) == 5
        oversize = [r for r in rows if r.flag and "oversize" in r.flag]
        assert len(oversize) == 3
        for r in oversize:
            assert len(r.raw) == 2048 and big.replace(b"\n", b" ")[:2048] in (r.raw, r.raw.replace(b"\n", b" "))
        assert [r.size for r in oversize if r.transport == "udp"] == [len(big)]
        assert sum(1 for r in rows if r.flag is None and b"small" in r.raw) == 2
    finally:
        repo.stop()
        core.close()


def test_stalled_tls_client_does_not_block_others(
    repository: AuditRepository, archive: Archive, pki: dict[str, Path], request: pytest.FixtureRequest
) -> None:
    assert repository.tls_address is not None
    silent = socket.create_connection(repository.tls_address)  # never starts the handshake
    stalled = tls_client(repository, pki)
    request.addfinalizer(silent.close)
    request.addfinalizer(stalled.close)
    partial = octets(syslog(audit_xml(user="stalled")))
    stalled.sendall(partial[:200])  # a frame begun and never finished
    started = time.monotonic()
    send_tls(repository, pki, octets(syslog(audit_xml(user="unhindered"))))
    rows = wait_records(archive, 1, timeout=5)
    assert time.monotonic() - started < 5
    assert b"unhindered" in rows[0].raw
    # the stalled peers time out; the unfinished frame is kept, flagged
    rows = wait_records(archive, 2, timeout=10)
    cut = [r for r in rows if b"unhindered" not in r.raw]
    assert len(cut) == 1 and cut[0].flag and "incomplete-frame" in cut[0].flag
    assert cut[0].raw == partial[partial.index(b" ") + 1 : 200]  # the MSG-LEN prefix is not part of the message
    silent.settimeout(10)
    assert silent.recv(1) == b""  # closed by the handshake timeout
    silent.close()
    stalled.close()


def test_peer_without_certificate_is_refused(
    repository: AuditRepository, archive: Archive, pki: dict[str, Path]
) -> None:
    """Mutual TLS (ITI-19): no client certificate, no message; the refusal goes to the audit trail."""
    refused: list[Any] = []
    archive.bus.subscribe(lambda event: refused.append(event) if event.name == "node-authentication-failed" else None)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(pki["ca"])
    assert repository.tls_address is not None
    with socket.create_connection(repository.tls_address, timeout=10) as raw:
        try:
            with context.wrap_socket(raw) as conn:  # TLS 1.3: the server refuses after the client's Finished
                conn.sendall(octets(syslog(audit_xml())))
                assert conn.recv(1) == b""
        except (ssl.SSLError, OSError):
            pass
    deadline = time.monotonic() + 10
    while not refused and time.monotonic() < deadline:
        time.sleep(0.05)
    assert refused and refused[0].door == "syslog"
    assert repository.flush() and stored(archive) == []


# -- ITI-81 search --------------------------------------------------------------------------------


@pytest.fixture
def corpus(archive: Archive) -> dict[str, int]:
    """Five records with known values, stored directly (the transports are tested above)."""
    messages = {
        "alice-query": audit_xml(),
        "bob-store": audit_xml(
            event="110104",
            subtype=("110104", "DCM"),
            when="2024-05-07T10:00:00+02:00",
            user="bob",
            user_name="Bob Builder",
            address="10.9.9.9",
            patient="PID-2^^^&1.2.3.4&ISO",
            study="1.2.840.99.2",
            source="MODALITY-B",
        ),
        "alice-failed": audit_xml(when="2024-05-08T00:00:00Z", outcome="8", study="1.2.840.99.3"),
        "carol-start": audit_xml(event="110100", subtype=("110120", "DCM"), when="2023-12-31T23:59:59.5Z", **CAROL),
    }
    pks = store(
        archive, [row(Received(syslog(m), "udp", "127.0.0.1:1", time.time(), len(m))) for m in messages.values()]
    )
    bad = store(archive, [row(Received(b"garbage", "udp", "10.0.0.66:514", 1_700_000_000.0, 7))])
    return {**dict(zip(messages, map(str, pks), strict=True)), "garbage": str(bad[0])}


def test_search_parameters(corpus: dict[str, int], fhir: httpx.Client) -> None:
    c = corpus

    def found(query: str) -> set[str]:
        return ids(search(fhir, query + "&_count=100"))

    def names(*keys: str) -> set[str]:
        return {str(c[k]) for k in keys}

    assert found("_sort=date") == names(*c)
    # time (recorded = EventDateTime; bob's is 08:00Z)
    assert found("date=ge2024-05-06&date=lt2024-05-08") == names("alice-query", "bob-store")
    assert found("date=2024-05-07") == names("bob-store")
    assert found("date=gt2024-05-07T08:00:00Z") == names("alice-failed")
    assert found("date=le2023") == names("carol-start", "garbage")
    assert found("date=eb2024-01-01T00:00:00-01:00") == names("carol-start", "garbage")
    # event
    assert found("type=110112") == names("alice-query", "alice-failed")
    assert found("type=http://dicom.nema.org/resources/ontology/DCM|110104,110100") == names("bob-store", "carol-start")
    assert found("type=urn:other|110104") == set()
    assert found("subtype=urn:ihe:event-type-code|ITI-9") == names("alice-query", "alice-failed")
    assert found("subtype=110120") == names("carol-start")
    assert found("outcome=8") == names("alice-failed")
    assert found("action=R&type=110100") == names("carol-start")
    # user
    assert found("agent=bob") == names("bob-store")
    assert found("agent-name=ali") == names("alice-query", "alice-failed")
    assert found("agent-name:exact=bob builder") == names("bob-store")
    assert found("agent-name:contains=build") == names("bob-store")
    assert found("address=10.9") == names("bob-store")
    # patient and study
    assert found("patient.identifier=PID-2") == names("bob-store")
    assert found("patient.identifier=urn:oid:1.2.3.4|PID-1") == names("alice-query", "alice-failed", "carol-start")
    assert found("patient.identifier=urn:oid:9.9|PID-1") == set()
    assert found("entity-id=1.2.840.99.3") == names("alice-failed")
    assert found("entity-type=2&entity-id=1.2.840.99.2") == names("bob-store")
    # source
    assert found("source=PACS-B") == names("carol-start")
    assert found("_tag=syslog-header") == names("garbage")
    assert found(f"_id={c['bob-store']}") == names("bob-store")


def test_paging_and_errors(corpus: dict[str, int], fhir: httpx.Client) -> None:
    first = search(fhir, "_count=2&_sort=-date")
    assert first["total"] == 5 and first["type"] == "searchset" and len(first["entry"]) == 2
    seen = ids(first)
    link = next(link["url"] for link in first["link"] if link["relation"] == "next")
    while link:
        page = fhir.get(link).json()
        seen |= ids(page)
        link = next((x["url"] for x in page["link"] if x["relation"] == "next"), None)
    assert seen == {str(v) for v in corpus.values()}
    for bad in ("foo=bar", "date=yesterday", "date=2024-13-01", "_count=-1", "agent:missing=true", "_sort=name"):
        outcome = search(fhir, bad, status=400)
        assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["severity"] == "error"
    assert fhir.get("/fhir/AuditEvent/999999").status_code == 404
    assert fhir.get("/fhir/AuditEvent/abc").json()["resourceType"] == "OperationOutcome"
    assert fhir.get("/fhir/AuditEvent/\u00b3").status_code == 404  # a Unicode digit int() refuses: not a 500
    one = fhir.get(f"/fhir/AuditEvent/{corpus['bob-store']}")
    assert one.status_code == 200 and one.headers["content-type"].startswith("application/fhir+json")
    resource = one.json()
    validate_r4(resource)
    assert resource["type"]["system"] == "http://dicom.nema.org/resources/ontology/DCM"
    assert resource["type"]["code"] == "110104" and resource["recorded"] == "2024-05-07T10:00:00+02:00"
    assert resource["agent"][0]["who"]["identifier"]["value"] == "bob"
    assert resource["agent"][0]["network"] == {"address": "10.9.9.9", "type": "2"}
    assert resource["source"]["observer"]["display"] == "MODALITY-B"
    assert {e["what"]["identifier"]["value"] for e in resource["entity"]} == {"PID-2^^^&1.2.3.4&ISO", "1.2.840.99.2"}
    garbage = fhir.get(f"/fhir/AuditEvent/{corpus['garbage']}").json()
    validate_r4(garbage)
    assert garbage["type"]["code"] == "unparsed" and garbage["meta"]["tag"]
    from fhir.resources.R4B.bundle import Bundle

    Bundle.model_validate(search(fhir, "_count=100"))
    assert fhir.get("/fhir/metadata").json()["resourceType"] == "CapabilityStatement"


# -- rsyslog as a real forwarder ------------------------------------------------------------------


class Rsyslog:
    """A private rsyslogd reading RFC 5424 on its own UDP input, forwarding with omfwd to Pergamon."""

    def __init__(self, folder: Path, pki: dict[str, Path], udp: tuple[str, int], tls: tuple[str, int]) -> None:
        self.port = free_port()
        self.config = folder / "rsyslog.conf"
        self.pidfile = folder / "rsyslogd.pid"
        self.log = folder / "rsyslogd.log"
        self.config.write_text(
            f'global(workDirectory="{folder}" maxMessageSize="64k" parser.escapeControlCharactersOnReceive="off"\n'
            f'  DefaultNetstreamDriverCAFile="{pki["ca"]}"\n'
            f'  DefaultNetstreamDriverCertFile="{pki["client"]}" DefaultNetstreamDriverKeyFile="{pki["client_key"]}")\n'
            'module(load="imudp")\n'
            f'input(type="imudp" address="127.0.0.1" port="{self.port}" ruleset="forward")\n'
            'ruleset(name="forward") {\n'
            f'  action(type="omfwd" target="{udp[0]}" port="{udp[1]}" protocol="udp"'
            ' template="RSYSLOG_SyslogProtocol23Format")\n'
            f'  action(type="omfwd" target="{tls[0]}" port="{tls[1]}" protocol="tcp" TCP_Framing="octet-counted"'
            ' StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/certvalid"'
            ' template="RSYSLOG_SyslogProtocol23Format")\n'
            "}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [require_tool("rsyslogd"), "-n", "-f", str(self.config), "-i", str(self.pidfile)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        time.sleep(1.0)
        if self.proc.poll() is not None:
            raise RuntimeError(f"rsyslogd exited: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)


@pytest.mark.slow
def test_rsyslog_forwards_to_the_repository_over_udp_and_tls(
    repository: AuditRepository, archive: Archive, fhir: httpx.Client, pki: dict[str, Path], tmp_path: Path
) -> None:
    require_tool("rsyslogd")
    if not GTLS_DRIVER.exists() and os.environ.get("PERGAMON_TEST_REQUIRE_PEERS") != "1":
        pytest.skip("rsyslog-gnutls is not installed")
    assert repository.udp_address and repository.tls_address
    folder = tmp_path / "rsyslog"
    folder.mkdir()
    peer = Rsyslog(folder, pki, repository.udp_address, repository.tls_address)
    peer.start()
    try:
        sample = atna("samples", "pixquery.xml").read_bytes()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(syslog(sample, host="pix-client"), ("127.0.0.1", peer.port))
        one_line = audit_xml(user="logger-user", study="1.2.840.99.77").replace(b"\n", b"").replace(b"\t", b"")
        subprocess.run(
            [require_tool("logger"), "--rfc5424", "-d", "--size", "65536", "-n", "127.0.0.1", "-P", str(peer.port),
             "--msgid", "IHE+RFC-3881", "-t", "modality", "--", one_line.decode()],
            check=True,
        )  # fmt: skip
        rows = wait_records(archive, 4, timeout=30)
    finally:
        peer.stop()
    assert len(rows) == 4, peer.log.read_text()
    assert sorted(r.transport for r in rows) == ["tls", "tls", "udp", "udp"]
    assert all(r.msgid == "IHE+RFC-3881" for r in rows)
    assert all(r.flag is None for r in rows), [r.detail for r in rows]
    assert search(fhir, "entity-id=10501108")["total"] == 2
    assert search(fhir, "entity-id=1.2.840.99.77&agent=logger-user")["total"] == 2


# -- a fresh Pergamon audits to its own repository ------------------------------------------------


@pytest.mark.slow
def test_fresh_pergamon_audits_to_itself(tmp_path: Path, database_url: str) -> None:
    """Default settings: audit.repositories is Pergamon's own UDP port; a C-STORE shows up in ITI-81."""
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
    from pynetdicom import AE
    from samples import make_instance

    from pergamon.runtime import Pergamon

    settings = make_settings(tmp_path / "data", database_url)
    app = Pergamon(settings)
    app.start()
    try:
        wait_for_port(settings.http.port)
        ds = make_instance(CTImageStorage, patient_id="AUDIT-1")
        ae = AE(ae_title="AUDITTEST")
        ae.add_requested_context(ds.SOPClassUID, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", settings.dicom.port, ae_title=settings.dicom.ae_title)
        assert assoc.is_established
        assert assoc.send_c_store(ds).Status == 0
        assoc.release()
        url = f"http://127.0.0.1:{settings.http.port}/fhir/AuditEvent"
        deadline = time.monotonic() + 20
        bundle: dict[str, Any] = {}
        while time.monotonic() < deadline:
            bundle = httpx.get(url, params={"entity-id": str(ds.StudyInstanceUID)}).json()
            if bundle.get("total"):
                break
            time.sleep(0.2)
        assert bundle.get("total"), "no audit record of the C-STORE reached the repository"
        types = {e["resource"]["type"]["code"] for e in bundle["entry"]}
        assert types & {"110104", "110102"}, types
        started = httpx.get(url, params={"type": "110100", "subtype": "110120"}).json()
        assert started["total"] >= 1
    finally:
        app.stop()
