"""The registry of servers the harness runs, and how each one is started.

Each entry is a name (what ``--server`` takes), a family (ours, stock
gunicorn, another peer, or the nginx ceiling), a concurrency style (which
decides its options in a scenario) and a way to build its command line.
"""
import os
import shutil
import sys
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

APPS = {
    "hello": "bench.apps.hello:app",
    "flask": "bench.apps.flask_json:app",
    "io": "bench.apps.io_bound:app",
    "mixed": "bench.apps.mixed:app",
}

# must match bench.apps.hello.BODY
HELLO_BODY = "Hello, World!"


@dataclass(frozen=True)
class Server:
    name: str
    title: str
    family: str                 # "turbo" | "stock" | "peer" | "ceiling"
    style: str                  # "sync" | "thread" | "gevent" | "event" | "ceiling"
    kind: str                   # "gunicorn" | "granian" | "bjoern" | "nginx"
    worker_class: str = None    # gunicorn -k
    http_parser: str = None     # gunicorn --http-parser
    needs: tuple = ()           # modules that must import (bench.probe names)
    turbo_class: str = None     # attribute of turboworkers
    stock: tuple = ()           # turbo: names of (python-parser, fast-parser) stock twins
    apps: tuple = ("hello", "flask", "io", "mixed")
    tools: tuple = ()           # executables that must be on PATH
    notes: str = ""


def _registry():
    servers = [
        Server("turbo-sync", "turboworkers.SyncMutexWorker", "turbo", "sync", "gunicorn",
               worker_class="turboworkers.SyncMutexWorker", turbo_class="SyncMutexWorker",
               stock=("sync-py", "sync-fast")),
        Server("turbo-thread", "turboworkers.EpollThreadWorker", "turbo", "thread", "gunicorn",
               worker_class="turboworkers.EpollThreadWorker", turbo_class="EpollThreadWorker",
               stock=("gthread-py", "gthread-fast")),
        Server("turbo-gevent", "turboworkers.GeventMutexWorker", "turbo", "gevent", "gunicorn",
               worker_class="turboworkers.GeventMutexWorker", turbo_class="GeventMutexWorker",
               needs=("gevent",), stock=("gevent-py", "gevent-fast")),
    ]
    for style, klass, needs in (("sync", "sync", ()), ("thread", "gthread", ()),
                                ("gevent", "gevent", ("gevent",))):
        servers.append(Server(
            "%s-py" % klass, "gunicorn %s, python parser" % klass, "stock", style, "gunicorn",
            worker_class=klass, http_parser="python", needs=needs))
        servers.append(Server(
            "%s-fast" % klass, "gunicorn %s, gunicorn_h1c parser" % klass, "stock", style,
            "gunicorn", worker_class=klass, http_parser="fast",
            needs=needs + ("gunicorn_h1c",)))
    servers += [
        Server("meinheld", "meinheld.gmeinheld.MeinheldWorker", "peer", "event", "gunicorn",
               worker_class="meinheld.gmeinheld.MeinheldWorker", needs=("meinheld", "greenlet"),
               apps=("hello", "flask"),
               notes="time.sleep is not patched by meinheld: no I/O-bound runs"),
        Server("granian", "granian --interface wsgi", "peer", "event", "granian",
               needs=("granian",), apps=("hello", "flask")),
        Server("bjoern", "bjoern (N forked processes)", "peer", "event", "bjoern",
               needs=("bjoern",), apps=("hello", "flask")),
        Server("nginx", "nginx, fixed string (ceiling)", "ceiling", "ceiling", "nginx",
               apps=("hello",), tools=("nginx",)),
    ]
    return {s.name: s for s in servers}


SERVERS = _registry()


