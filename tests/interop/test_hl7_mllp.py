"""The HL7 v2 door over real MLLP: python-hl7's clients against a running Pergamon.

Peers: python-hl7's blocking `hl7.client.MLLPClient`, its asyncio `hl7.mllp.open_hl7_connection`
(plain and TLS) and its `mllp_send` command against `pergamon serve`. The handlers are test
handlers registered on the running server's router (the real ADT / order / PIX handlers have
their own tests), so what is checked is the door: framing, ACK contents, rejections, the log and
its REST view, TLS node authentication. Bad input (garbage before the start block, no MSH, wrong
delimiters, unknown type or event, a frame cut off by the end of the connection, a failing
handler) gets the right ACK, changes nothing, and the next message on the listener still works.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hl7
import hl7.client
import hl7.mllp
import hl7_samples
import httpx
import pytest
from conftest import ServerProcess, free_port, make_settings, wait_for_port

from pergamon.archive.events import NodeAuthenticationFailed
from pergamon.archive.index.database import Database
from pergamon.archive.index.schema import hl7_message
from pergamon.config import TlsSettings
from pergamon.hl7.client import send as pergamon_send
from pergamon.hl7.dispatch import Hl7ApplicationError, Hl7Context
from pergamon.runtime import Pergamon
from pergamon.security.certs import NodeFiles, create_lab_pki

pytestmark = pytest.mark.interop

SB, EB, CR = b"\x0b", b"\x1c", b"\r"


class Recorder:
    """A test handler: keeps (control id, PID-5 unescaped) of each message; `fail` makes it raise."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.fail: Exception | None = None

    def __call__(self, message: hl7.Message, context: Hl7Context) -> None:
        if self.fail is not None:
            error, self.fail = self.fail, None
            raise error
        pids = [s for s in message if str(s[0]) == "PID"]
        name = message.unescape(str(pids[0][5])) if pids and len(pids[0]) > 5 else ""
        self.seen.append((context.control_id, name))


@pytest.fixture
def recorder(server: Pergamon) -> Recorder:
    """Test handlers for the sample messages' types on the running server."""
    handler = Recorder()
    router = server.hl7.receiver.router
    for message_type, trigger in (
        ("ADT", "A01"),
        ("ADT", "A08"),
        ("ADT", "A31"),
        ("ORM", "O01"),
        ("OMI", "O23"),
        ("ZZT", "Z01"),  # a test-only type: its other events are unsupported whatever real handlers exist
    ):
        router.register(message_type, trigger, handler)
    return handler


def hl7_port(app: Pergamon) -> int:
    return app.hl7.port


def exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes on a fresh connection, return everything answered before the server's EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def acks_in(answer: bytes) -> list[hl7.Message]:
    blocks = [b for b in answer.split(EB + CR) if b]
    assert all(b.startswith(SB) for b in blocks), answer
    return [hl7.parse(b[1:].decode("iso8859-1")) for b in blocks]


def send_with_python_hl7(port: int, text: str, encoding: str = "ascii") -> hl7.Message:
    """python-hl7's blocking client; reads until the end block (its `send` returns one recv)."""
    with hl7.client.MLLPClient("127.0.0.1", port, encoding=encoding) as client:
        answer = client.send_message(text)
        while not answer.endswith(EB + CR):
            answer += client.socket.recv(65536)
    assert answer.startswith(SB)
    return hl7.parse(answer[1:-2].decode(encoding))


def msa(ack: hl7.Message) -> tuple[str, str]:
    segment = ack.segment("MSA")
    return str(segment[1]), str(segment[2])


def api(app: Pergamon, path: str) -> str:
    return f"http://127.0.0.1:{app.settings.http.port}/api{path}"


# --- accepted messages ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "control_id", "version"),
    [
        (hl7_samples.ADT_A01_231, "ADT0001", "2.3.1"),
        (hl7_samples.ADT_A08_25, "ADT0002", "2.5"),
        (hl7_samples.ORM_O01_231, "ORM0001", "2.3.1"),
        (hl7_samples.OMI_O23_251, "OMI0001", "2.5.1"),
        (hl7_samples.ADT_A31_PIX, "207597", "2.5"),
    ],
    ids=["adt-a01-v231", "adt-a08-v25", "orm-o01-v231", "omi-o23-v251", "adt-a31-ipf"],
)
def test_ihe_samples_are_acknowledged_aa(
    server: Pergamon, recorder: Recorder, text: str, control_id: str, version: str
) -> None:
    ack = send_with_python_hl7(hl7_port(server), text)
    assert msa(ack) == ("AA", control_id)
    header, sent = ack.segment("MSH"), hl7.parse(text).segment("MSH")
    assert (str(header[3]), str(header[4])) == (str(sent[5]), str(sent[6]))
    assert (str(header[5]), str(header[6])) == (str(sent[3]), str(sent[4]))
    assert str(header[9]).startswith("ACK^")
    assert str(header[12]) == version
    assert not [s for s in ack if str(s[0]) == "ERR"]
    assert [c for c, _ in recorder.seen] == [control_id]


