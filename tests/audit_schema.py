"""Validating audit messages against the DICOM PS3.15 A.5.1 schema (2017c with IHE relaxations).

The schema is `pergamon/audit/dicom2017c.xsd`, a verbatim copy of oehf/ipf
`commons/audit/src/main/resources/dicom2017c.xsd` (Apache-2.0; see shared/schemas/SOURCES.md).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from lxml import etree


@cache
def schema() -> etree.XMLSchema:
    with resources.as_file(resources.files("pergamon.audit") / "dicom2017c.xsd") as path:
        return etree.XMLSchema(etree.parse(str(path)))


def errors(message: bytes) -> list[str]:
    """Schema errors of one audit message (empty when it is valid)."""
    try:
        document = etree.fromstring(message)
    except etree.XMLSyntaxError as exc:
        return [f"not well-formed XML: {exc}"]
    validator = schema()
    if validator.validate(document):
        return []
    return [f"line {e.line}: {e.message}" for e in validator.error_log]


def assert_valid(message: bytes) -> None:
    problems = errors(message)
    assert not problems, (
        "audit message does not validate against dicom2017c.xsd:\n"
        + "\n".join(problems)
        + ("\n" + message.decode("utf-8", "replace"))
    )
