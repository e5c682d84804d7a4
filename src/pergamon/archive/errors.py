"""Errors the archive core raises; each door maps them to its own protocol status.

The core never returns a DIMSE status, an HTTP code or an HL7 ack code: it raises one of these,
and `dimse/status.py` (and later `web/errors.py`, `hl7/ack.py`) translate them in one table.
"""

from __future__ import annotations


class PergamonError(Exception):
    """Base of every error the archive raises on purpose; `code` is stable and may be logged.

    An error that refused a stored object names it when its header could be read (`about`):
    doors report those UIDs per object (STOW-RS failure items, audit), and, being instance
    attributes, they survive the pickling between a store worker and the main process.
    """

    code = "error"
    sop_class_uid = ""
    sop_instance_uid = ""

    def about(self, sop_class_uid: str, sop_instance_uid: str) -> None:
        """Name the object this error refused, unless it already does."""
        if not (self.sop_class_uid or self.sop_instance_uid):
            self.sop_class_uid = sop_class_uid
            self.sop_instance_uid = sop_instance_uid


class NotFound(PergamonError):
    """The referenced patient, study, series, instance or peer does not exist."""

    code = "not-found"


class Conflict(PergamonError):
    """The request contradicts what is stored (e.g. a re-sent instance under the `reject` policy)."""

    code = "conflict"


class Invalid(PergamonError):
    """The input is malformed or inconsistent: nothing was stored."""

    code = "invalid"


class InvalidDataset(Invalid):
    """A dataset that cannot be parsed or lacks a mandatory attribute."""

    code = "invalid-dataset"


class MissingAttribute(InvalidDataset):
    """A dataset without one of the UIDs every stored object needs (SOP Class/Instance, Study, Series)."""

    code = "missing-attribute"


class StudyMismatch(Invalid):
    """The dataset belongs to another study than the one the request is storing into (STOW-RS)."""

    code = "study-mismatch"


class SOPClassMismatch(Invalid):
    """The dataset's SOP Class UID differs from the one the command announced."""

    code = "sop-class-mismatch"


class SOPInstanceMismatch(Invalid):
    """The dataset's SOP Instance UID differs from the one the command announced."""

    code = "sop-instance-mismatch"


class InvalidQuery(Invalid):
    """A query key whose value cannot be matched (bad range, unsupported key...)."""

    code = "invalid-query"


class NotAuthorized(PergamonError):
    """The caller is not allowed to do this."""

    code = "not-authorized"


class StorageFull(PergamonError):
    """The blob store or the index ran out of space."""

    code = "storage-full"


class Unavailable(PergamonError):
    """A dependency (database, peer) is temporarily unavailable; retrying may succeed."""

    code = "unavailable"
