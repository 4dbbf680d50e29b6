"""
How echoapp listens and writes: endpoints, PROXY protocol, eager and native transports.

Private: nothing here is echoapp's public API (see L{echoapp}).
"""
