"""The socket + threading tutorial server, one thread per connection (without its per-message sleep)."""

import socket
import sys
import threading


def serve(conn: socket.socket) -> None:
    with conn:
        conn.sendall(b"Welcome!\r\n")
        reader = conn.makefile("rb")
        for line in reader:
            conn.sendall(b"Hello, " + line.rstrip(b"\n") + b"!\n")


listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", int(sys.argv[1])))
listener.listen(4096)
while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
