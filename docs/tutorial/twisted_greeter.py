"""
Step 4: the threaded greeter as a Twisted Protocol and Factory.  No
threads: one reactor calls dataReceived for every client as bytes arrive.
``python twisted_greeter.py [PORT]``.
"""

import sys

from twisted.internet import protocol


class Greeter(protocol.Protocol):
    def connectionMade(self):
        self.transport.write(self.factory.banner + b"\r\n")

    def dataReceived(self, data):
        message = data.strip()
        if message == b"exit":
            self.transport.write(b"Goodbye!")
            self.transport.loseConnection()  # flushes what was written first
        else:
            self.transport.write(b"Hello, " + message + b"!")


class GreeterFactory(protocol.Factory):
    protocol = Greeter

    def __init__(self, banner=b"Welcome!"):
        self.banner = banner


def main(port):
    from twisted.internet import reactor

    listening = reactor.listenTCP(port, GreeterFactory(), interface="127.0.0.1")
    print(f"listening on 127.0.0.1:{listening.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 9999)
