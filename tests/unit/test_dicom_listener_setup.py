"""The DICOM listener's set-up: its contexts (each association gets its own copy) and pynetdicom's logging."""

from __future__ import annotations

import copy
import dataclasses
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

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


@pytest.mark.parametrize(("level", "handlers"), [("INFO", "none"), ("WARNING", "none"), ("DEBUG", "standard")])
def test_pynetdicom_formats_its_log_lines_only_when_debugging(
    level: str, handlers: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pynetdicom import _config

    from pergamon.dimse import fastpath, move, server

    dumps = ("LOG_REQUEST_IDENTIFIERS", "LOG_RESPONSE_IDENTIFIERS")
    for name in ("LOG_HANDLER_LEVEL", "STORE_RECV_CHUNKED_DATASET", "STORE_SEND_CHUNKED_DATASET", *dumps):
        monkeypatch.setattr(_config, name, getattr(_config, name))  # restored after the test
    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "standard" if handlers == "none" else "none")  # the other one
    for name in dumps:
        monkeypatch.setattr(_config, name, handlers == "none")  # the other one
    monkeypatch.setattr(tempfile, "tempdir", tempfile.tempdir)
    monkeypatch.setattr(fastpath, "install", lambda: None)
    monkeypatch.setattr(move, "install_retrieve_responses", lambda: None)
    settings = Settings()
    settings = dataclasses.replace(settings, server=dataclasses.replace(settings.server, log_level=level))
    server.configure_pynetdicom(SimpleNamespace(settings=settings, temp_dir=tmp_path))  # type: ignore[arg-type]
    assert handlers == _config.LOG_HANDLER_LEVEL
    assert [getattr(_config, name) for name in dumps] == [handlers == "standard"] * 2  # identifier dumps too
