"""
The tutorial's client: sends each name without a newline, reads the reply,
then says ``exit``.  It talks to the seed server and to echoapp-tcp alike:
``python seed_tcp_client.py [PORT]``.
"""

import socket
import sys

port = int(sys.argv[1]) if len(sys.argv) > 1 else 9999
s = socket.create_connection(("127.0.0.1", port), timeout=10)
print(s.recv(1024))  # b'Welcome!\r\n'
for name in [b"Michael", b"Tracy", b"Sarah"]:
    s.send(name)
    print(s.recv(1024))  # b'Hello, Michael!' ...
s.send(b"exit")
print(s.recv(1024))  # b'Goodbye!'
s.close()
