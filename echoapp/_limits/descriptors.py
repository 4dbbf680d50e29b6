"""
The process-wide file-descriptor ceiling: how many connections this process
may hold before C{accept()} would fail.  Every service's admission checks
it, so one service cannot starve another of descriptors.
"""

from __future__ import annotations

import resource

from twisted.logger import Logger

log = Logger(namespace="echoapp.descriptors")

# Descriptors kept free for listening sockets, log files and the like.
FD_RESERVE = 16


class Descriptors:
    """The ceiling (from C{RLIMIT_NOFILE}) and how many connections hold descriptors now."""

    def __init__(self) -> None:
        self.ceiling: int | None = None
        self.open = 0

    def hold(self) -> None:
        """One more descriptor is held (a connection, a refusal, a metrics client)."""
        self.open += 1

    def release(self) -> None:
        """A descriptor held with L{hold} is closed."""
        self.open -= 1

    def raise_limit(self) -> int:
        """
        Raise the soft RLIMIT_NOFILE to the hard limit, once, and log the
        figure: the connection ceiling follows from it.
        """
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and soft < hard:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
                soft = hard
            except (ValueError, OSError):
                pass
        if self.ceiling is None:
            log.info(
                "File descriptor limit {limit}; at most {ceiling} connections",
                limit=soft,
                ceiling=soft - FD_RESERVE,
            )
        self.ceiling = max(soft - FD_RESERVE, 1)
        return soft

    def limit(self) -> int:
        """The ceiling: from the raised limit once a listener has started, else from the current one."""
        if self.ceiling is None:
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            return max(soft - FD_RESERVE, 1)
        return self.ceiling

    def full(self) -> bool:
        """True when one more connection would pass the ceiling."""
        return self.open >= self.limit()


# One per process: descriptors are a process-wide resource.
DESCRIPTORS = Descriptors()


class HoldsDescriptor:
    """
    A connection that counts its descriptor against the process's ceiling
    from L{hold_descriptor} until L{release_descriptor}, once however often
    either is called (a protocol's C{connectionLost} can come twice through
    wrappers, and a close may come before C{connectionMade} is done).  Every
    holder that is not one of a service's L{Connections} (refusals, PROXY
    connections before their header, metrics clients, the C{refuse} fault)
    counts itself this way, so no site keeps a count of its own.
    """

    _descriptor_held = False

    def hold_descriptor(self) -> None:
        if not self._descriptor_held:
            self._descriptor_held = True
            DESCRIPTORS.hold()

    def release_descriptor(self) -> None:
        if self._descriptor_held:
            self._descriptor_held = False
            DESCRIPTORS.release()
