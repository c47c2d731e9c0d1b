"""Run a command with a listening socket handed over the way systemd hands it over.

    python listen_fds_exec.py FD PROGRAM [ARGS...]

The socket open as ``FD`` becomes file descriptor 3 (SD_LISTEN_FDS_START),
``LISTEN_FDS=1`` and ``LISTEN_PID`` are set, then PROGRAM is executed in this
very process. systemd sets ``LISTEN_PID`` to the pid of the process it
starts, and gunicorn ignores the sockets unless ``LISTEN_PID`` is its own
pid: an exec keeps the pid, so it matches.
"""
import os
import sys


def main(argv):
    fd = int(argv[1])
    if fd != 3:
        os.dup2(fd, 3)
        os.close(fd)
    os.set_inheritable(3, True)
    os.environ["LISTEN_FDS"] = "1"
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.environ.pop("LISTEN_FDNAMES", None)
    os.execv(argv[2], argv[2:])


if __name__ == "__main__":
    main(sys.argv)