def test_escape_sequences_reach_the_handler_unescaped(server: Pergamon, recorder: Recorder) -> None:
    send_with_python_hl7(hl7_port(server), hl7_samples.ADT_A08_25)
    assert recorder.seen == [("ADT0002", "DOE&SMITH^JOHN^Q")]


@pytest.mark.parametrize(
    "text",
    [hl7_samples.ADT_A08_LATIN1, hl7_samples.ADT_A08_UTF8, hl7_samples.ADT_A08_JIS],
    ids=["8859-1", "utf8", "jis"],
)
def test_msh18_character_sets(server: Pergamon, recorder: Recorder, text: str) -> None:
    codec = hl7_samples.CODECS[text]
    ack = send_with_python_hl7(hl7_port(server), text, encoding=codec)
    assert msa(ack)[0] == "AA"
    assert str(ack.segment("MSH")[18]) == str(hl7.parse(text).segment("MSH")[18])
    assert recorder.seen[0][1] == str(hl7.parse(text).segment("PID")[5])


def test_several_messages_on_one_connection_are_answered_in_order(server: Pergamon, recorder: Recorder) -> None:
    texts = [hl7_samples.with_control_id(hl7_samples.ADT_A01_231, f"SEQ{i}") for i in range(20)]

    async def run() -> list[str]:
        reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", hl7_port(server))
        answered = []
        try:
            for text in texts:
                writer.writemessage(hl7.parse(text))
                await writer.drain()
                answered.append(str((await reader.readmessage()).segment("MSA")[2]))
        finally:
            writer.close()
            await writer.wait_closed()
        return answered

    assert asyncio.run(run()) == [f"SEQ{i}" for i in range(20)]
    assert [c for c, _ in recorder.seen] == [f"SEQ{i}" for i in range(20)]


def test_ack_is_sent_after_the_outcome_is_committed(server: Pergamon, recorder: Recorder) -> None:
    send_with_python_hl7(hl7_port(server), hl7_samples.ADT_A01_231)
    other = Database(server.settings.database_url)  # a connection of its own sees the committed row
    try:
        with other.read() as conn:
            rows = conn.execute(hl7_message.select()).mappings().all()
    finally:
        other.dispose()
    assert [(r["control_id"], r["status"]) for r in rows] == [("ADT0001", "AA")]


# --- bad input -----------------------------------------------------------------------------------


def test_bad_input_gets_the_right_rejection_and_the_listener_keeps_working(
    server: Pergamon, recorder: Recorder
) -> None:
    port = hl7_port(server)
    counts = server.archive.counts()
    good = hl7_samples.ADT_A01_231.encode("ascii")
    cases: list[tuple[bytes, str, str]] = [
        (b"PID|||123||DOE^JOHN\r", "", "100"),  # no MSH
        (good.replace(b"MSH|^~\\&|", b"MSH|^~|", 1), "ADT0001", "102"),  # wrong encoding characters
        (good.replace(b"|^~\\&|", b"#^~\\&#", 1), "", "101"),  # field separator '#', then '|': no MSH-9
        (good.replace(b"ADT^A01", b"ZZT^Z02"), "ADT0001", "201"),  # unknown event
        (good.replace(b"ADT^A01", b"ZZZ^Z01"), "ADT0001", "200"),  # unknown message type
        (good.replace(b"|2.3.1", b"|2.8"), "ADT0001", "203"),  # unsupported version
    ]
    for data, control_id, code in cases:
        answer = exchange(port, b"garbage before the block\r\n" + SB + data + EB + CR)
        (ack,) = acks_in(answer)
        assert msa(ack) == ("AR", control_id), data
        err = ack.segment("ERR")
        assert code in (str(err[1]) + str(err[3] if len(err) > 3 else "")), (data, str(ack))
    # A frame cut off by the end of the connection: no answer, logged as rejected.
    assert exchange(port, SB + good[:50]) == b""
    # The listener still works, and nothing reached a handler or the archive.
    assert msa(send_with_python_hl7(port, hl7_samples.ADT_A08_25)) == ("AA", "ADT0002")
    assert recorder.seen == [("ADT0002", "DOE&SMITH^JOHN^Q")]
    assert server.archive.counts() == counts
    total, rows = server.hl7.receiver.log.search(status="AR")
    assert total == len(cases) + 1
    truncated = rows[0]
    assert truncated["size"] == 50 and truncated["error_code"] == "100"


