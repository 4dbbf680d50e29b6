"""
echoapp-client: talk to every echoapp service (and any plain-text TCP
service) from the command line, one-shot or interactively.

Errors are one line on stderr and a documented exit status, never a
traceback: L{options.EXIT_USAGE} for a mistake on the command line,
L{options.EXIT_CONNECTION} when the connection fails or the server hangs up early,
L{options.EXIT_TIMEOUT} when no reply comes in time.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from twisted.internet import task
from twisted.python import usage

from echoapp._client.modes import MODES
from echoapp._client.options import EXIT_INTERRUPTED, EXIT_USAGE, ClientError, Options


async def _main(reactor: Any, options: usage.Options) -> None:
    reactor.callWhenRunning(signal.signal, signal.SIGINT, _interrupted)
    try:
        await MODES[str(options.subCommand)](reactor, options.subOptions)
    except ClientError as problem:
        sys.stderr.write(f"echoapp-client: {problem}\n")
        raise SystemExit(problem.code) from None


def _interrupted(signum: int, frame: Any) -> None:
    """Ctrl-C: leave at once and quietly."""
    sys.stdout.flush()
    os._exit(EXIT_INTERRUPTED)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """
    C{echoapp-client}: parse the command line, run the chosen mode on a fresh
    reactor, exit with its status (one line on standard error for any
    mistake).
    """
    options = Options()
    try:
        options.parseOptions(list(sys.argv[1:] if argv is None else argv))
    except usage.UsageError as problem:
        sys.stderr.write(f"echoapp-client: {problem}\n(echoapp-client --help for help)\n")
        raise SystemExit(EXIT_USAGE) from None
    task.react(_main, (options,))
