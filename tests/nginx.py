"""nginx for the deployment tests: ``examples/nginx.conf`` rendered into a temp dir and run.

``render`` keeps the example's ``location / { ... }`` block (the proxy
settings under test) and replaces what belongs to the machine: the pid file,
logs and temp paths go into the temp dir, the listeners are 127.0.0.1 ports
the test picked, the certificate is the test's, and the one upstream becomes
one upstream per backend, each reached under ``/<name>/`` (nginx strips the
prefix: ``proxy_pass http://<name>/``).

nginx runs in the foreground as one process (``daemon off; master_process
off;``), a child of the test, stopped with SIGQUIT (then SIGKILL) at the end.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import time

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "examples", "nginx.conf")
START_TIMEOUT = 15.0


def binary():
    """The nginx executable, or None."""
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)


def _location_body(text):
    m = re.search(r"location / \{\n(.*?)\n\s*\}", text, re.S)
    if m is None:
        raise ValueError("examples/nginx.conf has no 'location / { ... }' block")
    return m.group(1)


def render(workdir, port, ssl_port, cert, key, upstreams, keepalive=8, example=EXAMPLE):
    """The config text: ``upstreams`` maps a name to its server addresses
    (``"unix:/path"`` or ``"127.0.0.1:port"``)."""
    with open(example) as f:
        text = f.read()
    body = _location_body(text)
    assert "proxy_pass http://app_servers;" in body, body
    ups = []
    locations = []
    for name, addrs in sorted(upstreams.items()):
        ups.append("    upstream %s {\n%s\n        keepalive %d;\n    }"
                   % (name, "\n".join("        server %s fail_timeout=0;" % a for a in addrs),
                      keepalive))
        locations.append("        location /%s/ {\n%s\n        }"
                         % (name, body.replace("proxy_pass http://app_servers;",
                                               "proxy_pass http://%s/;" % name)))
    temp = {d: os.path.join(workdir, d) for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for d in temp.values():
        os.makedirs(d, exist_ok=True)
    client_max = re.search(r"client_max_body_size [^;]+;", text).group(0)
    return "\n".join([
        "daemon off;",
        "master_process off;",
        "pid %s;" % os.path.join(workdir, "nginx.pid"),
        "error_log %s info;" % os.path.join(workdir, "error.log"),
        "events { worker_connections 256; }",
        "http {",
        "    default_type application/octet-stream;",
        "    access_log %s;" % os.path.join(workdir, "access.log"),
        "    client_body_temp_path %s;" % temp["body"],
        "    proxy_temp_path %s;" % temp["proxy"],
        "    fastcgi_temp_path %s;" % temp["fastcgi"],
        "    uwsgi_temp_path %s;" % temp["uwsgi"],
        "    scgi_temp_path %s;" % temp["scgi"],
        "    " + client_max,
        "\n".join(ups),
        "    server {",
        "        listen 127.0.0.1:%d;" % port,
        "        listen 127.0.0.1:%d ssl;" % ssl_port,
        "        ssl_certificate %s;" % cert,
        "        ssl_certificate_key %s;" % key,
        "        server_name _;",
        "\n".join(locations),
        "    }",
        "}",
        "",
    ])


class Nginx:
    def __init__(self, workdir, config_text, port, ssl_port):
        self.workdir = workdir
        self.port = port
        self.ssl_port = ssl_port
        self.conf = os.path.join(workdir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(config_text)
        self.proc = None

    def check(self):
        """nginx -t on the config: (ok, output)."""
        proc = subprocess.run([binary(), "-t", "-p", self.workdir, "-c", self.conf,
                               "-e", os.path.join(self.workdir, "error.log")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        return proc.returncode == 0, proc.stdout.decode("utf-8", "replace")

    def start(self):
        log = open(os.path.join(self.workdir, "stderr.log"), "wb")
        try:
            self.proc = subprocess.Popen([binary(), "-p", self.workdir, "-c", self.conf,
                                          "-e", os.path.join(self.workdir, "error.log")],
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("nginx exited with code %s:\n%s"
                                   % (self.proc.returncode, self.log_tail()))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("nginx not listening after %.0f s:\n%s"
                                       % (START_TIMEOUT, self.log_tail()))
                time.sleep(0.05)

    def log_tail(self, lines=30):
        out = []
        for name in ("stderr.log", "error.log"):
            try:
                with open(os.path.join(self.workdir, name), errors="replace") as f:
                    out += f.read().splitlines()[-lines:]
            except OSError:
                pass
        return "\n".join(out)

    def connect(self, tls_context=None, timeout=20.0):
        if tls_context is None:
            return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        s = socket.create_connection(("127.0.0.1", self.ssl_port), timeout=timeout)
        return tls_context.wrap_socket(s, server_hostname=None)

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
