"""
echoapp's pytest plugin, as its users meet it: the fixtures come from the
pytest11 entry point of the installed package, with no conftest.  (Plain
pytest functions: trial does not collect them.)
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from echoapp.testing import Faults
from tests.support import installed_env


@pytest_twisted.ensureDeferred
async def test_in_process_greeter_with_latency(echoapp_peer: Any) -> None:
    peer = echoapp_peer("greeter", faults=Faults(latency=0.05), banner="Hi")

    def banner() -> bytes:
        with socket.create_connection((peer.host, peer.port), timeout=5) as sock:
            return sock.recv(100)

    assert await deferToThread(banner) == b"Hi\r\n"


@pytest_twisted.ensureDeferred
async def test_in_process_proxy_in_front_of_a_peer(echoapp_peer: Any, echoapp_proxy: Any) -> None:
    echo = echoapp_peer("echo")
    peer = echoapp_proxy(upstream=f"tcp:127.0.0.1:{echo.port}", faults=Faults(half_close_after_bytes=4))

    def exchange() -> bytes:
        with socket.create_connection((peer.host, peer.port), timeout=5) as sock:
            sock.sendall(b"abcdefgh")
            sock.shutdown(socket.SHUT_WR)
            got = b""
            while chunk := sock.recv(100):
                got += chunk
            return got

    assert await deferToThread(exchange) == b"abcd"
    assert isinstance(peer.seed, int)


def test_unknown_kind(echoapp_peer: Any) -> None:
    with pytest.raises(ValueError, match="kind is one of greeter, echo, udp"):
        echoapp_peer("http")


def test_asyncio_client_against_a_process(echoapp_process: Any) -> None:
    server = echoapp_process("echoapp-tcp", "--fault", "reset-after-bytes=10")

    async def client() -> None:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(b"Bob\n")
        try:
            while await reader.read(100):
                pass
        finally:
            writer.close()

    with pytest.raises(ConnectionResetError):
        asyncio.run(client())


def test_a_process_on_the_reactor_named(echoapp_process: Any) -> None:
    """C{reactor=} and twistd's other keywords, as L{echoapp.testing.Process} takes them (non-python.rst)."""
    server = echoapp_process("echoapp-tcp", "--banner", "Hi", reactor="uvloop")
    assert "--reactor=uvloop" in server.command()
    assert "uvloop" in server.output.lower()
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        assert sock.recv(100) == b"Hi\r\n"


FAILING = """
import socket


def test_fails(echoapp_process):
    server = echoapp_process("echoapp-tcp", "--fault", "latency=10ms,seed=4242")
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        assert sock.recv(100) == b"something else"
"""


def test_a_failing_test_reports_the_seed(tmp_path: Any) -> None:
    (tmp_path / "test_client.py").write_text(FAILING)
    junit = tmp_path / "report.xml"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--junitxml={junit}", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=installed_env(),
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "echoapp peers" in result.stdout
    assert "echoapp-tcp --fault latency=10ms,seed=4242: seed=4242" in result.stdout
    assert 'name="echoapp_seed" value="4242"' in junit.read_text()
