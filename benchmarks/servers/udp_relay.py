"""
A plain Python UDP relay to compare with echoapp-proxy's UDP path: each
client source gets its own upstream socket (as echoapp-proxy and nginx give
it), datagrams go both ways, nothing else (no limits, no faults, no expiry).

    python udp_relay.py PORT UPSTREAM_PORT
"""

import selectors
import socket
import sys


def main(port: int, upstream: int) -> None:
    target = ("127.0.0.1", upstream)
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", port))
    listener.setblocking(False)
    sessions: dict[tuple[str, int], socket.socket] = {}
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    while True:
        for key, _ in selector.select():
            if key.data is None:  # from a client: to its upstream socket
                while True:
                    try:
                        data, client = listener.recvfrom(65535)
                    except BlockingIOError:
                        break
                    upstream_socket = sessions.get(client)
                    if upstream_socket is None:
                        upstream_socket = sessions[client] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        upstream_socket.setblocking(False)
                        upstream_socket.connect(target)
                        selector.register(upstream_socket, selectors.EVENT_READ, client)
                    upstream_socket.send(data)
            else:  # from the upstream: back to the client
                while True:
                    try:
                        data = key.fileobj.recv(65535)  # type: ignore[union-attr]
                    except BlockingIOError:
                        break
                    listener.sendto(data, key.data)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
