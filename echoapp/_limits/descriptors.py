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