def test_failing_handler_is_ae_207_and_the_next_message_is_accepted(server: Pergamon, recorder: Recorder) -> None:
    port = hl7_port(server)
    recorder.fail = RuntimeError("database on fire")
    ack = send_with_python_hl7(port, hl7_samples.ADT_A01_231)
    assert msa(ack) == ("AE", "ADT0001")
    assert "207" in str(ack.segment("ERR")[1])
    recorder.fail = Hl7ApplicationError("unknown patient", "204", "PID", 1, 3)
    ack = send_with_python_hl7(port, hl7_samples.ADT_A08_25)
    assert msa(ack) == ("AE", "ADT0002")
    assert (str(ack.segment("ERR")[2]), str(ack.segment("ERR")[3])) == ("PID^1^3", "204^Unknown key identifier^HL70357")
    assert msa(send_with_python_hl7(port, hl7_samples.ORM_O01_231)) == ("AA", "ORM0001")


def test_oversize_message_is_rejected_and_the_connection_goes_on(start_with: Callable[..., Pergamon]) -> None:
    app = start_with(max_message_bytes=400)
    handler = Recorder()
    app.hl7.receiver.router.register("ZZT", "Z01", handler)
    big = hl7_samples.ADT_A01_231.replace("PV1||I", "NTE|1||" + "x" * 500 + "\rPV1||I").encode("ascii")
    small = hl7_samples.ADT_A01_231.replace("ADT^A01", "ZZT^Z01").replace("ADT0001", "SMALL").encode("ascii")
    first, second = acks_in(exchange(app.hl7.port, SB + big + EB + CR + SB + small + EB + CR))
    assert msa(first) == ("AR", "ADT0001")
    assert msa(second) == ("AA", "SMALL")
    assert [c for c, _ in handler.seen] == ["SMALL"]


# --- REST view -----------------------------------------------------------------------------------


def test_rest_view_lists_reads_and_replays(server: Pergamon, recorder: Recorder) -> None:
    port = hl7_port(server)
    recorder.fail = Hl7ApplicationError("not yet", "204")
    send_with_python_hl7(port, hl7_samples.ADT_A08_25)
    send_with_python_hl7(port, hl7_samples.ORM_O01_231)
    listed = httpx.get(api(server, "/hl7/messages"), params={"type": "ADT^A08", "status": "AE"}).json()
    assert listed["total"] == 1
    (entry,) = listed["messages"]
    assert (entry["control_id"], entry["error_code"], entry["message_type"]) == ("ADT0002", "204", "ADT")
    detail = httpx.get(api(server, f"/hl7/messages/{entry['pk']}")).json()
    assert detail["text"] == hl7_samples.ADT_A08_25
    assert "MSA|AE|ADT0002" in detail["ack"]
    replayed = httpx.post(api(server, f"/hl7/messages/{entry['pk']}/replay"))
    assert replayed.status_code == 201
    body = replayed.json()
    assert (body["status"], body["replay_of"], body["transport"]) == ("AA", entry["pk"], "replay")
    assert recorder.seen[-1] == ("ADT0002", "DOE&SMITH^JOHN^Q")
    everything = httpx.get(api(server, "/hl7/messages"), params={"since": "2000-01-01", "limit": 2}).json()
    assert everything["total"] == 3 and len(everything["messages"]) == 2
    assert httpx.get(api(server, "/hl7/messages"), params={"type": "ORM"}).json()["total"] == 1
    assert httpx.get(api(server, "/hl7/messages/999999")).status_code == 404
    assert httpx.post(api(server, "/hl7/messages/999999/replay")).status_code == 404
    assert httpx.get(api(server, "/hl7/messages"), params={"status": "XX"}).status_code == 400
    assert httpx.get(api(server, "/hl7/messages"), params={"since": "yesterday"}).status_code == 400
    assert httpx.get(api(server, "/hl7/messages"), params={"limit": "0"}).status_code == 400


# --- TLS -----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Pki:
    ca: Path
    server: NodeFiles
    client: NodeFiles
    rogue: NodeFiles


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("hl7-pki")
    server, client = create_lab_pki(root / "lab", ["localhost,127.0.0.1", "client"])
    (rogue,) = create_lab_pki(root / "rogue", ["rogue"])
    return Pki(root / "lab" / "ca.pem", server, client, rogue)


@pytest.fixture
def start_with(tmp_path: Path, database_url: str) -> Iterator[Callable[..., Pergamon]]:
    """Start a Pergamon with [hl7] keys and optionally a [tls] section replaced."""
    apps: list[Pergamon] = []

    def run(tls: TlsSettings | None = None, **hl7_keys: Any) -> Pergamon:
        settings = make_settings(tmp_path / f"data{len(apps)}", database_url)
        settings = dataclasses.replace(settings, hl7=dataclasses.replace(settings.hl7, **hl7_keys))
        if tls is not None:
            settings = dataclasses.replace(settings, tls=tls)
        app = Pergamon(settings)
        app.start()
        apps.append(app)
        return app

    yield run
    for app in apps:
        app.stop()


