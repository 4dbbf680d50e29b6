# The UDP greeter alone, on 127.0.0.1:9999/udp.
#     twistd -ny tac/udp.tac
from twisted.application import service

from echoapp import services, signals

application = service.Application("echoapp-udp")
# First, so that it starts before any listener: SIGHUP reopens the log file,
# and a second SIGTERM during the drain is quiet.
signals.SignalService().setServiceParent(application)
services.udp_greeter().setServiceParent(application)
