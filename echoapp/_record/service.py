"""
The capture file as a service: opened in the privileged step (before
twistd drops privileges, and before any listener, so a file that cannot
be written stops start-up with one line), closed after every listener has
stopped and every connection has drained, so the last close is in it.
While it runs, one timer of the reactor's settles the store's journal and
flushes the file every L{FLUSH_EVERY}: what went on the wire is in the
file within that while, even on a connection where nothing more happens,
and the connections' own path reads no clock for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from echoapp import StartupError
from echoapp._record.capture import CaptureFile
from echoapp._record.recorder import Recorder
from echoapp._record.store import FLUSH_EVERY
from echoapp._starting import StartsOnce

log = Logger(namespace="echoapp.record")

# The longest the file waits, at stop, for connections still open (the
# drain's own bound is shorter): then it is closed with them open in it.
CLOSE_WAIT = 30.0


@dataclass(frozen=True)
class RecordTo:
    """Where C{--record} writes: the file, the size it rotates at (0: never) and how many old files stay."""

    path: str
    max_bytes: int = 16 << 20
    keep: int = 3


class RecordService(StartsOnce):
    """Owns a L{Recorder}'s L{CaptureFile}: opens it at start, closes it at stop."""

    name = None

    def __init__(self, recorder: Recorder, capture: CaptureFile) -> None:
        self.recorder = recorder
        recorder.sink = capture
        self.capture = capture
        self._flushing = LoopingCall(self._tick)
        self._flushing.clock = recorder.clock
        self._failing = False

    def flush(self) -> None:
        """
        What waits in the journal goes to the file, and the file to the
        disk; a failure the recording met since (kept, not raised into a
        connection) is raised here, where the timer reports it.
        """
        recorder = self.recorder
        recorder.settle()
        error, recorder.sink_error = recorder.sink_error, None
        if error is not None:
            raise error
        self.capture.flush()

    def _tick(self) -> None:
        """
        The timer's flush: a failure (a full disk, a rotation that could
        not rename) is logged once, until a flush succeeds again, and the
        timer goes on, where an exception would stop it for good and leave
        a quiet connection's bytes out of the file.
        """
        try:
            self.flush()
        except Exception:
            if not self._failing:
                log.failure(
                    "Writing the wire record to {path} failed; trying again every second",
                    path=self.capture.path,
                )
            self._failing = True
        else:
            if self._failing:
                log.info("Writing the wire record to {path} works again", path=self.capture.path)
            self._failing = False

    def start_once(self) -> None:
        """Opened in twistd's privileged step, where there is one: a path it cannot have stops start-up."""
        try:
            self.capture.open()
        except OSError as error:
            line = f"Cannot record to {self.capture.path}: {error.strerror or error}"
            raise StartupError(line, line) from None
        if not self._flushing.running:
            self._flushing.start(FLUSH_EVERY, now=False)

    def stopService(self) -> Deferred[None]:
        """
        Closed once the last connection is gone (the drain's goodbyes and
        closes are in the file), or after L{CLOSE_WAIT} at most.
        """
        super().stopService()
        done: Deferred[None] = Deferred()
        recorder = self.recorder

        def close() -> None:
            recorder.when_idle = None
            if timer.active():
                timer.cancel()
            if self._flushing.running:
                self._flushing.stop()
            recorder.settle()  # what waits in the journal (a UDP source's last datagrams) goes in too
            self.capture.close()
            done.callback(None)

        timer = recorder.clock.callLater(CLOSE_WAIT, close)
        if recorder.open_streams:
            recorder.when_idle = close
        else:
            close()
        return done
