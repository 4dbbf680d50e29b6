"""
One module per twistd plugin, each an C{Options} and a C{makeService}, as in
C{twisted/tap/}.  Options validate in C{postOptions} and turn every user
mistake into a one-line L{twisted.python.usage.UsageError}.
"""
