"""
echoapp-proxy: a TCP forwarder with echoapp's limits and faults in front of
any server, and toxiproxy's HTTP API to drive it.  Private; the plugin
(L{echoapp._tap.proxy}) and L{echoapp.testing.proxy} are the ways in.
"""
