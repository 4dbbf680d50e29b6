"""
Step 5: the blocking UDP greeter as a Twisted DatagramProtocol.
``python twisted_udp_greeter.py [PORT]``.
"""

import sys

from twisted.internet import protocol


class UDPGreeter(protocol.DatagramProtocol):
    def datagramReceived(self, data, address):
        self.transport.write(b"Hello, " + data + b"!", address)


def main(port):
    from twisted.internet import reactor

    listening = reactor.listenUDP(port, UDPGreeter(), interface="127.0.0.1")
    print(f"listening on 127.0.0.1:{listening.getHost().port}/udp", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 9999)
