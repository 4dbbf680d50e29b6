"""
A service whose start-up work is done once, in twistd's privileged step
(before any listener binds and says where, and before twistd drops
privileges) or, where there is none (C{twist}, a test that only calls
C{startService}), at start: the one rule the fault notice, the signal
handlers and the wire record's capture file follow.
"""

from __future__ import annotations

from twisted.application.service import Service


class StartsOnce(Service):
    """
    A L{Service} that calls L{start_once} the first time it is started,
    privileged or not, and again only after it has been stopped.
    """

    _started_once = False

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._once()

    def startService(self) -> None:
        super().startService()
        self._once()  # twist has no privileged step

    def stopService(self) -> object:
        self._started_once = False
        return super().stopService()

    def _once(self) -> None:
        if not self._started_once:
            self._started_once = True
            self.start_once()

    def start_once(self) -> None:
        """The work, done once: a subclass says what it is."""
