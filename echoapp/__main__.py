"""python -m echoapp: the command-line client (see L{echoapp._client})."""

from echoapp._client import main

if __name__ == "__main__":
    main()