def availability(server, probe):
    """``None`` if ``server`` can run here, else the reason it cannot.

    ``probe`` is the output of ``bench.probe`` run in the venv's interpreter.
    """
    if server.turbo_class:
        tw = probe.get("turboworkers", {})
        if not tw.get("ok"):
            return "turboworkers does not import: %s" % tw.get("reason")
        info = probe.get("turbo", {}).get(server.turbo_class, {})
        if not info.get("ok"):
            return info.get("reason") or "not built yet"
    for module in server.needs:
        info = probe.get("modules", {}).get(module)
        if info is None or not info.get("ok"):
            reason = info.get("reason") if info else "not probed"
            return "not installed (%s: %s)%s" % (module, reason, install_hint(module))
    for tool in server.tools:
        if find_tool(tool) is None:
            return "not installed (%s is not on PATH)" % tool
    return None


def find_tool(name):
    """Path of an executable: PATH first, then the sbin directories (nginx lives there)."""
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        path = os.path.join(d, name)
        if os.access(path, os.X_OK):
            return path
    return None


def install_hint(module):
    """The last lines of bench/install.sh's log for ``module``, if it failed there."""
    log = os.path.join(ROOT, "bench", "results", "tmp", "install-%s.log" % module)
    try:
        with open(log, encoding="utf-8", errors="replace") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if "error" in ln.lower()]
    tail = (errors or lines)[-2:]
    return "; install log: " + " | ".join(tail)[:300] if tail else ""


@dataclass
class Launch:
    argv: list
    env: dict = field(default_factory=dict)
    cwd: str = ROOT
    config_files: dict = field(default_factory=dict)   # path -> text, written before start


def launch(server, *, app, host, port, workers, threads, worker_connections, tmpdir,
           python=None):
    """How to start ``server`` serving ``app`` (a key of APPS) on host:port."""
    python = python or sys.executable
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    target = APPS[app]
    if server.kind == "gunicorn":
        argv = [python, "-m", "gunicorn", "-k", server.worker_class, "-w", str(workers),
                "-b", "%s:%d" % (host, port), "--log-level", "warning",
                "--pid", os.path.join(tmpdir, "gunicorn.pid")]
        if server.http_parser:
            argv += ["--http-parser", server.http_parser]
        if server.style == "thread":
            argv += ["--threads", str(threads)]
        if server.style == "gevent":
            argv += ["--worker-connections", str(worker_connections)]
        argv.append(target)
        return Launch(argv, env)
    if server.kind == "granian":
        argv = [python, "-m", "granian", "--interface", "wsgi", "--host", host,
                "--port", str(port), "--workers", str(workers), "--http", "1", "--no-ws",
                "--log-level", "warning", target]
        return Launch(argv, env)
    if server.kind == "bjoern":
        argv = [python, "-m", "bench.bjoern_serve", target, host, str(port), str(workers)]
        return Launch(argv, env)
    if server.kind == "nginx":
        conf = os.path.join(tmpdir, "nginx.conf")
        text = nginx_conf(tmpdir, host, port, workers)
        argv = [find_tool("nginx") or "nginx", "-p", tmpdir + "/", "-c", conf,
                "-e", os.path.join(tmpdir, "error.log")]
        return Launch(argv, env, config_files={conf: text})
    raise ValueError("unknown server kind %r" % server.kind)


def nginx_conf(tmpdir, host, port, workers):
    """An nginx configuration answering HELLO_BODY, everything inside ``tmpdir``."""
    def p(name):
        return os.path.join(tmpdir, name)
    return """\
# written by bench/servers.py for one benchmark run
daemon off;
master_process on;
worker_processes {workers};
pid {pid};
error_log {error_log} warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {body};
    proxy_temp_path {proxy};
    fastcgi_temp_path {fastcgi};
    uwsgi_temp_path {uwsgi};
    scgi_temp_path {scgi};
    keepalive_requests 1000000;
    server {{
        listen {host}:{port};
        location / {{
            default_type text/plain;
            add_header X-Worker-Pid $pid always;
            return 200 "{body_text}";
        }}
    }}
}}
""".format(workers=workers, pid=p("nginx.pid"), error_log=p("error.log"),
           body=p("client_body"), proxy=p("proxy"), fastcgi=p("fastcgi"),
           uwsgi=p("uwsgi"), scgi=p("scgi"), host=host, port=port, body_text=HELLO_BODY)
