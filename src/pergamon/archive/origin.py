"""Where an object or request came from: recorded with each instance and read by audit."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Origin:
    """The door and peer behind a request; build it with a named constructor."""

    door: str
    calling_ae: str = ""
    called_ae: str = ""
    peer: str = ""
    user: str = ""
    path: str = ""

    @classmethod
    def from_dimse(cls, calling_ae: str, called_ae: str, peer: str) -> Origin:
        return cls("dimse", calling_ae=calling_ae.strip(), called_ae=called_ae.strip(), peer=peer)

    @classmethod
    def from_http(cls, user: str, peer: str) -> Origin:
        return cls("http", user=user, peer=peer)

    @classmethod
    def from_hl7(cls, application: str, facility: str, receiving_application: str, peer: str) -> Origin:
        """An HL7 v2 sender: MSH-3 (`calling_ae`), `facility|application` of MSH-4 and MSH-3 as `user`
        (the audit UserID of ITI TF-2 3.9.5 / 3.10.5), MSH-5 (`called_ae`) and the peer's address."""
        user = f"{facility}|{application}" if facility else application
        return cls("hl7", calling_ae=application, called_ae=receiving_application, peer=peer, user=user)

    @classmethod
    def from_import(cls, path: str) -> Origin:
        return cls("import", path=path)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v}
