"""Real gunicorn processes for the end-to-end tests: start, talk to, stop.

``GunicornServer`` runs ``python -m gunicorn`` (the interpreter running the
tests, so the project's virtualenv) as a child process:

* in its own work directory, with an explicit config file (``-c``), so a
  ``gunicorn.conf.py`` lying in the current directory is never picked up;
* with ``--no-control-socket`` (the setting ``control_socket_disable``):
  gunicorn 27 otherwise creates ``~/.gunicorn/gunicorn.ctl`` and parallel
  servers would fight over it;
* bound to 127.0.0.1 on a port picked here, or to a unix socket in the work
  directory; a port taken between the pick and gunicorn's bind is picked again;
* with its log (stdout and stderr) in ``<workdir>/<name>.log``;
* inheriting the environment, so ``TURBOWORKERS_NO_EXTENSIONS`` reaches the
  workers.

Every wait is bounded. ``stop()`` sends SIGTERM to the master, waits, then
SIGKILLs the master and any worker still alive, by pid (a pid is only
signalled while its start time in /proc still matches the process seen
earlier, so a recycled pid is never hit).

The client helpers (``request``, ``raw_exchange``, ``split_response``) are
plain ``http.client`` and raw sockets, nothing that could hide what is on
the wire.
"""
import collections
import errno
import http.client
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
TURBO_SYNC = "turboworkers.SyncMutexWorker"
STOCK_SYNC = "sync"

START_TIMEOUT = 30.0     # seconds from spawn until every worker is up
STOP_TIMEOUT = 20.0      # seconds from SIGTERM until SIGKILL
KILL_TIMEOUT = 5.0       # seconds from SIGKILL until the process is gone
PORT_ATTEMPTS = 4


class ServerError(RuntimeError):
    """gunicorn did not come up (the message holds the end of its log)."""


def free_port(host="127.0.0.1"):
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# -- processes ----------------------------------------------------------------

def _stat(pid):
    """(ppid, starttime) from /proc/PID/stat, or None when there is no such process."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return None
    # the command name is in parentheses and may itself hold spaces or ')'
    fields = data[data.rindex(b")") + 2:].split()
    if fields[0] == b"Z":
        return None  # a zombie is gone for our purposes
    return int(fields[1]), int(fields[19])


def children(pid):
    """{child pid: starttime} of the live children of ``pid``."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = _stat(int(name))
        if st is not None and st[0] == pid:
            out[int(name)] = st[1]
    return out


def context_switches(pid):
    """Voluntary + nonvoluntary context switches of all threads of ``pid`` so far."""
    total = 0
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return 0
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches:",
                                        "nonvoluntary_ctxt_switches:")):
                        total += int(line.split()[1])
        except OSError:
            pass  # the thread ended meanwhile
    return total


def _same_process(pid, starttime):
    st = _stat(pid)
    return st is not None and st[1] == starttime


def _kill_if_same(pid, starttime, sig=signal.SIGKILL):
    if _same_process(pid, starttime):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _wait_gone(pid, starttime, timeout):
    deadline = time.monotonic() + timeout
    while _same_process(pid, starttime):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# -- listeners ----------------------------------------------------------------

class Listener:
    """One address gunicorn binds: ``tcp`` on 127.0.0.1 or ``unix`` in a directory."""

    def __init__(self, kind, directory, index):
        if kind not in ("tcp", "unix"):
            raise ValueError("listener kind must be 'tcp' or 'unix', not %r" % (kind,))
        self.kind = kind
        self.host = "127.0.0.1"
        self.port = None
        self.path = os.path.join(directory, "gunicorn-%d.sock" % index) if kind == "unix" else None
        self.pick()

    def pick(self):
        if self.kind == "tcp":
            self.port = free_port(self.host)

    @property
    def bind(self):
        return "%s:%d" % (self.host, self.port) if self.kind == "tcp" else "unix:" + self.path

    @property
    def host_header(self):
        return "%s:%d" % (self.host, self.port) if self.kind == "tcp" else "localhost"

    def connect(self, timeout=10.0):
        if self.kind == "tcp":
            s = socket.create_connection((self.host, self.port), timeout=timeout)
        else:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            try:
                s.connect(self.path)
            except BaseException:
                s.close()
                raise
        return s

    def __repr__(self):
        return "<Listener %s>" % self.bind


# -- the server ---------------------------------------------------------------

