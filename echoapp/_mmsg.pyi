# The C accelerator's interface (_mmsg.c); see datagram_batches.py for the contract.
from typing import Any

MAX_BATCH: int

def recv_batch(fd: int, max_count: int, max_size: int, /) -> list[tuple[bytes, Any]]: ...
def send_reply(
    fd: int, family: int, prefix: bytes, suffix: bytes, datagram: bytes, address: Any, /
) -> int: ...
def recv_one(fd: int, max_size: int, /) -> bytes | None: ...
def send_to(fd: int, family: int, datagram: bytes, address: Any, /) -> int: ...
def pack_data(
    first: bytes,
    second: bytes,
    gap0: bytes,
    gap1: bytes,
    trailer: bytes,
    base: int,
    at: float,
    seq: int,
    ack: int,
    payload: bytes,
    /,
) -> bytes: ...
def pack_run(
    entries: list[tuple[float, Any, str, bytes]],
    start: int,
    stop: int,
    wires: dict[int, Any],
    out: list[bytes],
    size: int,
    limit: int,
    segment: int,
    /,
) -> tuple[int, int]: ...
