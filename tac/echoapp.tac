# Everything in one process on the defaults: the TCP greeter on 127.0.0.1:9999,
# the UDP greeter on 127.0.0.1:9999/udp and echo on 127.0.0.1:10888.
#     twistd -ny tac/echoapp.tac
from twisted.application import service

from echoapp import services, signals

application = service.Application("echoapp")
# First, so that it starts before any listener: SIGHUP reopens the log file,
# and a second SIGTERM during the drain is quiet.
signals.SignalService().setServiceParent(application)
services.everything().setServiceParent(application)
