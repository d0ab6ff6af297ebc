"""TraceHub benchmarks, run by hand with ``python -m benchmarks.run``.

Nothing here runs in the test suite. Every measurement starts its own TraceHub
processes on loopback, works in a database and Redis key prefix of its own, and
removes both at the end.
"""