class GunicornServer:
    """One gunicorn master and its workers.

    ``config`` is the text of the config file (Python, gunicorn's format),
    ``args`` extra command line arguments, ``listeners`` a list of ``"tcp"``
    / ``"unix"``. ``env`` entries are added to (or, when None, removed from)
    the inherited environment. ``script=True`` runs the ``gunicorn`` console
    script beside the interpreter instead of ``python -m gunicorn``: a master
    re-executing itself (USR2) runs its own ``sys.argv`` again, and for
    ``-m gunicorn`` that is the path of gunicorn's ``__main__.py``, whose
    directory then shadows the standard library's ``http`` package.
    """

    def __init__(self, workdir, app="apps:app", worker_class=TURBO_SYNC, workers=1,
                 args=(), config="", listeners=("tcp",), log_level="debug", env=None,
                 name="gunicorn", pythonpath=TESTS_DIR, script=False):
        self.workdir = os.path.abspath(str(workdir))
        os.makedirs(self.workdir, exist_ok=True)
        self.app = app
        self.worker_class = worker_class
        self.workers = workers
        self.args = list(args)
        self.config = config
        self.log_level = log_level
        self.env_changes = dict(env or {})
        self.name = name
        self.pythonpath = pythonpath
        self.script = script
        self.log_path = os.path.join(self.workdir, name + ".log")
        self.config_path = os.path.join(self.workdir, name + ".conf.py")
        # unix socket paths are limited to ~107 bytes; pytest's tmp_path can be long
        self._sockdir = None
        sockdir = self.workdir
        if "unix" in listeners and len(os.path.join(sockdir, "gunicorn-0.sock")) > 90:
            self._sockdir = sockdir = tempfile.mkdtemp(prefix="tw-sock-")
        self.listeners = [Listener(kind, sockdir, i) for i, kind in enumerate(listeners)]
        self.proc = None
        self._attempts = 0
        self._log_offset = 0
        self._seen_workers = {}

    # -- start ---------------------------------------------------------------

    def command(self):
        if self.script:
            launcher = [os.path.join(os.path.dirname(sys.executable), "gunicorn")]
        else:
            launcher = [sys.executable, "-m", "gunicorn"]
        cmd = launcher + ["--no-control-socket",
                          "-c", self.config_path,
                          "--pythonpath", self.pythonpath,
                          "-k", self.worker_class,
                          "-w", str(self.workers),
                          "--log-level", self.log_level]
        for listener in self.listeners:
            cmd += ["-b", listener.bind]
        return cmd + self.args + [self.app]

    def environment(self):
        env = dict(os.environ)
        for key, value in self.env_changes.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def start(self, wait=True, timeout=START_TIMEOUT):
        """Spawn gunicorn; with ``wait`` return once every worker is up.

        Without ``wait``, call ``wait_ready()`` later (several servers then
        boot side by side).
        """
        with open(self.config_path, "w") as f:
            f.write(self.config)
        self._attempts = 1
        self._spawn()
        if wait:
            self.wait_ready(timeout)
        return self

    def _spawn(self):
        for listener in self.listeners:
            if listener.path and os.path.exists(listener.path):
                os.unlink(listener.path)
        log = open(self.log_path, "ab")
        self._log_offset = log.tell()
        try:
            self.proc = subprocess.Popen(self.command(), cwd=self.workdir, env=self.environment(),
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, close_fds=True)
        finally:
            log.close()
        self._master_start = _stat(self.proc.pid)
        self._seen_workers = {}

    def wait_ready(self, timeout=START_TIMEOUT):
        """Until the master listens and ``workers`` workers are in their run loop.

        A port somebody else took since it was picked is picked again, and
        gunicorn restarted, a few times.
        """
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()
            if "Connection in use" in text:
                if self._attempts >= PORT_ATTEMPTS:
                    raise ServerError("no free port after %d attempts; log:\n%s"
                                      % (self._attempts, self.log_tail()))
                self.stop(cleanup=False)
                for listener in self.listeners:
                    listener.pick()
                self._attempts += 1
                self._spawn()
                continue
            if self.proc.poll() is not None:
                raise ServerError("gunicorn exited with code %s before it was ready; log:\n%s"
                                  % (self.proc.returncode, self.log_tail()))
            if self._is_ready(text):
                return self
            if time.monotonic() > deadline:
                raise ServerError("gunicorn not ready after %.0f s; log:\n%s"
                                  % (timeout, self.log_tail()))
            time.sleep(0.02)

    def _is_ready(self, text):
        if "Listening at: " not in text:
            return False
        pids = self.worker_pids()
        if len(pids) < self.workers:
            return False
        # a turbo worker logs which HTTP code it uses when it enters run()
        # (debug in accelerated mode, info in pure mode); a stock worker is
        # taken as ready once it booted: requests wait in the backlog anyway.
        if self.worker_class.startswith("turboworkers.") and self.log_level == "debug":
            marker = "turboworkers: "
        else:
            marker = "Booting worker with pid: "
        up = {int(m) for m in re.findall(r"\[(\d+)\] \[\w+\] " + re.escape(marker), text)}
        return len(up & set(pids)) >= self.workers

    # -- state ---------------------------------------------------------------

    @property
    def pid(self):
        return self.proc.pid

    @property
    def listener(self):
        return self.listeners[0]

    @property
    def port(self):
        return self.listeners[0].port

    @property
    def host_header(self):
        return self.listeners[0].host_header

    def worker_pids(self):
        """Pids of the master's live worker processes, sorted."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        found = children(self.proc.pid)
        self._seen_workers.update(found)
        return sorted(found)

    def context_switches(self):
        """Sum of context switches of the current workers (all their threads)."""
        return sum(context_switches(pid) for pid in self.worker_pids())

    def log_text(self):
        """This run's log (a restart after a port clash starts a new one)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, lines=60):
        text = self.log_text().splitlines()
        return "\n".join(text[-lines:])

    def wait_for_log(self, pattern, count=1, timeout=15.0):
        """Wait until the log matches ``pattern`` (regex) ``count`` times; return the matches."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = rx.findall(self.log_text())
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError("log never matched %r %d time(s) in %.0f s (%d found); log:\n%s"
                                     % (pattern, count, timeout, len(found), self.log_tail()))
            time.sleep(0.02)

    def wait_exit(self, timeout):
        """The master's exit code, or None when it still runs after ``timeout``."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    # -- stop ----------------------------------------------------------------

    def terminate(self):
        """Send SIGTERM to the master (graceful stop) without waiting."""
        if self.proc is not None and self.proc.poll() is None:
            self.worker_pids()  # remember the workers of this moment
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    def stop(self, timeout=STOP_TIMEOUT, cleanup=True):
        """SIGTERM, a bounded wait, then SIGKILL for the master and every worker left.

        Returns the master's exit code (negative: killed by that signal).
        """
        if self.proc is None:
            return None
        try:
            self.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(KILL_TIMEOUT)
            # workers whose master is gone leave within their idle wait;
            # whatever is still there after a short grace is killed
            for pid, start in list(self._seen_workers.items()):
                if not _wait_gone(pid, start, 2.0):
                    _kill_if_same(pid, start)
                    _wait_gone(pid, start, KILL_TIMEOUT)
            return self.proc.returncode
        finally:
            if cleanup and self._sockdir:
                shutil.rmtree(self._sockdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- clients -------------------------------------------------------------

    def connect(self, listener=0, timeout=10.0, ssl_context=None):
        s = self.listeners[listener].connect(timeout)
        if ssl_context is not None:
            s = ssl_context.wrap_socket(s, server_hostname=None)
        return s

    def request(self, method, path, body=None, headers=None, listener=0, timeout=15.0,
                ssl_context=None, encode_chunked=False):
        """One request over a new connection with ``http.client``: a ``Response``."""
        return request(lambda: self.connect(listener, timeout, ssl_context),
                       self.listeners[listener].host_header, method, path, body=body,
                       headers=headers, timeout=timeout, encode_chunked=encode_chunked)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def raw(self, data, listener=0, timeout=15.0, shut_wr=True):
        """Send raw bytes, read until the server closes: the bytes received."""
        return raw_exchange(lambda: self.connect(listener, timeout), [("send", data)]
                            + ([("shut",)] if shut_wr else []), timeout=timeout).data


# -- http.client over any socket ----------------------------------------------

Response = collections.namedtuple("Response", "status reason version headers body")


class _Connection(http.client.HTTPConnection):
    def __init__(self, opener, host, timeout):
        super().__init__(host, timeout=timeout)
        self._opener = opener

    def connect(self):
        self.sock = self._opener()


def request(opener, host, method, path, body=None, headers=None, timeout=15.0,
            encode_chunked=False):
    conn = _Connection(opener, host, timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}),
                     encode_chunked=encode_chunked)
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, resp.reason, resp.version, resp.getheaders(), data)
    finally:
        conn.close()


