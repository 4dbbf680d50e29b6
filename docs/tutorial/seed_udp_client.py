"""
The UDP tutorial's client: one datagram per name, one reply each.  It talks
to the seed UDP greeter and to echoapp-udp alike:
``python seed_udp_client.py [PORT]``.
"""

import socket
import sys

port = int(sys.argv[1]) if len(sys.argv) > 1 else 9999
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
for name in [b"Michael", b"Tracy", b"Sarah"]:
    s.sendto(name, ("127.0.0.1", port))
    print(s.recv(1024))  # b'Hello, Michael!' ...
s.close()
