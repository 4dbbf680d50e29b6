# The UDP greeter alone, on 127.0.0.1:9999/udp.
#     twistd -ny tac/udp.tac
from twisted.application import service

from echoapp import services

application = service.Application("echoapp-udp")
services.udp_greeter().setServiceParent(application)
