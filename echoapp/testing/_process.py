"""
The old name of L{echoapp.testing._twistd}, kept only while one test module
outside this package still imports C{LISTENING} from it; remove it then.
"""

from echoapp.testing._twistd import LISTENING

__all__ = ["LISTENING"]
