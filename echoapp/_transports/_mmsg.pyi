# The C accelerator's interface (_mmsg.c); see datagram_batches.py for the contract.
from typing import Any

MAX_BATCH: int

def recv_batch(fd: int, max_count: int, max_size: int, /) -> list[tuple[bytes, Any]]: ...
def send_reply(
    fd: int, family: int, prefix: bytes, suffix: bytes, datagram: bytes, address: Any, /
) -> int: ...
