"""
Connection limits: what one client, one address or the whole process may hold, and for how long.

Private: nothing here is echoapp's public API (see L{echoapp}).
"""
