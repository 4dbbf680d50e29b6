"""
echoapp: classic socket-tutorial services, done properly with Twisted.

The protocols live in L{echoapp.greeter}, L{echoapp.echo} and L{echoapp.udp};
L{echoapp.services} assembles them into the service trees that the twistd
plugins (L{echoapp.tap}) and the C{.tac} files run.
"""

__version__ = "0.1.0"
