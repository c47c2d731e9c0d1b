"""WSGI applications the benchmark serves.

Every response carries ``X-Worker-Pid``: the pid of the process that ran the
application, so the herd scenario can tell which worker served a request.
The pid is cached per process and refreshed after a fork, because some
servers (bjoern here) import the application before they fork their workers.
"""
import os

_pid = [str(os.getpid())]


def _after_fork():
    _pid[0] = str(os.getpid())


os.register_at_fork(after_in_child=_after_fork)


def worker_pid():
    """The pid of this process as a header value."""
    return _pid[0]
