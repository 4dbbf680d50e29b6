"""
What every named proxy has, TCP or UDP: its spec, its toxics, its listener
while enabled, the address it shows, toxiproxy's JSON for it, and the check
that a toxic is one its kind of traffic can have.
"""

from __future__ import annotations

from typing import Any

from echoapp import StartupError
from echoapp._proxy.addresses import offered_by, shown
from echoapp._proxy.errors import CannotListen, Invalid
from echoapp._proxy.schema import ProxySpec
from echoapp._proxy.toxics import ProxyFaults, Toxic, toxics_json


class NamedProxy:
    """
    One named proxy; L{KIND} names its kind in a refusal.
    """

    KIND = ""

    def __init__(self, spec: ProxySpec, faults: ProxyFaults) -> None:
        self.spec = spec
        self.name = spec.name
        self.faults = faults
        self.owner: Any = None
        self.listener: Any = None

    def check_toxic(self, toxic: Toxic) -> None:
        """
        @raise Invalid: for a toxic its stream cannot have (UDP loss
            on TCP; bandwidth, slicing or resets on UDP; a half-close over
            TLS; a stalled handshake without TLS).
        """
        try:
            toxic.faults.check_applies(*offered_by(self.spec, toxic.direction))
        except ValueError as error:
            raise Invalid(f"toxic {toxic.name} on {self.KIND} proxy {self.name}: {error}") from None

    @property
    def port(self) -> Any:
        return self.listener.port if self.listener is not None else None

    @property
    def address(self) -> str:
        """Where it listens now (the real port for port 0), or as it was asked while disabled."""
        port = self.port
        return shown(port.getHost()) if port is not None else self.spec.listen

    def _start(self, listener: Any) -> None:
        """
        Bind C{listener} now; its lines name the proxies' service.

        @raise CannotListen: for an address it cannot have.
        """
        listener.parent = self.owner  # named in its lines, not a child
        try:
            listener.privilegedStartService()
        except StartupError as error:
            raise CannotListen(str(error.code)) from None
        listener.running = 1
        self.listener = listener

    def as_json(self) -> dict[str, Any]:
        """toxiproxy's shape, field for field (its C{Logger} is always empty)."""
        return {
            "name": self.name,
            "listen": self.address,
            "upstream": self.spec.upstream,
            "enabled": self.spec.enabled,
            "Logger": {},
            "toxics": toxics_json(self.faults),
        }