def header(resp, name):
    """The values of header ``name`` in a ``Response`` (case-insensitive), in order."""
    return [v for k, v in resp.headers if k.lower() == name.lower()]


# -- raw sockets --------------------------------------------------------------

Exchange = collections.namedtuple("Exchange", "data closed error")


def raw_exchange(opener, steps, timeout=15.0):
    """Run ``steps`` on a new connection, then read until the server closes.

    Steps: ``("send", bytes)``, ``("pause", seconds)`` (so the next send
    arrives as a read of its own), ``("shut",)`` (half-close: the server reads
    EOF), ``("expect", bytes)`` (read until the bytes received so far end
    with these, the server closes, or the deadline passes). Returns what was
    received, whether the server closed (rather than the deadline passing),
    and the socket error that ended the exchange, if any (its errno name).
    """
    deadline = time.monotonic() + timeout
    buf = bytearray()
    closed = False
    error = None
    s = opener()
    try:
        def recv_some():
            nonlocal closed
            s.settimeout(max(0.01, deadline - time.monotonic()))
            piece = s.recv(262144)
            if not piece:
                closed = True
            buf.extend(piece)

        try:
            for step in steps:
                if step[0] == "send":
                    s.settimeout(max(0.01, deadline - time.monotonic()))
                    s.sendall(step[1])
                elif step[0] == "pause":
                    time.sleep(step[1])
                elif step[0] == "shut":
                    s.shutdown(socket.SHUT_WR)
                elif step[0] == "expect":
                    while not buf.endswith(step[1]) and not closed \
                            and time.monotonic() < deadline:
                        recv_some()
                else:
                    raise ValueError("unknown step %r" % (step,))
            while not closed and time.monotonic() < deadline:
                recv_some()
        except socket.timeout:
            pass
        except OSError as e:
            error = errno_name(e)
            closed = True
    finally:
        s.close()
    return Exchange(bytes(buf), closed, error)


