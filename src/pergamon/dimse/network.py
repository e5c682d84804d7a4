"""Socket settings for every association Pergamon accepts or opens.

pynetdicom leaves Nagle's algorithm on. A DIMSE exchange is a series of small messages, each
waiting for an answer, so Nagle plus the peer's delayed ACK stalls up to ~40 ms per message
(measured: a one-match C-FIND took 50-100 ms with it, 10-15 ms without). TCP_NODELAY is set as
soon as the connection opens, on both accepted and requested associations.
"""

from __future__ import annotations

import logging
import socket

from pynetdicom import evt
from pynetdicom.events import Event

log = logging.getLogger(__name__)


def set_nodelay(event: Event) -> None:
    """EVT_CONN_OPEN handler: disable Nagle on the association's socket."""
    transport = getattr(event.assoc.dul, "socket", None)
    sock = getattr(transport, "socket", None)
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:  # e.g. the peer already closed the connection
        log.debug("cannot set TCP_NODELAY: %s", exc)


def end_unnegotiated_connection(event: Event) -> None:
    """EVT_CONN_CLOSE: end an acceptor association whose peer left before sending A-ASSOCIATE-RQ.

    pynetdicom's acceptor thread keeps waiting `acse_timeout` seconds for the request even after
    the connection is gone, so every TCP probe (health check, port scan, "is it up?") holds one of
    `max_associations` slots for 30 s and delays a graceful stop by `shutdown_timeout`. A None on
    the DUL's user queue is what that wait returns on timeout: the thread then ends at once.
    """
    assoc = event.assoc
    if assoc.is_acceptor and not (assoc.is_established or assoc.is_released or assoc.is_aborted or assoc.is_rejected):
        assoc.dul.to_user_queue.put(None)  # type: ignore[arg-type]


CONNECTION_HANDLERS = [(evt.EVT_CONN_OPEN, set_nodelay)]
