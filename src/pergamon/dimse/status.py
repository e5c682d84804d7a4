"""DIMSE status codes Pergamon answers with: the one table mapping core outcomes to statuses.

Hex codes appear only here. Each block cites the PS3.4 annex that defines it.
"""

from __future__ import annotations

from pydicom import Dataset

from pergamon.archive import errors

SUCCESS = 0x0000

# PS3.4 B.2.3 (Storage Service Class, C-STORE SCP statuses) and PS3.7 C.4.3 (0111).
STORE_OUT_OF_RESOURCES = 0xA700
STORE_DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
STORE_CANNOT_UNDERSTAND = 0xC000
STORE_PROCESSING_FAILURE = 0xC001
# PS3.7 C.4.3 "Duplicate SOP Instance": the standard failure for an instance already held.
STORE_DUPLICATE_SOP_INSTANCE = 0x0111

STORE_ERRORS: dict[type[errors.PergamonError], int] = {
    errors.SOPClassMismatch: STORE_DATASET_DOES_NOT_MATCH_SOP_CLASS,
    errors.SOPInstanceMismatch: STORE_CANNOT_UNDERSTAND,
    errors.InvalidDataset: STORE_CANNOT_UNDERSTAND,
    errors.Conflict: STORE_DUPLICATE_SOP_INSTANCE,
    errors.StorageFull: STORE_OUT_OF_RESOURCES,
    errors.Unavailable: STORE_OUT_OF_RESOURCES,
}

# PS3.4 C.4.1.1.4 (C-FIND), C.4.2.1.5 (C-MOVE), C.4.3.1.4 (C-GET).
PENDING = 0xFF00
PENDING_WARNING = 0xFF01
CANCEL = 0xFE00
FIND_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
FIND_UNABLE_TO_PROCESS = 0xC000
MOVE_DESTINATION_UNKNOWN = 0xA801
RETRIEVE_OUT_OF_RESOURCES_SUBOPS = 0xA702
RETRIEVE_IDENTIFIER_DOES_NOT_MATCH = 0xA900
RETRIEVE_UNABLE_TO_PROCESS = 0xC000
RETRIEVE_SUBOPS_WARNING = 0xB000

# PS3.4 J.3.2.1.3 / PS3.7 (N-ACTION): processing failure, no such SOP instance.
N_PROCESSING_FAILURE = 0x0110
N_NO_SUCH_SOP_INSTANCE = 0x0112
N_CLASS_INSTANCE_CONFLICT = 0x0119
N_NO_SUCH_ACTION_TYPE = 0x0123
N_INVALID_ARGUMENT = 0x0115

# PS3.4 F.7.2.1.3 / F.7.2.2.3-4 (MPPS N-CREATE / N-SET SCP) and PS3.7 C.4 (general N-service statuses).
N_INVALID_ATTRIBUTE_VALUE = 0x0106
N_DUPLICATE_SOP_INSTANCE = 0x0111
N_NO_SUCH_SOP_CLASS = 0x0118
N_MISSING_ATTRIBUTE = 0x0120
# Error ID (0000,0903) sent with 0110H "Performed Procedure Step Object may no longer be updated"
# (PS3.4 F.7.2.2.4; dcm4che's BasicMPPSSCP sends the same).
PPS_NO_LONGER_UPDATABLE_ERROR_ID = 0xA710


def status_for(exc: Exception, table: dict[type[errors.PergamonError], int], default: int) -> int:
    """Look an exception up by its class hierarchy (most specific first), as Starlette does."""
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls]
    return default


def status_dataset(status: int, comment: str = "") -> Dataset:
    """A status to return from a handler, with an Error Comment (0000,0902) when given.

    The comment is limited to 64 characters of the default repertoire (LO in the command set).
    """
    ds = Dataset()
    ds.Status = status
    if comment:
        ds.ErrorComment = comment.encode("ascii", "replace").decode("ascii")[:64]
    return ds
