"""The HTTP listener: uvicorn serving `web.app` on its own thread and event loop.

The archive core is synchronous; endpoints call it through Starlette's thread pool. Stopping
stops accepting, lets running requests finish (uvicorn's graceful shutdown, bounded), then ends.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn

from pergamon.archive.service import Archive
from pergamon.web.app import build_app

log = logging.getLogger(__name__)


class HttpServer:
    """uvicorn in a background thread, with start/stop like the DICOM listener."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        settings = archive.settings.http
        config = uvicorn.Config(
            build_app(archive),
            host=settings.host,
            port=settings.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=int(archive.settings.server.shutdown_timeout),
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind the port (errors surface here, not in the thread) and start serving."""
        settings = self.archive.settings.http
        sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((settings.host, settings.port))
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"HTTP port {settings.host}:{settings.port}: {exc.strerror or exc}") from exc
        sock.listen(128)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, name="pergamon-http", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        log.info("HTTP listener on %s:%d (DICOMweb at %s)", settings.host, settings.port, settings.base_path)

    def stop(self) -> None:
        if self._thread is None:
            return
        self.server.should_exit = True
        self._thread.join(self.archive.settings.server.shutdown_timeout + 5)
        self._thread = None
