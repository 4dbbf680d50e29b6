"""The process-wide descriptor ceiling."""

import resource

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from echoapp._limits.descriptors import DESCRIPTORS, FD_RESERVE
from echoapp._protocols.echo import EchoFactory
from tests.support import fake_connect


class DescriptorCeilingTests(SynchronousTestCase):
    def test_fd_ceiling_is_process_wide(self) -> None:
        self.patch(DESCRIPTORS, "limit", lambda: DESCRIPTORS.open)
        _, transport = fake_connect(EchoFactory(clock=Clock()))
        self.assertEqual(transport.value(), b"ERROR: server busy\r\n")

    def test_raise_fd_limit_reports_the_soft_limit(self) -> None:
        soft = DESCRIPTORS.raise_limit()
        self.assertEqual(soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        self.assertEqual(DESCRIPTORS.limit(), soft - FD_RESERVE)
