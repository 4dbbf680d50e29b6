"""
The process-wide file-descriptor ceiling: how many connections this process
may hold before C{accept()} would fail.  Every service's admission checks
it, so one service cannot starve another of descriptors.
"""

from __future__ import annotations

from echoapp._process import PROCESS

# One per process, in L{PROCESS}: descriptors are a process-wide resource.
DESCRIPTORS = PROCESS.descriptors


class HoldsDescriptor:
    """
    A connection that counts its descriptor against the process's ceiling
    from L{hold_descriptor} until L{release_descriptor}, once however often
    either is called (a protocol's C{connectionLost} can come twice through
    wrappers, and a close may come before C{connectionMade} is done).  Every
    holder that is not one of a service's L{echoapp._limits.connections.Connections} (refusals, PROXY
    connections before their header, metrics clients, the C{refuse} fault)
    counts itself this way, so no site keeps a count of its own.
    """

    _descriptor_held = False

    def hold_descriptor(self) -> None:
        """Count this connection's descriptor against the ceiling, once."""
        if not self._descriptor_held:
            self._descriptor_held = True
            DESCRIPTORS.hold()

    def release_descriptor(self) -> None:
        """
        Give the descriptor back, once, however often the connection says it
        is gone.
        """
        if self._descriptor_held:
            self._descriptor_held = False
            DESCRIPTORS.release()
