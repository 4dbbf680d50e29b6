"""
The wire record: what every connection and datagram carried, when, and
what each fault did to it, kept bounded in memory as a text timeline and,
when asked, streamed to a pcapng capture that Wireshark and tshark open.

C{store.py} is the sans-IO core (a record, the bounded store),
C{timeline.py} the text (L{render}), C{capture.py} the pcapng file (dpkt,
imported only when a file is written), C{wrappers.py} the recording
wrappers and L{record_of}, the hook's way in, and C{service.py} the
capture file as a service.

The hook the fault pieces call: C{record = record_of(transport)} once
when their connection is made (C{record_of(transport, addr)} for a UDP
reply), then, if it is not L{None}, C{record.fault(kind, note,
direction=...)} each time a fault acts (see L{ConnectionRecord.fault}).
"""

from echoapp._record.kept import CLIENT, KEEP_BYTES, KEEP_EVENTS, RECORD_BOUND, SERVER, STORE_BYTES
from echoapp._record.recorder import Recorder
from echoapp._record.store import ConnectionRecord
from echoapp._record.timeline import render
from echoapp._record.wrappers import RecordingDatagramProtocol, RecordingFactory, record_of, records_of

__all__ = [
    "CLIENT",
    "KEEP_BYTES",
    "KEEP_EVENTS",
    "RECORD_BOUND",
    "SERVER",
    "STORE_BYTES",
    "ConnectionRecord",
    "Recorder",
    "RecordingDatagramProtocol",
    "RecordingFactory",
    "record_of",
    "records_of",
    "render",
]
