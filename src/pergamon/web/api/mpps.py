"""Operator REST view: mpps (to be written)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from pergamon.archive.service import Archive


def routes(archive: Archive) -> list[BaseRoute]:
    return []
