"""
echoapp's optional C accelerator (C{echoapp/_mmsg.c}), found once: the
UDP ports' batched reads and replies (L{echoapp._transports.datagram_batches})
and the wire record's packing (L{echoapp._record.packets}) use it where it
was built, and their Python twins where not.  It sits on the lowest floor
because both of those, on different floors, ask for it.
"""

from __future__ import annotations

import os
from functools import cache
from types import ModuleType

# Set (to anything) to use the Python twins even where the accelerator is
# built; also what setup.py reads to skip building it.
ACCELERATOR_OFF = "ECHOAPP_NO_ACCELERATOR"


@cache
def accelerator() -> ModuleType | None:
    """
    The C accelerator, imported on first use (a small module); C{None}
    where it was not built, or is turned off (L{ACCELERATOR_OFF}).
    """
    if os.environ.get(ACCELERATOR_OFF):
        return None
    try:
        from echoapp import _mmsg
    except ImportError:
        return None
    return _mmsg
