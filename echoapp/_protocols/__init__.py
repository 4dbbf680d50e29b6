"""
The services' protocols as small state machines over bytes: greeter, echo, UDP greeter.

Private: nothing here is echoapp's public API (see L{echoapp}).
"""
