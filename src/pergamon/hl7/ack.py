"""Original-mode acknowledgements (HL7 v2.5 chapter 2.9.2; ITI TF-2 Appendix C.2.3): ACK with MSA and ERR.

The ACK's MSH swaps sender and receiver of the acknowledged message, keeps its delimiters,
processing id, version and character set (MSH-18), and MSH-9 is `ACK^<trigger>^ACK`. MSA-1 is
AA, AE or AR and MSA-2 the acknowledged MSH-10. Errors are described in the ERR segment of the
message's version (each code from HL7 table 0357):

* v2.5 and later: ERR-2 error location (`PID^1^3`), ERR-3 `207^Application internal error^HL70357`,
  ERR-4 severity `E`, ERR-8 the text for the user;
* v2.3.1 and v2.4: ERR-1 error code and location (`PID^1^3^103&Table value not found&HL70357`).

MSA-3 carries the text too in every version (kept "for backward compatibility" up to v2.6), since
many receivers show only MSA-3. Enhanced-mode acknowledgements (MSH-15/16 accept acknowledgements)
are not sent: every message gets exactly one original-mode ACK, whatever MSH-15/16 say.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from pergamon.hl7.charsets import escape
from pergamon.hl7.dispatch import Hl7Error

ERROR_CODES: dict[str, str] = {
    "0": "Message accepted",
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}
"""HL7 table 0357, message error condition codes (v2.5)."""

STANDARD_DELIMITERS = "|^~\\&"
DEFAULT_VERSION = "2.5.1"


class AckCode(StrEnum):
    """HL7 table 0008, original mode."""

    AA = "AA"  # application accept
    AE = "AE"  # application error
    AR = "AR"  # application reject


@dataclass(frozen=True)
class Header:
    """What could be read of a message's MSH (empty strings for what could not)."""

    field_separator: str = "|"
    encoding_characters: str = "^~\\&"
    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    message_type: str = ""  # MSH-9.1
    trigger_event: str = ""  # MSH-9.2
    control_id: str = ""  # MSH-10
    processing_id: str = ""  # MSH-11
    version: str = ""  # MSH-12.1
    charset: str = ""  # MSH-18, all repetitions as written
    delimiters_valid: bool = False

    @classmethod
    def read(cls, fields: list[str] | None) -> Header:
        """From `charsets.header_fields` (index n = MSH-n); never raises."""
        if fields is None:
            return cls()

        def get(n: int) -> str:
            return fields[n] if len(fields) > n else ""

        separator, encoding = fields[1], get(2)
        valid = valid_delimiters(separator, encoding)
        component = encoding[0] if valid else "^"
        message_type = get(9).split(component)
        return cls(
            field_separator=separator,
            encoding_characters=encoding if valid else "^~\\&",
            sending_application=get(3),
            sending_facility=get(4),
            receiving_application=get(5),
            receiving_facility=get(6),
            message_type=message_type[0].strip(),
            trigger_event=message_type[1].strip() if len(message_type) > 1 else "",
            control_id=get(10),
            processing_id=get(11),
            version=get(12).split(component)[0].strip(),
            charset=get(18),
            delimiters_valid=valid,
        )

    @property
    def label(self) -> str:
        """MSH-9 as `TYPE^EVENT` for logs."""
        return f"{self.message_type}^{self.trigger_event}" if self.trigger_event else self.message_type


def valid_delimiters(field_separator: str, encoding_characters: str) -> bool:
    """MSH-1 and MSH-2 (v2.5 2.5.4): one separator and four (v2.7+: five) distinct non-alphanumeric characters."""
    chars = field_separator + encoding_characters
    return (
        len(field_separator) == 1
        and len(encoding_characters) in (4, 5)
        and len(set(chars)) == len(chars)
        and not any(c.isalnum() or c in " \r\n\t" for c in chars)
    )


def version_tuple(version: str) -> tuple[int, ...]:
    """`2.3.1` -> (2, 3, 1); unreadable parts end the tuple."""
    parts: list[int] = []
    for part in version.split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


def build_ack(header: Header, code: AckCode, error: Hl7Error | None = None, *, application: str = "PERGAMON") -> str:
    """The ACK text (segments ended by CR) acknowledging the message whose MSH is `header`.

    `application` fills MSH-3 when the message had no MSH-5 (receiving application).
    """
    if header.delimiters_valid:
        sep, enc = header.field_separator, header.encoding_characters

        def echo(value: str) -> str:
            return value
    else:
        sep, enc = STANDARD_DELIMITERS[0], STANDARD_DELIMITERS[1:]

        def echo(value: str) -> str:
            return escape(value, enc, sep)

    component, subcomponent = enc[0], enc[3]

    def text(value: str) -> str:
        return escape(value, enc, sep)

    version = header.version if version_tuple(header.version) else DEFAULT_VERSION
    msh = [
        "MSH",
        enc,
        echo(header.receiving_application) or text(application),
        echo(header.receiving_facility),
        echo(header.sending_application),
        echo(header.sending_facility),
        datetime.now(UTC).strftime("%Y%m%d%H%M%S+0000"),
        "",
        component.join(["ACK", echo(header.trigger_event), "ACK"]),
        uuid.uuid4().hex[:20],
        echo(header.processing_id) or "P",
        echo(version),
    ]
    if header.charset:
        msh += [""] * 5 + [echo(header.charset)]
    msa = ["MSA", code.value, echo(header.control_id)]
    segments = [sep.join(msh)]
    if error is None:
        segments.append(sep.join(msa))
        return "\r".join(segments) + "\r"
    msa.append(text(error.text[:80]))
    segments.append(sep.join(msa))
    code_text = ERROR_CODES.get(error.code, "")
    location = [error.segment, str(error.sequence)] if error.segment else []
    if location and error.position:
        location.append(str(error.position))
    if version_tuple(version) < (2, 5):
        condition = subcomponent.join([error.code, text(code_text), "HL70357"])
        eld = [*[*location, "", "", ""][:3], condition]
        segments.append(sep.join(["ERR", component.join(eld)]))
    else:
        err = [
            "ERR",
            "",
            component.join(location),
            component.join([error.code, text(code_text), "HL70357"]),
            "E",
            "",
            "",
            "",
            text(error.text),
        ]
        segments.append(sep.join(err))
    return "\r".join(segments) + "\r"
