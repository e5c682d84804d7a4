"""Character sets of HL7 v2 messages (MSH-18, HL7 table 0211) and escape sequences (v2.5 chapter 2.7).

A frame arrives as bytes; its MSH segment is read as bytes first (every supported set keeps ASCII
in place for the header), MSH-18 picks the Python codec and the whole frame is decoded with it
before parsing. No MSH-18 means ASCII by the standard; Pergamon reads such messages as ISO 8859-1
instead, since senders that leave MSH-18 empty commonly send Latin-1 text, and ASCII is a subset.
A repetition of MSH-18 that names a Japanese ISO 2022 set (ISO IR87, ISO IR159) switches the decoder
to ISO-2022-JP-2, which handles the escape sequences (2.15.9.18 "code extension techniques").

Escape sequences (2.7.4 - 2.7.6) are not undone by the parser: handlers call `unescape` on the field
values they read, and `escape` on the values they write.
"""

from __future__ import annotations

import re

CODECS: dict[str, str] = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "8859/1": "iso8859-1",
    "ISO IR100": "iso8859-1",
    "8859/2": "iso8859-2",
    "ISO IR101": "iso8859-2",
    "8859/3": "iso8859-3",
    "ISO IR109": "iso8859-3",
    "8859/4": "iso8859-4",
    "ISO IR110": "iso8859-4",
    "8859/5": "iso8859-5",
    "ISO IR144": "iso8859-5",
    "8859/6": "iso8859-6",
    "ISO IR127": "iso8859-6",
    "8859/7": "iso8859-7",
    "ISO IR126": "iso8859-7",
    "8859/8": "iso8859-8",
    "ISO IR138": "iso8859-8",
    "8859/9": "iso8859-9",
    "ISO IR148": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE": "utf-8",
    "UNICODE UTF-8": "utf-8",
    "ISO IR192": "utf-8",
    "ISO IR87": "iso2022_jp_2",
    "ISO IR159": "iso2022_jp_2",
    "ISO IR14": "iso2022_jp_2",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc_kr",
    "BIG-5": "big5",
}
"""HL7 table 0211 values Pergamon reads, with their Python codec (UTF-16/32 are not: they move MSH)."""

DEFAULT_CODEC = "iso8859-1"
"""Codec of a message without MSH-18 (see the module docstring)."""

ISO2022_SETS = frozenset({"ISO IR87", "ISO IR159", "ISO IR14"})


class UnknownCharset(ValueError):
    """MSH-18 names a character set Pergamon cannot read (HL7 error 103, table value not found)."""


def codec_for(msh18: str, repetition: str = "~") -> str:
    """The Python codec for an MSH-18 value (all repetitions, as they appear in the message).

    Raises:
        UnknownCharset: a repetition is not in `CODECS`.
    """
    names = [name.strip().upper() for name in msh18.split(repetition) if name.strip()]
    if not names:
        return DEFAULT_CODEC
    for name in names:
        if name not in CODECS:
            raise UnknownCharset(f"MSH-18 character set {name!r} is not supported")
    if any(name in ISO2022_SETS for name in names):
        return "iso2022_jp_2"
    return CODECS[names[0]]


def header_fields(raw: bytes) -> list[str] | None:
    """The MSH fields of a frame, read before decoding (index n is MSH-n; index 0 is "MSH").

    None when the frame does not start with an MSH segment with a plausible field separator.
    """
    text = raw.lstrip(b"\r\n ").split(b"\r", 1)[0].split(b"\n", 1)[0].decode("iso8859-1")
    if len(text) < 8 or text[:3] != "MSH":
        return None
    separator = text[3]
    if separator.isalnum() or separator in " \t":
        return None
    parts = text.split(separator)
    return ["MSH", separator, *parts[1:]]


_ESCAPE = re.compile(r"\\(?P<seq>[^\\]*)\\")


def unescape(
    value: str, encoding_characters: str = "^~\\&", codec: str = "iso8859-1", field_separator: str = "|"
) -> str:
    """Undo HL7 escape sequences: \\F\\ \\S\\ \\T\\ \\R\\ \\E\\, \\Xhh..\\ (bytes in `codec`), \\.br\\.

    Highlighting (\\H\\ \\N\\) and character set switches (\\C..\\ \\M..\\) are dropped; an
    unknown sequence is kept as written. `encoding_characters` is MSH-2 (component, repetition,
    escape, subcomponent), `field_separator` MSH-1.
    """
    component, repetition, escape_char, subcomponent = (encoding_characters + "^~\\&"[len(encoding_characters) :])[:4]
    if escape_char not in value:
        return value
    if escape_char != "\\":
        pattern = re.compile(f"{re.escape(escape_char)}(?P<seq>[^{re.escape(escape_char)}]*){re.escape(escape_char)}")
    else:
        pattern = _ESCAPE
    fixed = {"F": field_separator, "S": component, "T": subcomponent, "R": repetition, "E": escape_char, ".br": "\r"}

    def replace(match: re.Match[str]) -> str:
        seq = match.group("seq")
        if seq in fixed:
            return fixed[seq]
        if seq in ("H", "N") or seq[:1] in ("C", "M"):
            return ""
        if seq[:1] == "X" and len(seq) % 2 == 1:
            try:
                return bytes.fromhex(seq[1:]).decode(codec)
            except (ValueError, LookupError):
                return match.group(0)
        return match.group(0)

    return pattern.sub(replace, value)


def escape(value: str, encoding_characters: str = "^~\\&", field_separator: str = "|") -> str:
    """Escape the delimiters in a value (and CR as \\.br\\) so it can be written into a field."""
    component, repetition, escape_char, subcomponent = (encoding_characters + "^~\\&"[len(encoding_characters) :])[:4]
    table = {
        escape_char: f"{escape_char}E{escape_char}",
        field_separator: f"{escape_char}F{escape_char}",
        component: f"{escape_char}S{escape_char}",
        subcomponent: f"{escape_char}T{escape_char}",
        repetition: f"{escape_char}R{escape_char}",
        "\r": f"{escape_char}.br{escape_char}",
    }
    return "".join(table.get(c, c) for c in value)


def decode(raw: bytes) -> tuple[str, str]:
    """The text of a frame and the codec used, chosen by its MSH-18.

    Raises:
        UnknownCharset: MSH-18 is not in `CODECS`.
        UnicodeDecodeError: the bytes are not valid in that character set.
    """
    fields = header_fields(raw)
    codec = DEFAULT_CODEC
    if fields is not None and len(fields) > 18:
        repetition = fields[2][1:2] or "~"
        codec = codec_for(fields[18], repetition)
    return raw.decode(codec), codec
