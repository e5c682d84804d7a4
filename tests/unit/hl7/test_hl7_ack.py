"""Original-mode ACKs (hl7/ack.py; HL7 v2.5 2.9.2, 2.14.5 ERR, table 0357), read back with python-hl7."""

from __future__ import annotations

import hl7
import hl7_samples

from pergamon.hl7.ack import AckCode, Header, build_ack, valid_delimiters
from pergamon.hl7.charsets import header_fields
from pergamon.hl7.dispatch import Hl7ApplicationError, Hl7Rejected


def header_of(text: str) -> Header:
    return Header.read(header_fields(text.encode("utf-8")))


def test_aa_swaps_sender_and_receiver_and_echoes_the_control_id() -> None:
    ack = hl7.parse(build_ack(header_of(hl7_samples.ADT_A01_231), AckCode.AA))
    msh = ack.segment("MSH")
    assert (str(msh[3]), str(msh[4]), str(msh[5]), str(msh[6])) == ("PERGAMON", "RADIOLOGY", "ADT_SYSTEM", "HOSPITAL")
    assert str(msh[9]) == "ACK^A01^ACK"
    assert (str(msh[11]), str(msh[12])) == ("P", "2.3.1")
    assert str(msh[10]) and str(msh[10]) != "ADT0001"
    assert [str(f) for f in ack.segment("MSA")] == ["MSA", "AA", "ADT0001"]
    assert "\rERR" not in str(ack)


def test_v25_error_goes_to_err_2_3_4_and_8() -> None:
    error = Hl7ApplicationError("unknown patient PAT-1", "204", "PID", 1, 3)
    ack = hl7.parse(build_ack(header_of(hl7_samples.ADT_A08_25), AckCode.AE, error))
    assert str(ack.segment("MSA")[1]) == "AE"
    assert str(ack.segment("MSA")[2]) == "ADT0002"
    err = ack.segment("ERR")
    assert str(err[2]) == "PID^1^3"
    assert str(err[3]) == "204^Unknown key identifier^HL70357"
    assert str(err[4]) == "E"
    assert str(err[8]) == "unknown patient PAT-1"


def test_v231_error_goes_to_err_1() -> None:
    error = Hl7Rejected("unsupported event A99", "201", "MSH", 1, 9)
    ack = hl7.parse(build_ack(header_of(hl7_samples.ADT_A01_231), AckCode.AR, error))
    assert str(ack.segment("MSA")[1]) == "AR"
    assert str(ack.segment("MSA")[3]) == "unsupported event A99"
    assert str(ack.segment("ERR")[1]) == "MSH^1^9^201&Unsupported event code&HL70357"
    assert len(ack.segment("ERR")) == 2


def test_error_text_with_delimiters_is_escaped() -> None:
    error = Hl7ApplicationError("bad | value ^ here", "207")
    text = build_ack(header_of(hl7_samples.ADT_A08_25), AckCode.AE, error)
    assert "bad \\F\\ value \\S\\ here" in text
    assert str(hl7.parse(text).segment("ERR")[8]).startswith("bad ")


def test_msh18_is_echoed() -> None:
    ack = hl7.parse(build_ack(header_of(hl7_samples.ADT_A08_UTF8), AckCode.AA))
    assert str(ack.segment("MSH")[18]) == "UNICODE UTF-8"


def test_unreadable_header_still_gives_an_ack() -> None:
    ack = hl7.parse(build_ack(Header(), AckCode.AR, Hl7Rejected("no MSH", "100", "MSH"), application="PACS1"))
    assert str(ack.segment("MSH")[3]) == "PACS1"
    assert str(ack.segment("MSH")[12]) == "2.5.1"
    assert str(ack.segment("MSA")[1]) == "AR"
    assert str(ack.segment("ERR")[3]) == "100^Segment sequence error^HL70357"


def test_wrong_delimiters_get_a_standard_ack_with_the_values_escaped() -> None:
    text = "MSH|^~\\&|X^Y|F|R|RF|20260101||ADT^A01|C1|P|2.5\r"
    bad = text.replace("|^~\\&|", "|^~|", 1)
    header = header_of(bad)
    assert not header.delimiters_valid
    ack = hl7.parse(build_ack(header, AckCode.AR, Hl7Rejected("bad MSH-2", "102", "MSH", 1, 2)))
    assert str(ack.segment("MSA")[1]) == "AR"
    assert str(ack.segment("MSH")[2]) == "^~\\&"


def test_valid_delimiters() -> None:
    assert valid_delimiters("|", "^~\\&")
    assert valid_delimiters("|", "^~\\&#")  # v2.7 truncation character
    assert not valid_delimiters("|", "^~\\")
    assert not valid_delimiters("|", "^~\\^")
    assert not valid_delimiters("A", "^~\\&")
