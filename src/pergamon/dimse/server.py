"""The DICOM listener: one pynetdicom AE with every service Pergamon offers, wired to the core.

Wiring only: presentation contexts, association policy (called / calling AE titles) and one
handler per DIMSE event, each handler living in the module named after its service.

Two listeners share the AE: the plain `dicom.port` (ATNA "STX: No Secure Transport") and, when
`tls.dicom_port` is set, a TLS one with `security.tls.server_context` (ITI-19 Authenticate Node;
DICOM PS3.15 B.10 BCP 195 non-downgrading profile). pynetdicom's own `AssociationServer` wraps
each accepted socket and runs the TLS handshake in its accept loop: one peer that stalls the
handshake would block every other connection, and a failed handshake is swallowed by
`socketserver`. `TlsAssociationServer` therefore only wraps the socket on accept and runs the
handshake on the connection's own thread (bounded by `tls.HANDSHAKE_TIMEOUT`); a refused peer
(no or untrusted certificate, old protocol, no shared cipher) is logged and reported as a
`NodeAuthenticationFailed` event (door "dicom") for the audit trail.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable

from pynetdicom import AE, _config, evt
from pynetdicom.presentation import AllStoragePresentationContexts, PresentationContext
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from pergamon.archive.events import NodeAuthenticationFailed
from pergamon.archive.service import Archive
from pergamon.dimse import (
    commitment,
    direct_store,
    echo,
    fastpath,
    find,
    get,
    move,
    mpps,
    network,
    store,
    store_workers,
)
from pergamon.security import tls

log = logging.getLogger(__name__)

# Transfer syntaxes accepted for storage (PS3.5 Annex A; ihe-radiology.md 4.2). Objects are kept
# in the syntax they arrive in, so accepting a syntax needs no codec.
STORAGE_TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless, Non-Hierarchical (Process 14)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless, First-Order Prediction (Process 14 SV1)
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Lossy (Near-Lossless)
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 (Lossless Only)
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.92",  # JPEG 2000 Part 2 Multi-component (Lossless Only)
    "1.2.840.10008.1.2.4.93",  # JPEG 2000 Part 2 Multi-component
    "1.2.840.10008.1.2.4.201",  # High-Throughput JPEG 2000 (Lossless Only)
    "1.2.840.10008.1.2.4.202",  # High-Throughput JPEG 2000 with RPCL (Lossless Only)
    "1.2.840.10008.1.2.4.203",  # High-Throughput JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.100",  # MPEG2 Main Profile / Main Level
    "1.2.840.10008.1.2.4.101",  # MPEG2 Main Profile / High Level
    "1.2.840.10008.1.2.4.102",  # MPEG-4 AVC/H.264 High Profile / Level 4.1
    "1.2.840.10008.1.2.4.103",  # MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1
    "1.2.840.10008.1.2.4.104",  # MPEG-4 AVC/H.264 High Profile / Level 4.2 for 2D Video
    "1.2.840.10008.1.2.4.105",  # MPEG-4 AVC/H.264 High Profile / Level 4.2 for 3D Video
    "1.2.840.10008.1.2.4.106",  # MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2
    "1.2.840.10008.1.2.4.107",  # HEVC/H.265 Main Profile / Level 5.1
    "1.2.840.10008.1.2.4.108",  # HEVC/H.265 Main 10 Profile / Level 5.1
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old devices)
]
UNCOMPRESSED_TRANSFER_SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]

QUERY_RETRIEVE_CLASSES = (
    StudyRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelGet,
)


def configure_pynetdicom(archive: Archive) -> None:
    """Process-wide pynetdicom settings, changed once here at startup.

    Received datasets stream to a temporary file (bounded memory for any object size), in the
    archive's own temporary folder so the core can move them into the blob store with a rename.
    Objects are sent from their files without decoding (bit-preserving, bounded memory).
    `fastpath` takes the polling sleeps out of pynetdicom's receive loop.
    """
    fastpath.install()
    # pynetdicom's standard handlers format every message and data set for its logger, which
    # `cli.setup_logging` keeps at WARNING unless debugging: ~7% of a C-FIND response's time.
    debug = archive.settings.server.log_level == "DEBUG"
    _config.LOG_HANDLER_LEVEL = "standard" if debug else "none"
    _config.LOG_REQUEST_IDENTIFIERS = _config.LOG_RESPONSE_IDENTIFIERS = debug  # each one is a full dump
    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.STORE_SEND_CHUNKED_DATASET = True
    tempfile.tempdir = str(archive.temp_dir)
    move.install_retrieve_responses()


def build_ae(archive: Archive) -> AE:
    """An AE with Pergamon's presentation contexts, timeouts and association policy."""
    settings = archive.settings.dicom
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_pdu_size = settings.max_pdu_size
    ae.maximum_associations = settings.max_associations
    ae.network_timeout = settings.network_timeout
    ae.acse_timeout = settings.acse_timeout
    ae.dimse_timeout = settings.dimse_timeout
    ae.require_called_aet = settings.check_called_ae
    if not settings.accept_unknown_callers:
        ae.require_calling_aet = [remote.ae_title for remote in settings.remote]

    ae.add_supported_context(Verification)
    for cx in AllStoragePresentationContexts:
        # Accepting both roles lets a C-GET requestor take the Storage SCP role on this
        # association (PS3.7 D.3.3.4) and still store to us if it proposed both; senders that
        # propose no role selection are unaffected.
        ae.add_supported_context(cx.abstract_syntax, STORAGE_TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
    for sop_class in QUERY_RETRIEVE_CLASSES:
        ae.add_supported_context(sop_class, UNCOMPRESSED_TRANSFER_SYNTAXES)
    ae.add_supported_context(StorageCommitmentPushModel, UNCOMPRESSED_TRANSFER_SYNTAXES)
    for pps_class in mpps.PPS_CLASSES:  # MPPS, and GP-PPS (retired; registered with pynetdicom by `dimse.mpps`)
        ae.add_supported_context(pps_class, UNCOMPRESSED_TRANSFER_SYNTAXES)
    return ae


class _SharedSyntaxContext(PresentationContext):
    """A supported context that each association copies cheaply.

    pynetdicom gives every association a `deepcopy` of the listener's contexts: ~30 ms of CPU for
    our ~180 contexts and ~4,600 transfer syntax UIDs, paid on every association, C-ECHO probes and
    one-study-per-association senders included. UIDs are immutable strings, so only the list needs
    to be new.
    """

    @classmethod
    def copy_of(cls, context: PresentationContext) -> _SharedSyntaxContext:
        clone = cls()
        clone.__dict__.update(context.__dict__)
        clone._transfer_syntax = list(context._transfer_syntax)
        return clone

    def __deepcopy__(self, memo: dict[int, object]) -> _SharedSyntaxContext:
        return self.copy_of(self)


def listener_contexts(ae: AE) -> list[PresentationContext]:
    """The AE's supported contexts as `_SharedSyntaxContext`s, for the listeners."""
    return [_SharedSyntaxContext.copy_of(context) for context in ae.supported_contexts]


def handlers(archive: Archive) -> list[tuple[evt.EventType, object, list[object]] | tuple[evt.EventType, object]]:
    """One handler per DIMSE event, each from the module of its service."""
    bound: list[tuple[evt.EventType, object, list[object]] | tuple[evt.EventType, object]] = [
        (evt.EVT_CONN_OPEN, network.set_nodelay),
        (evt.EVT_CONN_CLOSE, network.end_unnegotiated_connection),
        (evt.EVT_CONN_CLOSE, store.discard_unfinished_transfer),
        (evt.EVT_C_ECHO, echo.handle_echo),
        (evt.EVT_C_STORE, store.handle_store, [archive]),
        (evt.EVT_C_FIND, find.handle_find, [archive]),
        (evt.EVT_C_MOVE, move.handle_move, [archive]),
        (evt.EVT_C_GET, get.handle_get, [archive]),
        (evt.EVT_N_ACTION, commitment.handle_n_action, [archive]),
        (evt.EVT_N_CREATE, mpps.handle_n_create, [archive]),
        (evt.EVT_N_SET, mpps.handle_n_set, [archive]),
    ]
    return bound


class TlsAssociationServer(ThreadedAssociationServer):
    """A TLS listener whose handshakes run on the connection's thread, failures reported.

    `on_refused(peer, reason)` is set by `DicomServer` before the accept loop starts.
    """

    on_refused: Callable[[str, str], None] | None = None

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept and wrap, leaving the handshake to `process_request_thread`."""
        assert self.socket is not None and self.ssl_context is not None
        client, address = self.socket.accept()
        try:
            wrapped = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        except OSError:
            client.close()
            raise
        return wrapped, address

    def process_request_thread(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: object
    ) -> None:
        """Complete the handshake (bounded), then serve the association as pynetdicom does."""
        assert isinstance(request, ssl.SSLSocket)
        previous = request.gettimeout()
        try:
            request.settimeout(tls.HANDSHAKE_TIMEOUT)
            request.do_handshake()
            request.settimeout(previous)
        except OSError as exc:  # ssl.SSLError, timeouts and resets are all OSErrors
            self._refused(request, client_address, exc)
            return
        super().process_request_thread(request, client_address)  # type: ignore[arg-type]

    def _refused(self, request: socket.socket, client_address: object, exc: OSError) -> None:
        peer = tls.peer_name(client_address)
        reason = tls.describe_failure(exc)
        with contextlib.suppress(OSError):
            self.shutdown_request(request)
        if not tls.is_authentication_failure(exc):
            log.debug("DICOM TLS: %s left during the handshake (%s)", peer, reason)
            return
        log.warning("DICOM TLS: refused %s: %s", peer, reason)
        if self.on_refused is not None:
            self.on_refused(peer, reason)


class DicomServer:
    """The running listeners (plain and, when configured, TLS), with a graceful stop."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        configure_pynetdicom(archive)
        self.ae = build_ae(archive)
        self.workers: store_workers.StoreWorkers | None = None
        settings = archive.settings.dicom
        if settings.direct_store:
            count = (os.cpu_count() or 1) if settings.store_workers < 0 else settings.store_workers
            if count:
                self.workers = store_workers.StoreWorkers(archive.settings, archive.bus, count)
                archive.store_delegate = self.workers.store_file
            direct_store.enable(self.ae, archive, self.workers)
        self.server: ThreadedAssociationServer | None = None
        self.tls_server: TlsAssociationServer | None = None

    def start(self) -> None:
        """Start the store workers (unless they start on demand), then listen (each association on a thread)."""
        settings = self.archive.settings.dicom
        if self.workers is not None:
            self.workers.start()
            if not self.workers.on_demand and not self.workers.wait_started():
                log.warning("not every store worker started; storage associations may run in the main process")
        try:
            self.server = self.ae.start_server(
                (settings.host, settings.port),
                block=False,
                contexts=listener_contexts(self.ae),
                evt_handlers=handlers(self.archive),  # type: ignore[arg-type]
            )
        except OSError as exc:
            raise OSError(exc.errno, f"DICOM port {settings.host}:{settings.port}: {exc.strerror or exc}") from exc
        log.info("DICOM listener %s on %s:%d", settings.ae_title, settings.host, settings.port)
        tls_port = self.archive.settings.tls.dicom_port
        context = tls.server_context(self.archive.settings) if tls_port else None
        if context is None:
            return
        try:
            self.tls_server = self._start_tls(settings.host, tls_port, context)
        except OSError as exc:
            self.stop(0)
            raise OSError(exc.errno, f"DICOM TLS port {settings.host}:{tls_port}: {exc.strerror or exc}") from exc
        log.info(
            "DICOM TLS listener %s on %s:%d (%s)",
            settings.ae_title,
            settings.host,
            tls_port,
            "mutual TLS" if self.archive.settings.tls.verify_peers else "no client certificate required",
        )

    def _start_tls(self, host: str, port: int, context: ssl.SSLContext) -> TlsAssociationServer:
        """Like `AE.start_server(block=False, ssl_context=...)`, with `TlsAssociationServer`."""
        server = self.ae.make_server(
            (host, port),
            ssl_context=context,
            evt_handlers=handlers(self.archive),  # type: ignore[arg-type]
            contexts=listener_contexts(self.ae),
            server_class=TlsAssociationServer,
        )
        assert isinstance(server, TlsAssociationServer)
        bus = self.archive.bus
        server.on_refused = lambda peer, reason: bus.emit(NodeAuthenticationFailed(peer, reason, "dicom"))
        threading.Thread(target=server.serve_forever, name="pergamon-dicom-tls", daemon=True).start()
        self.ae._servers.append(server)
        return server

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def stop(self, timeout: float) -> None:
        """Stop accepting, give running associations `timeout` seconds to finish, then abort the rest."""
        servers = [s for s in (self.server, self.tls_server) if s is not None]
        if not servers:
            if self.workers is not None:
                self.workers.stop()
            return
        for server in servers:
            # socketserver's shutdown ends the accept loop; closing the socket refuses new connections.
            stopper = threading.Thread(target=super(ThreadedAssociationServer, server).shutdown, daemon=True)
            stopper.start()
            stopper.join(timeout=5)
            server.server_close()
        deadline = time.monotonic() + timeout
        while any(s.active_associations for s in servers) and time.monotonic() < deadline:
            time.sleep(0.05)
        remaining = [assoc for s in servers for assoc in s.active_associations]
        if remaining:
            log.warning("aborting %d association(s) still running after %.0f s", len(remaining), timeout)
            for assoc in remaining:
                assoc.abort()
        else:
            log.info("all associations finished")
        for server in servers:
            if server in self.ae._servers:
                self.ae._servers.remove(server)
        self.server = None
        self.tls_server = None
        if self.workers is not None:
            self.workers.stop()
