# twistd --reactor=uvloop: Twisted's asyncio reactor on a uvloop event loop.
from twisted.application.reactors import Reactor

uvloop = Reactor(
    "uvloop", "echoapp.reactor", "asyncio reactor on a uvloop event loop (pip install 'echoapp[fast]')."
)
