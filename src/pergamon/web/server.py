"""The HTTP listeners: uvicorn serving `web.app` on its own thread and event loop, plain and HTTPS.

The archive core is synchronous; endpoints call it through Starlette's thread pool. Stopping
stops accepting, lets running requests finish (uvicorn's graceful shutdown, bounded), then ends.

The plain `http.port` always listens (ATNA "STX: No Secure Transport"); `tls.http_port`, when set,
serves the same application over TLS with `security.tls.server_context` (ITI-19 Authenticate
Node, RFC 9325). The context is not handed to uvicorn: asyncio only logs a failed TLS handshake,
at debug level and only in its debug mode, so a refused peer could not be audited. Instead each
accepted connection gets `_AuthenticatingProtocol`, asyncio's own `SSLProtocol` (what
`loop.create_server(ssl=...)` builds) wrapped around uvicorn's HTTP protocol, whose handshake
completion hook reports failures as `NodeAuthenticationFailed` (door "http"). It relies on the
private `SSLProtocol._on_handshake_complete` of Python >= 3.11's asyncio (unchanged through 3.13);
should it disappear, handshakes still work and only the event is lost.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import time
from asyncio import sslproto
from collections.abc import Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

from pergamon.archive.events import NodeAuthenticationFailed
from pergamon.archive.service import Archive
from pergamon.security import tls
from pergamon.web.app import build_app

log = logging.getLogger(__name__)

Refused = Callable[[str, str], None]


class _AuthenticatingProtocol(sslproto.SSLProtocol):
    """Server-side TLS around an HTTP protocol; a failed handshake calls `on_refused(peer, reason)`."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        app_protocol: asyncio.BaseProtocol,
        context: ssl.SSLContext,
        on_refused: Refused,
    ) -> None:
        # waiter None: nobody awaits the handshake (typeshed wants a Future; asyncio accepts None)
        timeout = tls.HANDSHAKE_TIMEOUT
        super().__init__(loop, app_protocol, context, None, server_side=True, ssl_handshake_timeout=timeout)  # type: ignore[arg-type]
        self._on_refused = on_refused

    def _on_handshake_complete(self, handshake_exc: BaseException | None) -> None:
        if handshake_exc is not None:
            transport = getattr(self, "_transport", None)
            peer = tls.peer_name(transport.get_extra_info("peername")) if transport is not None else "unknown"
            reason = tls.describe_failure(handshake_exc)
            if tls.is_authentication_failure(handshake_exc):
                log.warning("HTTPS: refused %s: %s", peer, reason)
                self._on_refused(peer, reason)
            else:
                log.debug("HTTPS: %s left during the handshake (%s)", peer, reason)
        super()._on_handshake_complete(handshake_exc)


def _tls_protocol_factory(context: ssl.SSLContext, on_refused: Refused) -> Callable[..., asyncio.BaseProtocol]:
    """A uvicorn `http` protocol "class": uvicorn's auto HTTP protocol inside `_AuthenticatingProtocol`."""
    http_protocol = import_from_string(HTTP_PROTOCOLS["auto"])

    def create(*, _loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any) -> asyncio.BaseProtocol:
        loop = _loop or asyncio.get_running_loop()
        return _AuthenticatingProtocol(loop, http_protocol(_loop=_loop, **kwargs), context, on_refused)

    return create


def _bind(host: str, port: int, what: str) -> socket.socket:
    """A listening socket; a bind error names the door and port."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"{what} port {host}:{port}: {exc.strerror or exc}") from exc
    sock.listen(128)
    return sock


class HttpServer:
    """uvicorn in background threads (plain, and HTTPS when configured), with start/stop like the DICOM listener."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        app = build_app(archive)
        self.server = uvicorn.Server(self._config(app, archive.settings.http.port))
        self.tls_server: uvicorn.Server | None = None
        context = tls.server_context(archive.settings) if archive.settings.tls.http_port else None
        if context is not None:
            bus = archive.bus

            def refused(peer: str, reason: str) -> None:
                bus.emit(NodeAuthenticationFailed(peer, reason, "http"))

            http = _tls_protocol_factory(context, refused)
            # The plain listener runs on uvloop when installed (uvicorn's "auto"; STOW-RS of 10 CT
            # slices per request went from 58 to 85 instances/s); HTTPS keeps asyncio's loop, which
            # `_AuthenticatingProtocol` (asyncio's SSLProtocol) is written for.
            self.tls_server = uvicorn.Server(
                self._config(app, archive.settings.tls.http_port, http=http, loop="asyncio")
            )
        self._threads: list[threading.Thread] = []

    def _config(self, app: Starlette, port: int, **extra: Any) -> uvicorn.Config:
        return uvicorn.Config(
            app,
            host=self.archive.settings.http.host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=int(self.archive.settings.server.shutdown_timeout),
            **extra,
        )

    def start(self) -> None:
        """Bind the ports (errors surface here, not in the threads) and start serving."""
        settings = self.archive.settings.http
        sockets = [(self.server, _bind(settings.host, settings.port, "HTTP"), "pergamon-http")]
        if self.tls_server is not None:
            try:
                tls_sock = _bind(settings.host, self.archive.settings.tls.http_port, "HTTPS")
            except OSError:
                sockets[0][1].close()
                raise
            sockets.append((self.tls_server, tls_sock, "pergamon-https"))
        for server, sock, name in sockets:
            thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        deadline = time.monotonic() + 10
        for (server, _sock, _name), thread in zip(sockets, self._threads, strict=True):
            while not server.started and thread.is_alive() and time.monotonic() < deadline:
                time.sleep(0.01)
        log.info("HTTP listener on %s:%d (DICOMweb at %s)", settings.host, settings.port, settings.base_path)
        if self.tls_server is not None:
            log.info("HTTPS listener on %s:%d", settings.host, self.archive.settings.tls.http_port)

    def stop(self) -> None:
        if not self._threads:
            return
        for server in (self.server, self.tls_server):
            if server is not None:
                server.should_exit = True
        for thread in self._threads:
            thread.join(self.archive.settings.server.shutdown_timeout + 5)
        self._threads = []
