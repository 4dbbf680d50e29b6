"""
Step 3: the same greeter with the standard library's ``socketserver``,
which writes the accept loop and the threads for you.
``python seed_socketserver_greeter.py [PORT]``.
"""

import socketserver
import sys


class Greeter(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.send(b"Welcome!\r\n")
        while True:
            data = self.request.recv(1024)
            if not data or data.strip() == b"exit":
                break
            self.request.send(b"Hello, " + data.strip() + b"!")
        self.request.send(b"Goodbye!")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9999
    with Server(("127.0.0.1", port), Greeter) as server:
        print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
        server.serve_forever()
