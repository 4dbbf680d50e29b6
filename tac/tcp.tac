# The welcome/echo/exit TCP greeter alone, on 127.0.0.1:9999.
#     twistd -ny tac/tcp.tac
from twisted.application import service

from echoapp import services, signals

application = service.Application("echoapp-tcp")
# First, so that it starts before any listener: SIGHUP reopens the log file,
# and a second SIGTERM during the drain is quiet.
signals.SignalService().setServiceParent(application)
services.tcp_greeter().setServiceParent(application)
