"""
echoapp: classic socket-tutorial services, done properly with Twisted.

The public API is this list, and nothing else; every other module is
private by name (a leading underscore, or inside a private subpackage) and
may change in any release.  C{tests/test_architecture.py} pins the list, so
that removing a name is a visible decision.

  - the twistd plugins C{echoapp}, C{echoapp-tcp}, C{echoapp-echo},
    C{echoapp-udp}, C{echoapp-proxy} (with toxiproxy's HTTP API) and
    C{echoapp-compose}, the C{echoapp-client} command and C{python -m echoapp};
  - L{echoapp.services}: the service trees the plugins and C{.tac} files run,
    and C{Faults}, what goes wrong on purpose;
  - L{echoapp.config}: what a service is told (messages, framing, limits), validated;
  - L{echoapp.template}: the reply template;
  - L{echoapp.signals}: SIGHUP/SIGUSR1/SIGTERM handling for a C{.tac} file;
  - L{echoapp.logs}: the JSON log observer for C{twistd --logger};
  - L{echoapp.reactor}: the uvloop reactor C{twistd --reactor=uvloop} installs;
  - L{echoapp.testing}: echoapp as a test peer, faults on demand, and the
    pytest plugin's fixtures;
  - here: L{__version__} and L{StartupError}.

The layers, bottom up (each imports only from its own floor or lower):
values (C{config}, C{template}, C{_reasons}, C{_framing}, C{_peers}) and
the seam for Twisted's internals (C{_twisted}); C{_metrics}; C{_limits/};
C{_transports/}; C{_http}; C{_protocols/} and C{_faults}; C{services}; C{_proxy/}; C{_monitor}
and C{signals}; C{testing/}; and on top the plugins' options (C{_tap/}),
the client (C{_client/}) and the pytest plugin (C{_pytest_plugin}).
"""

__all__ = ["StartupError", "__version__"]

__version__ = "0.1.0"


class StartupError(SystemExit, Exception):
    """
    A service cannot start: its port is taken or forbidden.  That is an
    operator's mistake, not a bug, so it ends start-up with one line, never
    a traceback, in every mode:

    - a L{SystemExit}: C{twistd -n} and C{twist} print the line and exit 1;
    - an L{Exception} too: a daemonizing twistd catches only those to
      remove its pid file and tell the parent waiting on the terminal,
      which otherwise waits forever.

    That parent prints at most 100 bytes of C{str()}, the class name
    included, so C{str()} puts the reason first; C{code}, what C{-n}
    prints, is the whole line.
    """

    def __init__(self, line: str, short: str) -> None:
        super().__init__(line)
        self.short = short

    def __str__(self) -> str:
        return self.short