def client_context(pki: Pki, node: NodeFiles) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cafile=str(pki.ca))
    ctx.load_cert_chain(str(node.certificate), str(node.private_key))
    return ctx


def test_tls_listener_accepts_the_lab_ca_and_refuses_an_untrusted_client(
    pki: Pki, start_with: Callable[..., Pergamon]
) -> None:
    tls_port = free_port()
    app = start_with(
        TlsSettings(
            certificate=str(pki.server.certificate),
            private_key=str(pki.server.private_key),
            ca_certificates=str(pki.ca),
            hl7_port=tls_port,
        )
    )
    events: list[Any] = []
    app.archive.bus.subscribe(events.append)
    handler = Recorder()
    app.hl7.receiver.router.register("ADT", "A01", handler)
    app.hl7.receiver.router.register("ADT", "A08", handler)

    async def send(ctx: ssl.SSLContext) -> str:
        reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", tls_port, ssl=ctx)
        try:
            writer.writemessage(hl7.parse(hl7_samples.ADT_A01_231))
            await writer.drain()
            return str((await reader.readmessage()).segment("MSA")[1])
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    assert asyncio.run(send(client_context(pki, pki.client))) == "AA"
    assert handler.seen == [("ADT0001", "DOE^JOHN^Q")]
    # Pergamon's own client (used for PIX queries) over the same TLS policy.
    ack = pergamon_send("127.0.0.1", tls_port, hl7_samples.ADT_A08_25, tls=client_context(pki, pki.client))
    assert msa(ack) == ("AA", "ADT0002")

    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError, OSError)):
        asyncio.run(send(client_context(pki, pki.rogue)))
    assert len(handler.seen) == 2
    refused = [e for e in _wait_for(events, NodeAuthenticationFailed) if e.door == "hl7"]
    assert refused and refused[0].peer.startswith("127.0.0.1:")
    # The plain port stays open ("STX: No Secure Transport").
    assert msa(send_with_python_hl7(app.hl7.port, hl7_samples.ADT_A01_231)) == ("AA", "ADT0001")


def _wait_for(events: list[Any], kind: type) -> list[Any]:
    """Events of `kind` (the refusal is emitted from the listener's thread; give it a moment)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [e for e in events if isinstance(e, kind)]
        if found:
            return found
        time.sleep(0.05)
    return []


# --- pergamon serve + mllp_send ------------------------------------------------------------------


def test_mllp_send_against_pergamon_serve(tmp_path: Path, database_url: str) -> None:
    """python-hl7's command-line client against the real `pergamon serve` process, then SIGTERM."""
    mllp_send = shutil.which("mllp_send") or str(Path(sys.executable).with_name("mllp_send"))
    settings = make_settings(tmp_path / "data", database_url)
    process = ServerProcess(settings, tmp_path)
    process.start()
    try:
        wait_for_port(settings.hl7.port, process.proc)
        messages = tmp_path / "messages.hl7"
        bad = hl7_samples.ADT_A01_231.replace("ADT^A01", "ZZZ^Z01").replace("ADT0001", "BAD1")
        messages.write_text((hl7_samples.OMI_O23_251 + bad).replace("\r", "\n"))
        result = subprocess.run(
            [mllp_send, "--loose", "-f", str(messages), "-p", str(settings.hl7.port), "127.0.0.1"],
            capture_output=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        acks = acks_in(result.stdout.replace(b"\n", b""))
        assert [msa(a)[1] for a in acks] == ["OMI0001", "BAD1"]
        assert all(msa(a)[0] in ("AA", "AE", "AR") for a in acks)
        assert msa(acks[1])[0] == "AR"  # ZZZ is no message type Pergamon handles
    finally:
        assert process.stop() == 0


def test_pergamon_client_sends_several_messages_in_their_character_sets(server: Pergamon, recorder: Recorder) -> None:
    from pergamon.hl7.client import MllpClient

    with MllpClient("127.0.0.1", hl7_port(server), timeout=30) as client:
        answers = [client.send(text) for text in (hl7_samples.ADT_A08_UTF8, hl7_samples.ADT_A08_JIS)]
        answers.append(client.send(hl7.parse(hl7_samples.ADT_A01_231)))
    assert [msa(a)[0] for a in answers] == ["AA", "AA", "AA"]
    assert [name for _, name in recorder.seen[:2]] == ["王^小明", "ヤマダ^タロウ"]
