"""Processes the harness starts, and how it makes sure none outlives it.

Every server and load generator is started in its own session (so its own
process group) and recorded here by pid. ``stop`` ends a group with SIGTERM,
then SIGKILL after a bound. ``stop_all`` runs from ``finally`` blocks, from
``atexit`` and from the SIGTERM/SIGINT/SIGHUP handlers installed by
``install_handlers``: a failure or a Ctrl-C leaves nothing running.
"""
import atexit
import os
import signal
import socket
import subprocess
import time

TERM_GRACE = 5.0   # seconds between SIGTERM and SIGKILL
KILL_GRACE = 3.0   # seconds to wait for a SIGKILLed group to disappear

_running = {}      # pid -> Popen, everything started and not yet stopped
_handlers_installed = False


def _pinned(cpus):
    """A preexec_fn that confines the child (and all it forks) to ``cpus``."""
    if not cpus:
        return None
    cpus = set(cpus)
    return lambda: os.sched_setaffinity(0, cpus)


def spawn(argv, *, log_path=None, env=None, cwd=None, cpus=None):
    """Start ``argv`` in a new session; its output goes to ``log_path``.

    ``cpus``: the CPUs it and every process it forks may run on (all if None).
    """
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=env, cwd=cwd, start_new_session=True, preexec_fn=_pinned(cpus))
    finally:
        if log_path:
            out.close()
    _running[proc.pid] = proc
    return proc


def run_bounded(argv, timeout, *, env=None, cwd=None, cpus=None):
    """Run a command to completion within ``timeout`` seconds.

    Returns ``(returncode, stdout, stderr)``; a command that overruns is
    stopped like a server and reported with return code None. ``cpus`` as
    for ``spawn``.
    """
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=env, cwd=cwd, start_new_session=True, preexec_fn=_pinned(cpus))
    _running[proc.pid] = proc
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        stop(proc)
        out, err = proc.communicate()
        return None, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    finally:
        if proc.poll() is None:
            stop(proc)
        _running.pop(proc.pid, None)


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop(proc, grace=TERM_GRACE):
    """End the process group led by ``proc``: SIGTERM, then SIGKILL after ``grace``.

    The group id is the leader's pid (start_new_session). Members that
    outlive their leader (workers whose master is gone) are waited for too.
    """
    pgid = proc.pid
    try:
        if proc.poll() is None or _group_alive(pgid):
            signal_group(pgid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                if proc.poll() is not None and not _group_alive(pgid):
                    break
                time.sleep(0.02)
            if proc.poll() is None or _group_alive(pgid):
                signal_group(pgid, signal.SIGKILL)
                deadline = time.monotonic() + KILL_GRACE
                while time.monotonic() < deadline:
                    if proc.poll() is not None and not _group_alive(pgid):
                        break
                    time.sleep(0.02)
        try:
            proc.wait(timeout=KILL_GRACE)
        except subprocess.TimeoutExpired:
            pass
    finally:
        _running.pop(proc.pid, None)


def stop_all():
    """Stop everything still recorded as running (idempotent)."""
    procs = list(_running.values())
    # SIGTERM all groups first so they shut down in parallel, then wait on each.
    for proc in procs:
        signal_group(proc.pid, signal.SIGTERM)
    for proc in procs:
        stop(proc)


def running_pids():
    return sorted(_running)


def _on_signal(signum, frame):
    # Turn the signal into an exception: the ``finally`` blocks up the stack
    # stop the servers, and a second signal cannot leave a half-stopped state
    # because stop_all is idempotent.
    stop_all()
    raise KeyboardInterrupt("signal %d" % signum)


def install_handlers():
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(stop_all)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)


def free_port(host="127.0.0.1"):
    """A TCP port that was free a moment ago (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host, port, timeout=0.2):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_get(host, port, path="/", timeout=2.0):
    """One HTTP/1.1 request on its own connection: ``(status, headers, body)``.

    Raises OSError or ValueError when there is no complete answer within
    ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: bench\r\n"
                  b"Connection: close\r\n\r\n")
        chunks = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no complete response within %.1fs" % timeout)
            s.settimeout(left)
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    return parse_response(b"".join(chunks))


def parse_response(raw):
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("incomplete response: %r" % raw[:80])
    lines = head.split(b"\r\n")
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise ValueError("bad status line: %r" % lines[0][:80])
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return status, headers, body
