"""MSH-18 character sets and escape sequences (hl7/charsets.py; HL7 v2.5 2.7, 2.15.9.18, table 0211)."""

from __future__ import annotations

import hl7_samples
import pytest

from pergamon.hl7 import charsets


@pytest.mark.parametrize(
    "text",
    [hl7_samples.ADT_A08_LATIN1, hl7_samples.ADT_A08_UTF8, hl7_samples.ADT_A08_JIS],
    ids=["8859/1", "utf8", "jis"],
)
def test_frames_decode_in_the_msh18_character_set(text: str) -> None:
    decoded, _codec = charsets.decode(hl7_samples.encoded(text))
    assert decoded == text


@pytest.mark.parametrize(
    ("msh18", "codec"),
    [
        ("", "iso8859-1"),
        ("ASCII", "ascii"),
        ("8859/1", "iso8859-1"),
        ("8859/5", "iso8859-5"),
        ("8859/9", "iso8859-9"),
        ("UNICODE UTF-8", "utf-8"),
        ("~ISO IR87", "iso2022_jp_2"),
        ("ISO IR6~ISO IR159", "iso2022_jp_2"),
        ("GB 18030-2000", "gb18030"),
        ("KS X 1001", "euc_kr"),
    ],
)
def test_codec_for_table_0211_values(msh18: str, codec: str) -> None:
    assert charsets.codec_for(msh18) == codec


def test_unknown_character_set_is_refused() -> None:
    with pytest.raises(charsets.UnknownCharset, match="EBCDIC"):
        charsets.codec_for("EBCDIC")


def test_bytes_invalid_in_the_declared_set_do_not_decode() -> None:
    raw = hl7_samples.ADT_A08_UTF8.replace("UNICODE UTF-8", "ASCII").encode("utf-8")
    with pytest.raises(UnicodeDecodeError):
        charsets.decode(raw)


def test_header_fields_are_numbered_as_the_standard_does() -> None:
    fields = charsets.header_fields(hl7_samples.ADT_A01_231.encode("ascii"))
    assert fields is not None
    assert (fields[1], fields[2], fields[3], fields[9], fields[10], fields[12]) == (
        "|",
        "^~\\&",
        "ADT_SYSTEM",
        "ADT^A01",
        "ADT0001",
        "2.3.1",
    )
    assert charsets.header_fields(b"PID|||123") is None
    assert charsets.header_fields(b"MSHA^~\\&|X") is None


@pytest.mark.parametrize(
    ("escaped", "plain"),
    [
        ("DOE\\T\\SMITH", "DOE&SMITH"),
        ("a\\F\\b\\S\\c\\R\\d\\E\\e", "a|b^c~d\\e"),
        ("line\\.br\\two", "line\rtwo"),
        ("\\H\\bold\\N\\", "bold"),
        ("caf\\XE9\\", "café"),
        ("no escapes", "no escapes"),
        ("\\Zcustom\\", "\\Zcustom\\"),
    ],
)
def test_unescape(escaped: str, plain: str) -> None:
    assert charsets.unescape(escaped) == plain


def test_unescape_follows_the_message_delimiters() -> None:
    assert charsets.unescape("a#F#b#S#c", "$~#&", field_separator="!") == "a!b$c"


def test_escape_round_trips() -> None:
    value = "A|B^C&D~E\\F\rG"
    escaped = charsets.escape(value)
    assert not set("|^&~\r") & set(escaped)
    assert charsets.unescape(escaped) == value
