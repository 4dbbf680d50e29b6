# A composed deployment with other ports and the classic "Loop_Msg" messages:
# the TCP greeter on IPv4 and IPv6 loopback, a UDP echo (reply '{}') and the
# echo service, all in one process.  Copy this file and edit the lists.
#     twistd -ny tac/custom.tac
from twisted.application import service

from echoapp import services, signals
from echoapp.config import GreeterConfig
from echoapp.template import ReplyTemplate

classic = GreeterConfig(
    banner=b"Hello, I am server!",
    reply=ReplyTemplate.parse("Loop_Msg: {}!"),
)

application = service.Application("echoapp-custom")
# First, so that it starts before any listener: SIGHUP reopens the log file,
# and a second SIGTERM during the drain is quiet.
signals.SignalService().setServiceParent(application)
services.tcp_greeter(
    ["tcp:8888:interface=127.0.0.1", r"tcp6:8888:interface=\:\:1"], classic
).setServiceParent(application)
services.udp_greeter(["udp:8888:interface=127.0.0.1"], ReplyTemplate.parse("{}")).setServiceParent(application)
services.echo(["tcp:8007:interface=127.0.0.1"]).setServiceParent(application)
