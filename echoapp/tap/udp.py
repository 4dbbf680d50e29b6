"""twistd plugin echoapp-udp: the UDP greeter."""

from __future__ import annotations

from twisted.application.service import IService
from twisted.python import usage

from echoapp import services
from echoapp.listen import DEFAULT_UDP_LISTEN, UDP_SYNTAX
from echoapp.tap.common import (
    METRICS_PARAMETERS,
    REUSE_PORT_FLAGS,
    UDP_LIMIT_PARAMETERS,
    RepeatableListen,
    metrics_listen,
    reply_template,
    udp_limits,
    udp_listens,
)
from echoapp.template import DEFAULT_REPLY

LISTEN = RepeatableListen("listen", DEFAULT_UDP_LISTEN, UDP_SYNTAX)


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "The UDP greeter: each datagram gets one reply datagram to its sender. "
        "--reply '{}' makes it a UDP echo."
    )
    optParameters = [
        ["reply", None, str(DEFAULT_REPLY), "Reply template; exactly one {} stands for the message."],
        *UDP_LIMIT_PARAMETERS,
        *METRICS_PARAMETERS,
    ]
    optFlags = REUSE_PORT_FLAGS
    opt_listen = LISTEN.option()

    def postOptions(self) -> None:
        self["metrics-listen"] = metrics_listen(self)
        self["ports"] = udp_listens(LISTEN, self)
        self["template"] = reply_template(self)
        self["limits"] = udp_limits(self)


def makeService(options: usage.Options) -> IService:
    return services.monitored(
        services.udp_greeter(
            options["ports"], options["template"], options["limits"], reuse_port=bool(options["reuse-port"])
        ),
        options["metrics-listen"],
    )
