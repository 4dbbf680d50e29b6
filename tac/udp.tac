# The UDP greeter alone, on 127.0.0.1:9999/udp.
#     twistd -ny tac/udp.tac
from twisted.application import service

from echoapp import services, signals

application = service.Application("echoapp-udp")
services.udp_greeter().setServiceParent(application)
# SIGHUP reopens the log file; a second SIGTERM during the drain is quiet.
signals.SignalService().setServiceParent(application)
