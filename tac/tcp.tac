# The welcome/echo/exit TCP greeter alone, on 127.0.0.1:9999.
#     twistd -ny tac/tcp.tac
from twisted.application import service

from echoapp import services

application = service.Application("echoapp-tcp")
services.tcp_greeter().setServiceParent(application)
