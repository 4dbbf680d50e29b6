"""
Step 2: the blocking UDP greeter of the tutorials: one loop, one reply
datagram per datagram.  ``python seed_udp_greeter.py [PORT]``.
"""

import socket
import sys


def main(port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    print(f"listening on 127.0.0.1:{sock.getsockname()[1]}/udp", flush=True)
    while True:
        data, addr = sock.recvfrom(65535)
        sock.sendto(b"Hello, " + data + b"!", addr)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 9999)
