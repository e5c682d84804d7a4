"""Socket settings for every association Pergamon accepts or opens.

pynetdicom leaves Nagle's algorithm on. A DIMSE exchange is a series of small messages, each
waiting for an answer, so Nagle plus the peer's delayed ACK stalls up to ~40 ms per message
(measured: a one-match C-FIND took 50-100 ms with it, 10-15 ms without). TCP_NODELAY is set as
soon as the connection opens, on both accepted and requested associations.

Outgoing associations to a `[[dicom.remote]]` with `tls = true` use `tls_args` (ITI-19).
"""

from __future__ import annotations

import logging
import socket
import ssl
from typing import TYPE_CHECKING

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.events import Event

from pergamon.archive.events import NodeAuthenticationFailed
from pergamon.config import RemoteAE
from pergamon.security import tls

if TYPE_CHECKING:
    from pergamon.archive.service import Archive

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


def tls_args(archive: Archive, remote: RemoteAE) -> tuple[ssl.SSLContext, str] | None:
    """`tls_args` for `AE.associate` to `remote`: None for a plain peer, else the one TLS client policy.

    A handshake the peer fails (untrusted certificate, old protocol) is reported as
    `NodeAuthenticationFailed` (door "dicom") before pynetdicom turns it into an aborted association.

    Raises:
        ValueError: the peer wants TLS but no TLS client is configured (`load_settings` prevents it).
    """
    if not remote.tls:
        return None
    context = tls.client_context(archive.settings)
    if context is None:
        raise ValueError(f"{remote.ae_title} needs TLS, but [tls] has neither certificate nor ca_certificates")
    bus = archive.bus

    def refused(peer: str, reason: str) -> None:
        log.warning("DICOM TLS: %s (%s) refused: %s", remote.ae_title, peer, reason)
        bus.emit(NodeAuthenticationFailed(f"{remote.ae_title}@{peer}", reason, "dicom"))

    return tls.report_client_failures(context, refused), remote.host


def outbound_ae(archive: Archive) -> AE:
    """A fresh AE for one outgoing association of a job (reports, forwarding): our title, our timeouts."""
    settings = archive.settings.dicom
    ae = AE(ae_title=settings.ae_title)
    ae.acse_timeout = settings.acse_timeout
    ae.dimse_timeout = settings.dimse_timeout
    ae.network_timeout = settings.network_timeout
    ae.connection_timeout = settings.acse_timeout
    return ae


def why_not_established(assoc: Association, remote: RemoteAE) -> str:
    """What went wrong with an association that did not get established, for logs and job errors."""
    if assoc.is_rejected:
        return "rejected the association"
    if assoc.is_aborted:
        return "aborted the association (unreachable or not a DICOM peer?)"
    return "could not be reached" + (" over TLS" if remote.tls else "")
