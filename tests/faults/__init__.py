"""Tests of L{echoapp._faults}, a module per module."""
