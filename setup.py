"""
The one thing setup.cfg cannot say: echoapp's optional C accelerator for
UDP (recvmmsg, echoapp/_mmsg.c) and the wire record's capture
(echoapp/_pcapng.c).  It is built where a C compiler and Python's headers
are, and skipped, with a warning, where not (or where
ECHOAPP_NO_ACCELERATOR is set): echoapp then reads datagrams one system
call each, and packs the capture's blocks, in Python, with the same
behaviour.
"""

import os

from setuptools import Extension, setup

accelerator = Extension("echoapp._mmsg", ["echoapp/_mmsg.c", "echoapp/_pcapng.c"], optional=True)
setup(ext_modules=[] if os.environ.get("ECHOAPP_NO_ACCELERATOR") else [accelerator])
