"""
Step 1: the seed program, as the socket tutorials teach it: a TCP server
that greets each client, answers every message and closes on ``exit``,
one thread per client.  Run it: ``python seed_threaded_greeter.py [PORT]``.
"""

import socket
import sys
import threading


def serve_client(conn):
    conn.send(b"Welcome!\r\n")
    while True:
        data = conn.recv(1024)
        if not data or data.decode("utf-8").strip() == "exit":
            break
        conn.send(b"Hello, " + data.strip() + b"!")
    conn.send(b"Goodbye!")
    conn.close()


def main(port):
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(5)
    print(f"listening on 127.0.0.1:{server.getsockname()[1]}", flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve_client, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 9999)
