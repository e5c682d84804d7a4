"""Pending C-FIND responses encoded by Pergamon: the same PDUs pynetdicom's own encoder writes."""

from __future__ import annotations

import pytest
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from pergamon.dimse.find_responses import _pack, encode_p_data_tf


def pynetdicom_encoding(pdvs: list[tuple[int, bytes]]) -> bytes:
    primitive = P_DATA()
    primitive.presentation_data_value_list.extend(pdvs)
    return bytes(P_DATA_TF(primitive).encode())


@pytest.mark.parametrize(
    "pdvs",
    [
        [(1, b"\x03" + bytes(range(40)))],
        [(1, b"\x03command"), (1, b"\x02" + b"identifier" * 30)],
        [(255, b"\x00"), (3, b"\x02" + bytes(70000))],
    ],
    ids=["one", "command-and-data", "empty-and-long"],
)
def test_p_data_tf_bytes_match_pynetdicom(pdvs: list[tuple[int, bytes]]) -> None:
    assert encode_p_data_tf(pdvs) == pynetdicom_encoding(pdvs)


def test_pack_keeps_each_pdu_within_the_maximum_and_the_order() -> None:
    pdvs = [(1, b"\x01" + b"c" * 94), (1, b"\x03" + b"c" * 20), (1, b"\x00" + b"d" * 94), (1, b"\x02" + b"d" * 5)]
    groups = _pack(pdvs, 120)
    assert [pdv for group in groups for pdv in group] == pdvs
    assert all(len(encode_p_data_tf(group)) - 6 <= 120 for group in groups)
    assert len(groups) == 3  # 100 + 26 > 120, then 26 + 100 > 120, then 100 + 11 fits
    assert _pack(pdvs, 0) == [pdvs]
