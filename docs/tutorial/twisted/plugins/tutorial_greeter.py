"""
Step 6: the greeter as a twistd plugin, so that twistd runs it, logs,
daemonizes and drops privileges.  With the tutorial directory on PYTHONPATH:
``twistd -n --pidfile= tutorial-greeter --listen tcp:9999:interface=127.0.0.1``.
"""

from twisted.application import strports
from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer


class Options(usage.Options):
    optParameters = [
        ["listen", None, "tcp:9999:interface=127.0.0.1", "Endpoint string to listen on"],
        ["banner", None, "Welcome!", "Line sent on connect"],
    ]


@implementer(IServiceMaker, IPlugin)
class GreeterMaker:
    tapname = "tutorial-greeter"
    description = "The tutorial's welcome/echo/exit greeter"
    options = Options

    def makeService(self, options):
        from twisted_greeter import GreeterFactory

        return strports.service(options["listen"], GreeterFactory(options["banner"].encode()))


greeter = GreeterMaker()
