"""python -m echoapp: the command-line client (see L{echoapp.client})."""

from echoapp.client import main

if __name__ == "__main__":
    main()
