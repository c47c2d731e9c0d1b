"""Operating gunicorn with a turbo worker while clients keep coming: no request fails.

One run per worker, 4 workers recycled by ``max_requests`` (with jitter) all
along, 4 client threads sending requests on new connections the whole time
(tests/deploy.py ``Load``: bounded in count and time). In turn:

1. ``HUP``: every worker replaced by a new one;
2. ``TTIN`` then ``TTOU``: a fifth worker, then back to four;
3. binary upgrade: ``USR2`` makes the master re-exec itself (a new master, found
   by its pid file ``<pid>.2``, with its own workers on the same listening
   socket), then ``TERM`` to the old master, which stops its workers
   gracefully; the new master promotes itself (pid file renamed back).
   ``QUIT`` is gunicorn's fast stop: it cuts the old workers' requests in
   flight with the stock workers too, so the graceful ``TERM`` is what an
   upgrade that loses nothing sends.
4. graceful ``TERM`` of the new master with two slow requests in the
   application: both complete with 200 and the master exits.

The other tests already cover parts of this per worker (tests/test_sync_worker.py:
HUP and TTIN/TTOU without load, max_requests; tests/test_thread_worker.py: HUP,
max_requests and SIGTERM under load; tests/test_gevent_worker.py: max_requests
under load, HUP with two listeners); this run puts all of them under one load,
and adds the binary upgrade.
"""
import os
import re
import signal
import threading
import time

import pytest

import deploy
import servers

WORKERS = 4
STEP_TIMEOUT = 40.0


def wait_until(predicate, what, srv, timeout=STEP_TIMEOUT):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "%s: not after %.0f s\n%s" % (what, timeout,
                                                                          srv.log_tail())
        time.sleep(0.05)


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def live_children(pid):
    return set(servers.children(pid))


def slow_requests(srv, n, marker_dir):
    """``n`` requests that sleep in the app; returns (threads, results, markers)."""
    results = []
    markers = [os.path.join(marker_dir, "in-app-%d" % i) for i in range(n)]

    def run(marker):
        try:
            resp = srv.get("/_/sleep?s=1.5&marker=" + marker, timeout=30.0)
            results.append(resp.status)
        except Exception as e:
            results.append(repr(e))

    threads = [threading.Thread(target=run, args=(m,), daemon=True) for m in markers]
    for t in threads:
        t.start()
    return threads, results, markers


@pytest.mark.parametrize("kind", deploy.KIND_NAMES)
def test_operations_under_load(gunicorn_server, tmp_path, kind):
    pidfile = str(tmp_path / "gunicorn.pid")
    srv = gunicorn_server(name="ops-" + kind, worker_class=deploy.KINDS[kind][1],
                          workers=WORKERS, app="apps:app", script=True,
                          args=deploy.turbo_args(kind) + ["--max-requests", "120",
                                                          "--max-requests-jitter", "30",
                                                          "--pid", pidfile])
    master = srv.pid
    new_master = None
    load = deploy.Load(lambda: srv.connect(timeout=30.0), srv.host_header, threads=4,
                       max_requests=100000, max_seconds=150.0)
    try:
        with load:
            load.wait_for(40)

            # 1. HUP: all workers replaced
            load.phase = "HUP"
            old = live_children(master)
            os.kill(master, signal.SIGHUP)
            wait_until(lambda: not (live_children(master) & old)
                       and len(live_children(master)) == WORKERS, "HUP", srv)
            load.wait_for(40)

            # 2. TTIN, TTOU
            load.phase = "TTIN"
            os.kill(master, signal.SIGTTIN)
            wait_until(lambda: len(live_children(master)) == WORKERS + 1, "TTIN", srv)
            load.wait_for(20)
            load.phase = "TTOU"
            os.kill(master, signal.SIGTTOU)
            wait_until(lambda: len(live_children(master)) == WORKERS, "TTOU", srv)
            load.wait_for(20)

            # 3. USR2: a new master beside the old one, then TERM to the old one
            load.phase = "USR2"
            os.kill(master, signal.SIGUSR2)
            wait_until(lambda: read_pid(pidfile + ".2"), "USR2: the new master's pid file", srv)
            new_master = read_pid(pidfile + ".2")
            new_master_start = servers._stat(new_master)[1]
            # the new workers are in their run loop once they logged their HTTP code
            wait_until(lambda: _ready_workers(srv, live_children(new_master)) >= WORKERS,
                       "USR2: the new master's workers", srv)
            old_workers = live_children(master)
            load.phase = "TERM of the old master"
            os.kill(master, signal.SIGTERM)
            assert srv.wait_exit(STEP_TIMEOUT) == 0, srv.log_tail()
            wait_until(lambda: read_pid(pidfile) == new_master, "promotion of the new master", srv)
            load.phase = "after the upgrade"
            before = load.count
            load.wait_for(40)
            assert not set(load.pids[before:]) & old_workers
        # load stopped: every request so far was answered
        assert not load.failures, load.failures[:10]
        assert "Autorestarting worker after current request." in srv.log_text()

        # 4. graceful TERM with requests in the application
        threads, results, markers = slow_requests(srv, 2, str(tmp_path))
        wait_until(lambda: all(os.path.exists(m) for m in markers), "slow requests in the app",
                   srv)
        os.kill(new_master, signal.SIGTERM)
        for t in threads:
            t.join(40)
        assert results == [200, 200], results + [srv.log_tail()]
        wait_until(lambda: not servers._same_process(new_master, new_master_start),
                   "the new master's exit", srv)
        new_master = None
        log = srv.log_text()
        assert "WORKER TIMEOUT" not in log and "Traceback" not in log, srv.log_tail(80)
        assert load.count >= 160
    finally:
        load.stop()
        if new_master is not None:
            _stop_by_pid(new_master)


def _ready_workers(srv, pids):
    # a turbo worker logs which HTTP code it uses as it enters its run loop
    up = {int(m) for m in re.findall(r"\[(\d+)\] \[\w+\] turboworkers: ", srv.log_text())}
    return len(up & set(pids))


def _stop_by_pid(pid):
    st = servers._stat(pid)
    if st is None:
        return
    workers = servers.children(pid)
    servers._kill_if_same(pid, st[1], signal.SIGTERM)
    if not servers._wait_gone(pid, st[1], servers.STOP_TIMEOUT):
        servers._kill_if_same(pid, st[1])
    for wpid, start in workers.items():
        if not servers._wait_gone(wpid, start, 2.0):
            servers._kill_if_same(wpid, start)
