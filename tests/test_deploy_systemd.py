"""systemd socket activation: each turbo worker serves on a listening socket gunicorn inherited.

The test plays systemd's part (see examples/gunicorn.socket and
examples/gunicorn.service): it creates and binds the listening socket (TCP on
127.0.0.1, or a unix socket), starts gunicorn with no ``-b`` through
tests/listen_fds_exec.py, which puts the socket on fd 3 and sets
``LISTEN_FDS=1`` and ``LISTEN_PID`` to the pid gunicorn will have, then
closes its own copy. Whatever answers afterwards answered on the inherited
socket. A HUP reload must keep serving on it (gunicorn keeps systemd's
sockets across reloads).
"""
import configparser
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import deploy
import servers

EXAMPLES = os.path.join(os.path.dirname(servers.TESTS_DIR), "examples")
WRAPPER = os.path.join(servers.TESTS_DIR, "listen_fds_exec.py")


class ActivatedServer(servers.GunicornServer):
    """A GunicornServer whose listener is a socket made here and handed over as fd 3."""

    def __init__(self, workdir, family, **kw):
        super().__init__(workdir, listeners=(family,), **kw)
        listener = self.listeners[0]
        if family == "tcp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.bind(("127.0.0.1", 0))
            listener.port = self.sock.getsockname()[1]
            listener.pick = lambda: None  # the port is ours, never picked again
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(listener.path)
        self.sock.listen(128)

    def command(self):
        cmd = super().command()
        # no -b: the only listener gunicorn has is the inherited one
        i = cmd.index("-b")
        del cmd[i:i + 2]
        return [sys.executable, WRAPPER, str(self.sock.fileno())] + cmd

    def _spawn(self):
        log = open(self.log_path, "ab")
        self._log_offset = log.tell()
        try:
            self.proc = subprocess.Popen(self.command(), cwd=self.workdir, env=self.environment(),
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, close_fds=True,
                                         pass_fds=(self.sock.fileno(),))
        finally:
            log.close()
        self._master_start = servers._stat(self.proc.pid)
        self._seen_workers = {}
        self.sock.close()  # from now on only gunicorn holds the socket


def _get_pid(srv):
    resp = srv.get("/_/pid")
    assert resp.status == 200, resp
    return int(resp.body)


@pytest.mark.parametrize("kind", deploy.KIND_NAMES)
def test_socket_activation(tmp_path, kind):
    turbo_k = deploy.KINDS[kind][1]
    started = []
    try:
        for family in ("tcp", "unix"):
            srv = ActivatedServer(str(tmp_path / family), family, worker_class=turbo_k,
                                  app="apps:app", args=deploy.turbo_args(kind),
                                  name="activated-" + family)
            started.append(srv)
            srv.start(wait=False)
        for srv in started:
            srv.wait_ready()
        for srv in started:
            log = srv.log_text()
            bound = ("http://127.0.0.1:%d" % srv.port if srv.listener.kind == "tcp"
                     else "unix:" + srv.listener.path)
            assert "Listening at: %s" % bound in log, srv.log_tail()
            old = set(srv.worker_pids())
            assert {_get_pid(srv) for _ in range(3)} <= old
            os.kill(srv.pid, signal.SIGHUP)
            deadline = time.monotonic() + 30
            while set(srv.worker_pids()) & old or not srv.worker_pids():
                assert time.monotonic() < deadline, "HUP: old workers remain\n" + srv.log_tail()
                time.sleep(0.05)
            new = set(srv.worker_pids())
            pids = set()
            for _ in range(3):
                pids.add(_get_pid(srv))
            assert pids <= new
            assert "Connection in use" not in srv.log_text()
            assert srv.stop() == 0
    finally:
        for srv in started:
            srv.stop()


def test_example_units_describe_this_layout():
    """examples/gunicorn.socket and gunicorn.service: the layout the test above plays."""
    units = {}
    for name in ("gunicorn.socket", "gunicorn.service"):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str
        with open(os.path.join(EXAMPLES, name)) as f:
            parser.read_file(f)
        units[name] = parser
    assert units["gunicorn.socket"]["Socket"]["ListenStream"]
    service = units["gunicorn.service"]
    assert "gunicorn.socket" in service["Unit"]["Requires"]
    start = service["Service"]["ExecStart"]
    assert "gunicorn" in start and " -c " in start and " -b " not in start
    assert service["Service"]["ExecReload"].endswith("-HUP $MAINPID")
