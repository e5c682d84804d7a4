"""The `pergamon` command: serve, import, config, certs, viewer install, view."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from pergamon.config import ConfigError, Settings, load_settings, markdown_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pergamon", description="Pergamon, an open PACS and VNA.")
    parser.add_argument(
        "--config", type=Path, default=None, help="TOML configuration file (default: none, or $PERGAMON_CONFIG)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="run the archive (DICOM listener and workers) until SIGTERM")
    imp = sub.add_parser("import", help="index a folder tree of DICOM files through the normal ingest path")
    imp.add_argument("paths", nargs="+", type=Path, help="files or folders to import")
    imp.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. in scripts)")
    cfg = sub.add_parser("config", help="print the configuration reference or the effective settings")
    cfg.add_argument("--markdown", action="store_true", help="print every key with its default as Markdown")
    certs = sub.add_parser("certs", help="create a test CA and node certificates for a lab (not for production)")
    certs.add_argument("directory", type=Path, help="folder for ca.pem, ca-key.pem and <host>.pem / <host>-key.pem")
    certs.add_argument(
        "--hosts",
        nargs="+",
        required=True,
        metavar="HOST",
        help="one certificate per HOST; `name,alias,...` for more names",
    )
    certs.add_argument("--days", type=int, default=730, help="validity in days (ITI-19 recommends at most 2 years)")
    certs.add_argument("--key-size", type=int, default=2048, help="RSA key size, 2048-4096 bits")
    viewer = sub.add_parser("viewer", help="the bundled web viewer (OHIF) served at /viewer/")
    viewer_sub = viewer.add_subparsers(dest="viewer_command", required=True)
    viewer_install = viewer_sub.add_parser("install", help="deploy the pinned OHIF build into viewer.path")
    viewer_install.add_argument("--tarballs", type=Path, default=None, help="folder of the pinned .tgz files (no npm)")
    viewer_install.add_argument("--force", action="store_true", help="reinstall even when the installed one is current")
    view = sub.add_parser("view", help="show a CD/DVD/USB folder (DICOMDIR) in the viewer without importing it")
    view.add_argument("media", type=Path, help="the media folder (holding DICOMDIR) or the DICOMDIR file")
    view.add_argument("--port", type=int, default=0, help="HTTP port on 127.0.0.1 (default: a free one)")
    view.add_argument("--open", action="store_true", help="open the page in the default web browser")
    # Subcommands accept --config after their name too ("pergamon serve --config FILE").
    for p in (sub.choices["serve"], imp, cfg, viewer_install, view):
        p.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.command == "config" and args.markdown:
        sys.stdout.write(markdown_table())
        return 0
    if args.command == "certs":
        return make_certs(args.directory, args.hosts, args.days, args.key_size)
    config_path = args.config or (Path(os.environ["PERGAMON_CONFIG"]) if os.environ.get("PERGAMON_CONFIG") else None)
    try:
        settings = load_settings(config_path)
    except ConfigError as exc:
        print(f"pergamon: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings)

    try:
        if args.command == "serve":
            return serve(settings)
        if args.command == "import":
            from pergamon.importer import run_import

            return run_import(settings, args.paths, progress=not args.no_progress)
        if args.command == "viewer":
            return install_viewer(settings, args.tarballs, args.force)
        if args.command == "view":
            from pergamon.media.display import run_view

            return run_view(settings, args.media, port=args.port, open_browser=args.open)
    except SQLAlchemyError as exc:
        url = make_url(settings.database_url).render_as_string(hide_password=True)
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        logging.getLogger("pergamon").error("cannot use the index database %s: %s", url, reason)
        return 1
    print(settings)
    return 0


def make_certs(directory: Path, hosts: list[str], days: int, key_size: int) -> int:
    """`pergamon certs`: the lab CA (created or reused) and one node certificate per host."""
    from pergamon.security.certs import config_snippet, create_lab_pki

    try:
        nodes = create_lab_pki(directory, hosts, days=days, key_size=key_size)
    except (ValueError, OSError) as exc:
        print(f"pergamon certs: {exc}", file=sys.stderr)
        return 2
    print(f"CA: {directory / 'ca.pem'} (key {directory / 'ca-key.pem'}: keep it off the nodes)")
    for node in nodes:
        print(f"{node.name}: {node.certificate}, key {node.private_key}")
    print(f"\nConfiguration of {nodes[0].name}:\n\n{config_snippet(directory, nodes[0])}", end="")
    return 0


def install_viewer(settings: Settings, tarballs: Path | None, force: bool) -> int:
    """`pergamon viewer install`: deploy the pinned viewer into `viewer.path` (nothing when current)."""
    from pergamon.viewer.install import InstallError, install

    target = settings.viewer_path
    try:
        done = install(target, tarballs=tarballs, force=force)
    except (InstallError, OSError, subprocess.SubprocessError) as exc:
        print(f"pergamon viewer install: {exc}", file=sys.stderr)
        return 1
    print(f"viewer {'installed in' if done else 'already current in'} {target}")
    return 0


def setup_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.server.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # pynetdicom logs every PDU at INFO; keep its warnings and errors only unless debugging.
    if settings.server.log_level != "DEBUG":
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def serve(settings: Settings) -> int:
    from pergamon.archive import codecs

    codecs.defer()  # before pydicom is imported: GDCM loads on the first decode (~19 MiB less when idle)
    from pergamon.runtime import Pergamon

    try:
        app = Pergamon(settings)
    except OSError as exc:
        logging.getLogger("pergamon").error("cannot start: %s", exc)
        return 1
    try:
        app.run_until_signalled()
    except OSError as exc:  # e.g. port already in use
        logging.getLogger("pergamon").error("cannot start: %s", exc)
        app.stop()
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
