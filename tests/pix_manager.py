"""A small PIX Manager for the PIX Consumer tests, built from the specification (no real one installs here).

It follows IHE ITI TF-2 3.9 (PIX Query) and 3.10 (PIX Update Notification) as summarised in
shared/reference/ihe-iti.md section 3, with the shared/schemas/pix/samples messages as models:

- it listens for MLLP with python-hl7's asyncio server (`hl7.mllp.start_hl7_server`) and answers
  each QBP^Q23 with an RSP^K23 (HL7 v2.5): MSH, MSA (MSA-2 the query's MSH-10), ERR when refused,
  QAK (QAK-1 the QPD-2 query tag, QAK-2 OK / NF / AE), QPD echoed, and for OK one PID whose PID-3
  lists the aliases (fully qualified CX-4, the queried identifier left out) and whose PID-5 is
  ``~^^^^^^S`` (3.9.4.2.2.6);
- the response cases: 1 aliases found (AA, OK); 2 patient known, no alias in the domains asked
  (AA, NF, no PID); 3 identifier unknown in a known domain (AE, ERR-2 ``QPD^1^3^1^1``, ERR-3 204);
  4 domain of QPD-3 unknown (AE, ``QPD^1^3^1^4``); 5 a domain in QPD-4 unknown (AE, one ERR
  ``QPD^1^4^<repetition>`` per unknown domain); 6 several identifiers in one domain (grouped
  successive PID-3 repetitions);
- `notify` sends an ADT^A31 (ADT_A05, v2.5) whose PID-3 is a patient's complete identifier list,
  PID-5 one space and PV1-2 ``N`` (3.10.4.1.2), with python-hl7's blocking MLLP client.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import hl7
import hl7.client
import hl7.mllp

SB, EB, CR = b"\x0b", b"\x1c", b"\r"


@dataclass(frozen=True)
class Ident:
    """A patient identifier: ID, and its assigning authority's namespace ID and ISO OID."""

    patient_id: str
    namespace: str
    oid: str

    def cx(self) -> str:
        return f"{self.patient_id}^^^{self.namespace}&{self.oid}&ISO^PI"


@dataclass
class PixManager:
    """The cross-reference database (`patients`: one list of identifiers per person) and an MLLP listener."""

    patients: list[list[Ident]] = field(default_factory=list)
    queries: list[hl7.Message] = field(default_factory=list)
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    def domains(self) -> set[tuple[str, str]]:
        return {(i.namespace, i.oid) for person in self.patients for i in person}

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            server = loop.run_until_complete(hl7.mllp.start_hl7_server(self._client, "127.0.0.1", 0))
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            server.close()
            loop.run_until_complete(server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=run, name="pix-manager", daemon=True)
        self._thread.start()
        ready.wait(30)

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
        self._loop = self._thread = None

    async def _client(self, reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        try:
            while not reader.at_eof():
                message = await reader.readmessage()
                self.queries.append(message)
                writer.writemessage(hl7.parse(self.answer(message)))
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    def answer(self, query: hl7.Message) -> str:
        """The RSP^K23 for a QBP^Q23 (the response cases of ITI TF-2 3.9.4.2.2.6)."""
        msh = _fields(query, "MSH")
        qpd_text = str(query.segment("QPD"))
        qpd = _fields(query, "QPD")
        control_id, tag = msh[10], qpd[2]
        wanted = _split(qpd[3], "^")
        authority = _split(wanted[3] if len(wanted) > 3 else "", "&")
        asked = Ident(wanted[0], authority[0], authority[1] if len(authority) > 1 else "")
        known = self.domains()
        errors: list[str] = []
        if not self._domain_known(asked.namespace, asked.oid, known):
            errors.append("ERR||QPD^1^3^1^4|204^Unknown Key Identifier^HL70357|E")
        domains: list[tuple[str, str]] = []
        for number, rep in enumerate(qpd[4].split("~") if len(qpd) > 4 and qpd[4] else [], start=1):
            comp = _split(_split(rep, "^")[3] if len(_split(rep, "^")) > 3 else "", "&")
            domain = (comp[0], comp[1] if len(comp) > 1 else "")
            if not self._domain_known(*domain, known):
                errors.append(f"ERR||QPD^1^4^{number}|204^Unknown Key Identifier^HL70357|E")
            domains.append(domain)
        person = None if errors else self._person(asked)
        if not errors and person is None:
            errors.append("ERR||QPD^1^3^1^1|204^Unknown Key Identifier^HL70357|E")
        header = f"MSH|^~\\&|PIX_MGR|PIX_FAC|{msh[3]}|{msh[4]}|{_now()}||RSP^K23^RSP_K23|{uuid.uuid4().hex[:12]}|P|2.5"
        if errors:
            return "\r".join([header, f"MSA|AE|{control_id}", *errors, f"QAK|{tag}|AE", qpd_text]) + "\r"
        assert person is not None
        aliases = [
            i for i in person if not self._same(i, asked) and (not domains or any(self._in(i, *d) for d in domains))
        ]
        if not aliases:
            return "\r".join([header, f"MSA|AA|{control_id}", f"QAK|{tag}|NF", qpd_text]) + "\r"
        pid = "PID|1||" + "~".join(i.cx() for i in aliases) + "||~^^^^^^S"
        return "\r".join([header, f"MSA|AA|{control_id}", f"QAK|{tag}|OK", qpd_text, pid]) + "\r"

    def notify(self, host: str, port: int, identifiers: Sequence[Ident]) -> hl7.Message:
        """Send an ITI-10 ADT^A31 listing `identifiers` to a PIX Consumer; its ACK."""
        text = "\r".join(
            [
                f"MSH|^~\\&|PIX_MGR|PIX_FAC|PERGAMON|PERGAMON|{_now()}||ADT^A31^ADT_A05|{uuid.uuid4().hex[:12]}|P|2.5",
                f"EVN|A31|{_now()}",
                "PID|||" + "~".join(i.cx() for i in identifiers) + "|| ",
                "PV1||N",
            ]
        )
        with hl7.client.MLLPClient(host, port) as client:
            answer = client.send_message(text + "\r")
            while not answer.endswith(EB + CR):
                answer += client.socket.recv(65536)
        return hl7.parse(answer[1:-2].decode("ascii"))

    def _person(self, asked: Ident) -> list[Ident] | None:
        for person in self.patients:
            if any(self._same(i, asked) for i in person):
                return person
        return None

    @staticmethod
    def _in(ident: Ident, namespace: str, oid: str) -> bool:
        return bool((namespace and namespace == ident.namespace) or (oid and oid == ident.oid))

    def _same(self, ident: Ident, asked: Ident) -> bool:
        return ident.patient_id == asked.patient_id and self._in(ident, asked.namespace, asked.oid)

    @staticmethod
    def _domain_known(namespace: str, oid: str, known: set[tuple[str, str]]) -> bool:
        return any((namespace and namespace == ns) or (oid and oid == uid) for ns, uid in known)


def _fields(message: hl7.Message, name: str) -> list[str]:
    text = str(message.segment(name))
    parts = text.split("|")
    if name == "MSH":  # MSH-1 is the field separator itself: with it put back, MSH-n is at index n
        parts.insert(1, "|")
    return parts


def _split(text: str, separator: str) -> list[str]:
    return text.split(separator)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S")
