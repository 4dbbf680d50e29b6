"""
A mistake in a C{.tac} file is one line.  twistd prints a traceback for
any exception that leaves a C{.tac} file, above its own C{Failed to load
application: ...}; the reason is all an operator needs, and the file and
line are in it only when the mistake is a bug of the file's own.  What a
C{.tac} file calls to configure echoapp (the config classes, the service
builders, L{ReplyTemplate.parse}, L{StreamListen.parse}) is wrapped here:
while twistd loads a C{.tac}, its L{ValueError} ends start-up as a
L{SystemExit} with the one line, which twistd lets through.  Called from
anywhere else, it is the L{ValueError} it always was.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from echoapp._twisted import fall_back

Call = TypeVar("Call", bound=Callable[..., Any])


def loading_tac(wrapper: Any = None) -> bool:
    """
    Whether the caller was called by twistd loading a C{.tac} file (C{twistd
    -y}): Twisted's C{sob.loadValueFromFile} runs the file, and twistd
    prints a traceback for any exception that leaves it.  Found by looking
    for that function's frame up the stack; where it cannot be found, never
    (said once, as the seam's items say it).  With C{wrapper} (a code
    object), only if no frame of it lies between: the outermost of nested
    wrappers is the one that answers.
    """
    try:
        from twisted.persisted import sob  # where used: a Twisted without it costs this only

        loader = sob.loadValueFromFile.__code__
    except (ImportError, AttributeError):
        fall_back(
            "loading_tac",
            "twisted.persisted.sob.loadValueFromFile is gone",
            "a mistake in a .tac file is shown with twistd's traceback",
        )
        return False
    here = inspect.currentframe()
    frame = here.f_back.f_back if here is not None and here.f_back is not None else None
    while frame is not None:  # the caller's caller, and up
        if frame.f_code is loader:
            return True
        if frame.f_code is wrapper:
            return False
        frame = frame.f_back
    return False


class TacMistake(SystemExit):
    """A C{.tac} file configured echoapp wrongly: start-up ends with this line, status 1."""


def one_line_in_tac(function: Call) -> Call:
    """
    C{function}, whose L{ValueError} while twistd loads a C{.tac} file is a
    L{TacMistake}: in the outermost wrapped call only, so the reason keeps
    what the outer calls add (C{GreeterConfig(reply=...)} says C{reply:}).
    """

    @functools.wraps(function)
    def checked(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except ValueError as error:
            if loading_tac(checked.__code__):  # type: ignore[attr-defined]
                raise TacMistake(f"echoapp: in the .tac file: {error}") from None
            raise

    return checked  # type: ignore[return-value]
