"""Shared pytest fixtures. Each block below belongs to one group of tests; add yours as a block."""

# ---- end-to-end server fixtures (tests/servers.py; owner: worker end-to-end tests) ----
# Real gunicorn processes for test_sync_worker.py, test_worker_differential.py
# and test_mode.py. Every server a fixture starts is stopped at teardown
# (SIGTERM, bounded wait, SIGKILL by pid), and the end of its log is printed
# so a failing test shows it.
import pytest as _e2e_pytest

import servers as _e2e_servers


class _E2EServerSet:
    def __init__(self, base_dir):
        self.base_dir = base_dir
        self.started = []

    def __call__(self, **kw):
        """Start a ``servers.GunicornServer`` (keywords as its constructor, plus
        ``wait``) and return it once ready; it is stopped at teardown."""
        wait = kw.pop("wait", True)
        name = kw.setdefault("name", "gunicorn")
        workdir = self.base_dir / ("%s-%d" % (name, len(self.started)))
        srv = _e2e_servers.GunicornServer(workdir, **kw)
        self.started.append(srv)
        srv.start(wait=wait)
        return srv

    def stop_all(self):
        # SIGTERM to all first: the graceful stops overlap
        for srv in self.started:
            srv.terminate()
        for srv in self.started:
            srv.stop()
            print("---- %s log (%s), last lines ----\n%s"
                  % (srv.name, srv.log_path, srv.log_tail(40)))


@_e2e_pytest.fixture
def gunicorn_server(tmp_path):
    """Factory: ``gunicorn_server(app=..., worker_class=..., args=[...])`` -> a running server."""
    servers_ = _E2EServerSet(tmp_path)
    try:
        yield servers_
    finally:
        servers_.stop_all()


@_e2e_pytest.fixture(scope="module")
def module_gunicorn_server(tmp_path_factory):
    """The same factory, its servers shared by the tests of one module."""
    servers_ = _E2EServerSet(tmp_path_factory.mktemp("servers"))
    try:
        yield servers_
    finally:
        servers_.stop_all()


class _E2EReport:
    """Lines shown in the terminal summary, whether the tests pass or not."""

    def __init__(self):
        self.lines = []

    def pytest_terminal_summary(self, terminalreporter):
        if self.lines:
            terminalreporter.section("turboworkers end-to-end report")
            for line in self.lines:
                terminalreporter.write_line(line)


@_e2e_pytest.fixture
def e2e_report(request):
    """``e2e_report("text")`` adds a line to the end-of-run report."""
    pm = request.config.pluginmanager
    plugin = pm.get_plugin("turboworkers-e2e-report")
    if plugin is None:
        plugin = _E2EReport()
        pm.register(plugin, "turboworkers-e2e-report")
    return lambda line: plugin.lines.append("%s: %s" % (request.node.nodeid, line))
# ---- end of end-to-end server fixtures ----

# ---- deployment fixtures (tests/deploy.py; owner: deployment tests) ----
# test_deploy_apps.py and test_deploy_nginx.py share one stock/turbo pair per
# worker kind, serving deploy_app:app on a TCP and a unix listener: starting
# them once for the session keeps the suite short.


class _DeployPairs:
    def __init__(self, factory):
        self.factory = factory
        self.pairs = {}

    def get(self, kind):
        """(stock, turbo) servers of ``kind`` (see deploy.KINDS), started on first use."""
        import deploy
        if kind not in self.pairs:
            # boot every kind at once: their start-ups overlap
            started = {}
            for k in deploy.KIND_NAMES:
                if k not in self.pairs:
                    started[k] = [self.factory(name="%s-%s" % (side, k), worker_class=cls,
                                               app="deploy_app:app", listeners=("tcp", "unix"),
                                               args=args, wait=False)
                                  for side, cls, args in (
                                      ("stock", deploy.KINDS[k][0], deploy.stock_args(k)),
                                      ("turbo", deploy.KINDS[k][1], deploy.turbo_args(k)))]
            for k, pair in started.items():
                for srv in pair:
                    srv.wait_ready()
                self.pairs[k] = tuple(pair)
        return self.pairs[kind]


@_e2e_pytest.fixture(scope="session")
def deploy_pairs(tmp_path_factory):
    servers_ = _E2EServerSet(tmp_path_factory.mktemp("deploy"))
    try:
        yield _DeployPairs(servers_)
    finally:
        servers_.stop_all()
# ---- end of deployment fixtures ----
