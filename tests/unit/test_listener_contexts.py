"""The DICOM listener's contexts: what each association gets is a copy equal to the AE's, not shared."""

from __future__ import annotations

import copy
from types import SimpleNamespace

from pergamon.config import Settings
from pergamon.dimse.server import build_ae, listener_contexts


def test_each_association_gets_its_own_equal_copy_of_the_contexts() -> None:
    ae = build_ae(SimpleNamespace(settings=Settings()))  # type: ignore[arg-type]
    shared = listener_contexts(ae)
    assert [vars(c) for c in shared] == [vars(c) for c in ae.supported_contexts]

    # What pynetdicom's RequestHandler does for every association.
    first, second = copy.deepcopy(shared), copy.deepcopy(shared)
    assert [vars(c) for c in first] == [vars(c) for c in shared]
    first[0].transfer_syntax.append("1.2.3.4")  # negotiation may edit an association's copy
    first[0].result = 0
    assert "1.2.3.4" not in shared[0].transfer_syntax and "1.2.3.4" not in second[0].transfer_syntax
    assert shared[0].result is None and second[0].result is None
