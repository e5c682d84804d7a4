"""Verification SCP (C-ECHO), PS3.4 Annex A: connectivity checks from any peer."""

from __future__ import annotations

from pynetdicom.events import Event

from pergamon.dimse.status import SUCCESS


def handle_echo(event: Event) -> int:
    """Answer success; association policy (AE titles) was already applied at negotiation."""
    return SUCCESS
