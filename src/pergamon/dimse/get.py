"""Retrieve SCP door (C-GET), PS3.4 C.4.3; IHE RAD-16/17/31/45 with the C-GET option.

The requestor proposed Storage presentation contexts with SCP/SCU Role Selection (PS3.7 D.3.3.4)
and accepted them in the Storage SCP role; Pergamon sends the designated instances as C-STORE
sub-operations on that same association (PS3.4 C.4.3.3). An instance whose SOP class or transfer
syntax (after conversion to uncompressed, see `dimse.sending`) the requestor did not accept fails
on its own. Counting, Pending / final responses and C-CANCEL are as for C-MOVE (`dimse.move`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from pynetdicom.events import Event

from pergamon.archive.retrieve import StoredInstance
from pergamon.archive.service import Archive
from pergamon.dimse.move import RetrieveResponse, perform_retrieve, responds_itself
from pergamon.dimse.sending import RequestorSender, Sender


@responds_itself
def handle_get(event: Event, archive: Archive) -> Iterator[RetrieveResponse]:
    """C-GET SCP (PS3.4 C.4.3.2): send the designated instances back over the request's association."""
    first_id = int(event.request.MessageID or 0) + 1

    def make_sender(instances: Sequence[StoredInstance]) -> Sender:
        return RequestorSender(event.assoc, archive, instances, first_id)

    yield from perform_retrieve(event, archive, "C-GET", make_sender)
