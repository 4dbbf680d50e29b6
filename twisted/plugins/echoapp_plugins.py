# No __init__.py beside this file: twisted.plugins is a namespace that
# Twisted scans.  Each ServiceMaker imports its module only when used.
from twisted.application.service import ServiceMaker

echoapp = ServiceMaker(
    "echoapp", "echoapp._tap.everything", "All echoapp services in one process.", "echoapp"
)
echoapp_tcp = ServiceMaker(
    "echoapp-tcp", "echoapp._tap.tcp", "The welcome/echo/exit TCP greeter.", "echoapp-tcp"
)
echoapp_echo = ServiceMaker(
    "echoapp-echo", "echoapp._tap.echo", "RFC 862 byte echo over TCP.", "echoapp-echo"
)
echoapp_udp = ServiceMaker(
    "echoapp-udp", "echoapp._tap.udp", "The UDP greeter: one reply datagram per datagram.", "echoapp-udp"
)
echoapp_compose = ServiceMaker(
    "echoapp-compose",
    "echoapp._tap.compose",
    "Any installed twistd plugins in one process.",
    "echoapp-compose",
)
echoapp_proxy = ServiceMaker(
    "echoapp-proxy",
    "echoapp._tap.proxy",
    "Faults and limits in front of any TCP server; toxiproxy's API.",
    "echoapp-proxy",
)
