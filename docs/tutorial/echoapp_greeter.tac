# Step 8: echoapp's finished greeter in a .tac file of your own: every
# limit, timeout, signal and the graceful drain come with it.
#     twistd -ny echoapp_greeter.tac
import os

from twisted.application import service

from echoapp import services, signals
from echoapp.config import GreeterConfig

application = service.Application("greeter")
signals.SignalService().setServiceParent(application)  # first: SIGHUP, a quiet second SIGTERM
listen = os.environ.get("GREETER_LISTEN", "tcp:9999:interface=127.0.0.1")
services.tcp_greeter([listen], GreeterConfig(banner=b"Welcome!")).setServiceParent(application)