def errno_name(exc):
    return errno.errorcode.get(exc.errno, str(exc.errno)) if exc.errno else type(exc).__name__


def read_to_eof(sock):
    """Every byte the peer sends until it closes the connection."""
    data = b""
    while True:
        piece = sock.recv(65536)
        if not piece:
            return data
        data += piece


def split_response(data):
    """Split raw bytes into (interim 1xx heads, status line, [(name, value)], body bytes).

    The body is returned as it was on the wire (still chunked, if it was).
    """
    interim = []
    while True:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            raise AssertionError("no complete response head in %r" % (data[:300],))
        lines = head.split(b"\r\n")
        if re.match(rb"HTTP/1\.\d 1\d\d ", lines[0]) and not lines[0].startswith(b"HTTP/1.1 101"):
            interim.append(head + sep)
            data = rest
            continue
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
        return interim, lines[0].decode("latin-1"), headers, rest


def dechunk(body):
    """Decode a complete chunked body: (payload, trailer bytes). Raises if incomplete."""
    out = bytearray()
    pos = 0
    while True:
        end = body.index(b"\r\n", pos)
        size = int(body[pos:end].split(b";")[0], 16)
        pos = end + 2
        if size == 0:
            return bytes(out), body[pos:]
        out += body[pos:pos + size]
        if body[pos + size:pos + size + 2] != b"\r\n":
            raise ValueError("chunk not followed by CRLF at %d" % (pos + size))
        pos += size + 2


def tls_client_context(certfile):
    ctx = ssl.create_default_context(cafile=certfile)
    ctx.check_hostname = False
    return ctx


def make_self_signed_cert(directory):
    """(certfile, keyfile) for 127.0.0.1, or (None, reason) when nothing can make one."""
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    try:
        _cert_with_cryptography(cert, key)
        return cert, key
    except ImportError:
        pass
    openssl = shutil.which("openssl")
    if openssl is None:
        return None, "neither the cryptography package nor the openssl command is available"
    proc = subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                           "-keyout", key, "-out", cert, "-days", "2",
                           "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    if proc.returncode != 0:
        return None, "openssl req failed: %s" % proc.stdout.decode("utf-8", "replace")[-500:]
    return cert, key


def _cert_with_cryptography(cert_path, key_path):
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
