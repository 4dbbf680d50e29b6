# Step 7: the same greeter as a .tac file, which twistd runs with -y:
#     PYTHONPATH=. twistd -ny greeter.tac
# (twistd does not put the current directory on the path: PYTHONPATH=. finds
# twisted_greeter.py beside this file.)
# GREETER_LISTEN overrides the endpoint, so that a test can pick a free port.
import os

from twisted.application import service, strports

from twisted_greeter import GreeterFactory

application = service.Application("tutorial-greeter")
listen = os.environ.get("GREETER_LISTEN", "tcp:9999:interface=127.0.0.1")
strports.service(listen, GreeterFactory()).setServiceParent(application)
