"""End to end: the accept engines in real gunicorn processes.

``gunicorn -k turboworkers.SyncMutexWorker`` with ``TURBOWORKERS_ACCEPT`` set
to each engine (tests/servers.py starts and stops the processes): requests
served on one and on two listeners, bad values refused with one line, what
the master makes (a SysV semaphore, a lock file) made once and removed when
it exits, workers killed with SIGKILL while holding the accept mutex, and
the herd (context switches per request, requests per worker).

Durations are measured and reported (pytest -s, and the end-of-run report),
never asserted: a bound such as "served within 10 s" only keeps a hang from
lasting. The compiled ``_accept`` module is used in pure mode too, so every
engine runs in both modes.
"""
import ctypes
import glob
import os
import re
import signal
import subprocess
import tempfile
import threading
import time

import pytest

import servers
from turboworkers import _ext

try:
    from turboworkers import _accept
except ImportError:  # the engines then use the stdlib (sem becomes fcntl)
    _accept = None

ENGINES = ("queue", "sem", "fcntl", "epoll", "none")
# the engine a worker reports for each value (sem needs the compiled module)
EFFECTIVE = {e: e for e in ENGINES}
if _accept is None:
    EFFECTIVE["sem"] = "fcntl"

SERVE_BOUND = 10.0     # seconds a request may take before the test calls it lost
CLEAN_ENV = {"TURBOWORKERS_ACCEPT": None, "TURBOWORKERS_EPOLL_ROTATE": None,
             "TURBOWORKERS_LOCK_DIR": None}


def env_for(engine=None, **more):
    env = dict(CLEAN_ENV)
    if engine is not None:
        env["TURBOWORKERS_ACCEPT"] = engine
    env.update(more)
    return env


# -- what a master made: semaphores and lock files ------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_GETPID = 11  # semctl command: pid of the last process that operated on (or set) it


def sem_table():
    """{semid: pid of its last operation} for every SysV semaphore set here.

    Other processes on the machine own semaphores too; the pid tells ours:
    the master sets the value (SETVAL records its pid) and its workers
    operate on it.
    """
    semids = []
    try:
        with open("/proc/sysvipc/sem") as f:
            next(f)
            semids = [int(line.split()[1]) for line in f if line.strip()]
    except OSError:
        out = subprocess.run(["ipcs", "-s"], stdout=subprocess.PIPE, timeout=10,
                             universal_newlines=True).stdout
        semids = [int(m) for m in re.findall(r"^0x[0-9a-f]+\s+(\d+)\s", out, re.M)]
    table = {}
    for semid in semids:
        pid = _libc.semctl(semid, 0, _GETPID)
        if pid >= 0:
            table[semid] = pid
    return table


def semaphores_of(before, pids):
    """The semids that were not there in ``before`` and were last touched by ``pids``."""
    return {semid for semid, pid in sem_table().items() if semid not in before and pid in pids}


def semaphore_exists(semid):
    if _accept is not None:
        try:
            _accept.Semaphore(semid).value()
            return True
        except OSError:
            return False
    return semid in sem_table()


def lock_files_of(master_pid):
    """The accept lock files a master made in the temporary directory."""
    return set(glob.glob(os.path.join(tempfile.gettempdir(),
                                      "turboworkers-accept-%d-*.lock" % master_pid)))


def family(srv):
    """Pids of the master and its workers now."""
    return {srv.pid} | set(srv.worker_pids())


# -- workers --------------------------------------------------------------------

def engines_logged(srv):
    """{worker pid: engine} from the workers' debug lines."""
    return {int(pid): engine for pid, engine in
            re.findall(r"\[(\d+)\] \[DEBUG\] turboworkers: accept engine (\w+)", srv.log_text())}


def wait_workers_ready(srv, count, exclude=(), timeout=20.0):
    """Until ``count`` live workers (not in ``exclude``) are in their accept loop."""
    deadline = time.monotonic() + timeout
    while True:
        logged = engines_logged(srv)
        ready = [p for p in srv.worker_pids() if p not in exclude and p in logged]
        if len(ready) >= count:
            return ready
        assert time.monotonic() < deadline, \
            "no %d ready workers after %.0f s; log:\n%s" % (count, timeout, srv.log_tail())
        time.sleep(0.01)


def wait_gone(pids, timeout=20.0):
    deadline = time.monotonic() + timeout
    while any(servers._stat(p) is not None for p in pids):  # None: gone or a zombie
        assert time.monotonic() < deadline, "processes %s still alive" % (pids,)
        time.sleep(0.01)


def served_by(resp):
    assert resp.status == 200, resp
    return int(servers.header(resp, "X-Worker-Pid")[0])


def one_line_naming(text, variable):
    """The distinct log lines naming ``variable``: exactly one, and no traceback.

    (The indented lines of the master's debug dump of its configuration,
    where ``--env`` shows as ``raw_env``, are not messages.)"""
    lines = {l.strip() for l in text.splitlines() if variable in l and not l.startswith(" ")}
    assert len(lines) == 1, "one line naming %s expected, got:\n%s" % (variable, text[-3000:])
    assert "Traceback" not in text, text[-3000:]
    return lines.pop()


# -- serving, each engine --------------------------------------------------------

CASES = [("queue", 1), ("sem", 1), ("sem", 2), ("fcntl", 1), ("fcntl", 2),
         ("epoll", 1), ("epoll", 2), ("none", 1), ("none", 2)]
LISTENERS = {1: ("tcp",), 2: ("tcp", "unix")}


@pytest.fixture(scope="module")
def engine_servers(module_gunicorn_server):
    """One 2-worker server per (engine, listeners), booted side by side."""
    out = {}
    for engine, n in CASES:
        out[engine, n] = module_gunicorn_server(
            name="%s-%d" % (engine, n), workers=2, listeners=LISTENERS[n],
            env=env_for(engine), wait=False)
    for srv in out.values():
        srv.wait_ready()
    return out


@pytest.mark.parametrize("engine,n", CASES, ids=["%s-%dlistener" % c for c in CASES])
def test_engine_serves_on_every_listener(engine_servers, engine, n):
    srv = engine_servers[engine, n]
    workers = set(srv.worker_pids())
    assert len(workers) == 2
    assert set(engines_logged(srv).values()) == {EFFECTIVE[engine]}
    counts = dict.fromkeys(range(n), 0)
    for i in range(12):
        listener = i % n
        resp = srv.get("/_/pid", listener=listener, timeout=SERVE_BOUND)
        assert served_by(resp) in workers
        counts[listener] += 1
    assert counts == dict.fromkeys(range(n), 12 // n)
    for listener in range(n):
        body = b"engine %s, listener %d" % (engine.encode(), listener)
        resp = srv.request("POST", "/echo", body=body, listener=listener, timeout=SERVE_BOUND)
        assert resp.status == 200 and body.decode() in resp.body.decode()
    # two connections at once, one per worker: neither waits for the other to close
    conns = [srv.connect(listener=i % n) for i in range(2)]
    try:
        for c in conns:
            c.sendall(b"GET /_/pid HTTP/1.1\r\nHost: x\r\n\r\n")
        for c in conns:
            data = b""
            while b"\r\n\r\n" not in data:
                piece = c.recv(4096)
                assert piece, "closed without an answer"
                data += piece
            assert data.startswith(b"HTTP/1.1 200 ")
    finally:
        for c in conns:
            c.close()
    assert srv.worker_pids() == sorted(workers), "no worker died"
    assert "Traceback" not in srv.log_text(), srv.log_tail()


# -- bad values -------------------------------------------------------------------

@pytest.mark.parametrize("variable,value", [
    ("TURBOWORKERS_ACCEPT", "bogus"),
    ("TURBOWORKERS_ACCEPT", "semaphore"),
    ("TURBOWORKERS_EPOLL_ROTATE", "0"),
    ("TURBOWORKERS_EPOLL_ROTATE", "often"),
])
def test_bad_value_stops_gunicorn_with_one_line(gunicorn_server, variable, value):
    srv = gunicorn_server(name="bad", workers=2, env=env_for(**{variable: value}), wait=False)
    code = srv.wait_exit(20)
    assert code is not None, "gunicorn still runs with %s=%r; log:\n%s" % (variable, value,
                                                                          srv.log_tail())
    assert code != 0
    line = one_line_naming(srv.log_text(), variable)
    assert "%s=%r" % (variable, value) in line
    assert "Booting worker" not in srv.log_text()


def test_queue_with_two_listeners_is_a_worker_boot_error(gunicorn_server):
    # one worker: when two fail to boot at once, gunicorn 27.0.1's master
    # raises HaltServer again while it stops and prints a traceback of its own
    srv = gunicorn_server(name="queue-2", workers=1, listeners=("tcp", "unix"),
                          env=env_for("queue"), wait=False)
    code = srv.wait_exit(20)
    assert code is not None, "gunicorn still runs; log:\n%s" % srv.log_tail()
    assert code == 3, "gunicorn's WORKER_BOOT_ERROR stops the master: %s" % code
    line = one_line_naming(srv.log_text(), "TURBOWORKERS_ACCEPT")
    assert "TURBOWORKERS_ACCEPT=queue needs exactly one listener (there are 2)" in line
    assert "Worker failed to boot" in srv.log_text()


@pytest.mark.parametrize("setting", [
    "TURBOWORKERS_ACCEPT=bogus",
    "TURBOWORKERS_ACCEPT=fcntl",
    "TURBOWORKERS_EPOLL_ROTATE=often",
])
def test_value_given_with_gunicorns_env_setting(gunicorn_server, setting):
    """``--env NAME=VALUE`` (``raw_env``) is applied by the master *after* it
    has called the worker class's setup(): the workers see the value, setup()
    did not. gunicorn must then either serve with it or stop with one line,
    never respawn crashing workers for ever."""
    variable = setting.split("=")[0]
    # one worker: see test_queue_with_two_listeners_is_a_worker_boot_error
    srv = gunicorn_server(name="raw-env", workers=1, env=env_for(),
                          args=["--env", setting], wait=False)
    deadline = time.monotonic() + 20
    while True:
        text = srv.log_text()
        code = srv.proc.poll()
        if code is not None:
            assert code != 0
            one_line_naming(srv.log_text(), variable)
            return
        if "Traceback" in text:
            time.sleep(1.0)  # let the respawns show
            text = srv.log_text()
            lines = text.splitlines()
            first = next(i for i, l in enumerate(lines) if l.startswith("Traceback"))
            pytest.fail("%s: workers crash with a traceback and are booted again "
                        "(%d boots, %d exits with code 255 so far); the first crash:\n%s"
                        % (setting, text.count("Booting worker"),
                           text.count("exited with code 255"),
                           "\n".join(lines[first:first + 16])))
        if len(engines_logged(srv)) >= 1:
            assert srv.get("/_/pid", timeout=SERVE_BOUND).status == 200
            return
        assert time.monotonic() < deadline, "neither served nor stopped; log:\n%s" % srv.log_tail()
        time.sleep(0.02)


# -- lifecycle ----------------------------------------------------------------------

# engine -> (semaphores, lock files) its master makes
# What the master makes, whatever the engine: gunicorn applies --env after
# the worker class's setup(), so the master cannot know which engine the
# workers will ask for, and makes both (the semaphore needs the extension).
MADE = {engine: (1 if _accept is not None else 0, 1)
        for engine in ("auto", "queue", "sem", "fcntl", "epoll", "none")}


def test_master_exit_leaves_no_semaphore_and_no_lock_file(gunicorn_server):
    before = sem_table()
    srvs = {engine: gunicorn_server(name="exit-" + engine, workers=2,
                                    env=env_for(None if engine == "auto" else engine),
                                    wait=False)
            for engine in MADE}
    made = {}
    for engine, srv in srvs.items():
        srv.wait_ready()
        assert srv.get("/_/pid", timeout=SERVE_BOUND).status == 200
        sems = semaphores_of(before, family(srv))
        locks = lock_files_of(srv.pid)
        assert (len(sems), len(locks)) == MADE[engine], (engine, sems, locks)
        made[engine] = (srv.pid, sems, locks)
    for srv in srvs.values():
        srv.terminate()
    for engine, srv in srvs.items():
        assert srv.wait_exit(30) == 0, "%s: master did not exit cleanly; log:\n%s" \
            % (engine, srv.log_tail())
    for engine, (pid, sems, locks) in made.items():
        for semid in sems:
            assert not semaphore_exists(semid), "%s: semaphore %d left" % (engine, semid)
        assert not lock_files_of(pid), "%s: lock files left: %s" % (engine, lock_files_of(pid))


def _load(srv, stop, results, listeners=1):
    """Sequential requests until ``stop`` is set (at most 500 and 60 s, each bounded)."""
    deadline = time.monotonic() + 60
    for i in range(500):
        if stop.is_set() or time.monotonic() > deadline:
            return
        try:
            resp = srv.get("/_/pid", listener=i % listeners, timeout=SERVE_BOUND)
            results.append(resp.status)
        except Exception as e:  # counted as a failure by the test
            results.append(repr(e))
        time.sleep(0.005)


@pytest.mark.parametrize("engine", ["auto", "fcntl"])
def test_hup_reload_keeps_serving_and_makes_nothing_new(gunicorn_server, engine):
    before = sem_table()
    srv = gunicorn_server(name="hup-" + engine, workers=2, listeners=("tcp", "unix"),
                          env=env_for(None if engine == "auto" else engine))
    expected = MADE[engine]
    seen = family(srv)
    sems, locks = semaphores_of(before, seen), lock_files_of(srv.pid)
    assert (len(sems), len(locks)) == expected
    old = srv.worker_pids()
    stop, results = threading.Event(), []
    loader = threading.Thread(target=_load, args=(srv, stop, results, 2))
    loader.start()
    try:
        for _ in range(2):  # two reloads: setup() runs in the master each time
            os.kill(srv.pid, signal.SIGHUP)
            new = wait_workers_ready(srv, 2, exclude=old)
            wait_gone(old)
            seen |= set(new)
            old = new
    finally:
        time.sleep(0.2)
        stop.set()
        loader.join(60)
    assert not loader.is_alive()
    failures = [r for r in results if r != 200]
    assert results and not failures, "%d of %d requests failed: %s" % (
        len(failures), len(results), failures[:5])
    for i in range(6):
        assert served_by(srv.get("/_/pid", listener=i % 2, timeout=SERVE_BOUND)) in old
    seen |= family(srv)
    assert semaphores_of(before, seen) == sems, "a reload made another semaphore"
    assert lock_files_of(srv.pid) == locks, "a reload made another lock file"
    for semid in sems:
        assert semaphore_exists(semid)
    assert srv.stop() == 0
    for semid in sems:
        assert not semaphore_exists(semid)
    assert not lock_files_of(srv.pid)


@pytest.mark.parametrize("engine", ["sem", "fcntl"])
def test_worker_recycling_keeps_what_the_master_made(gunicorn_server, engine):
    before = sem_table()
    srv = gunicorn_server(name="recycle-" + engine, workers=2, args=["--max-requests", "5"],
                          env=env_for(engine))
    sems, locks = semaphores_of(before, family(srv)), lock_files_of(srv.pid)
    assert (len(sems), len(locks)) == MADE[engine]
    first = set(srv.worker_pids())
    served = {}
    for i in range(40):
        pid = served_by(srv.get("/_/pid", timeout=SERVE_BOUND))
        served[pid] = served.get(pid, 0) + 1
    assert len(served) >= 6, "workers should have been replaced: %s" % served
    assert set(served) - first
    srv.wait_for_log(r"Autorestarting worker after current request", count=6)
    for semid in sems:
        assert semaphore_exists(semid), "a worker's exit removed the semaphore"
        assert _accept.Semaphore(semid).value() in (0, 1)
    for path in locks:
        assert os.path.exists(path), "a worker's exit removed the lock file"
    assert lock_files_of(srv.pid) == locks
    # and the workers booted since use them
    assert served_by(srv.get("/_/pid", timeout=SERVE_BOUND))
    assert srv.stop() == 0
    for semid in sems:
        assert not semaphore_exists(semid)
    assert not lock_files_of(srv.pid)


# -- faults: SIGKILL the holder of the accept mutex -----------------------------------

def wchan(pid):
    try:
        with open("/proc/%d/wchan" % pid) as f:
            return f.read().strip() or "?"
    except OSError:
        return "?"


def _pick_victim(srv, engine, round_, timeout=5.0):
    """(pid, what it was doing): for sem and fcntl the worker that holds the
    mutex, i.e. the one asleep in epoll_wait on the listeners while the
    others sleep in semtimedop / fcntl; for epoll any idle worker."""
    workers = srv.worker_pids()
    if engine == "epoll":
        pid = workers[round_ % len(workers)]
        return pid, wchan(pid)
    deadline = time.monotonic() + timeout
    while True:
        states = {pid: wchan(pid) for pid in srv.worker_pids()}
        holders = [pid for pid, w in states.items() if "epoll" in w]
        if len(holders) == 1:
            return holders[0], states[holders[0]]
        if time.monotonic() > deadline:
            pid = sorted(states)[0]  # no clear holder seen: kill one anyway
            return pid, "holder not identified: %s" % states
        time.sleep(0.005)


@pytest.mark.parametrize("engine", ["sem", "fcntl", "epoll"])
def test_sigkill_of_the_mutex_holder_and_recovery(gunicorn_server, e2e_report, engine):
    before = sem_table()
    srv = gunicorn_server(name="kill-" + engine, workers=3, listeners=("tcp", "unix"),
                          env=env_for(engine))
    sems = semaphores_of(before, family(srv))
    for i in range(3):  # each worker has served once
        assert srv.get("/_/pid", listener=i % 2, timeout=SERVE_BOUND).status == 200
    times = []
    states = []
    for round_ in range(4):
        victim, state = _pick_victim(srv, engine, round_)
        os.kill(victim, signal.SIGKILL)
        t0 = time.monotonic()
        resp = srv.get("/_/pid", listener=round_ % 2, timeout=SERVE_BOUND)
        elapsed = time.monotonic() - t0
        assert served_by(resp) != victim
        times.append(elapsed)
        states.append(state)
        wait_gone([victim])
        wait_workers_ready(srv, 3, exclude=(victim,))
    for semid in sems:
        assert _accept.Semaphore(semid).value() in (0, 1), "SEM_UNDO gave back exactly one"
    line = ("engine=%s mode=%s: after SIGKILL of the %s, next request served in %s s "
            "(victims were in: %s)" % (
                engine, _ext.MODE, "mutex holder" if engine != "epoll" else "chosen idle worker",
                ", ".join("%.3f" % t for t in times), ", ".join(sorted(set(states)))))
    print(line)
    e2e_report(line)
    # every request after the faults is served
    for i in range(10):
        assert srv.get("/_/pid", listener=i % 2, timeout=SERVE_BOUND).status == 200


# -- the herd -------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ["queue", "sem", "epoll"])
def test_herd_four_workers_sequential_connections(gunicorn_server, e2e_report, engine):
    srv = gunicorn_server(name="herd-" + engine, workers=4, env=env_for(engine))
    assert set(engines_logged(srv).values()) == {EFFECTIVE[engine]}
    for _ in range(4):  # warm up
        assert srv.get("/_/hello", timeout=SERVE_BOUND).status == 200
    workers = srv.worker_pids()
    n = 40
    before = {pid: servers.context_switches(pid) for pid in workers}
    served, failures = {}, []
    for i in range(n):
        try:
            pid = served_by(srv.get("/_/pid", timeout=SERVE_BOUND))
            served[pid] = served.get(pid, 0) + 1
        except Exception as e:  # reported below
            failures.append(repr(e))
    after = {pid: servers.context_switches(pid) for pid in workers}
    assert srv.worker_pids() == workers, "a worker was replaced during the measurement"
    per_request = sum(after[p] - before[p] for p in workers) / n
    line = ("engine=%s mode=%s workers=4 requests=%d: %.2f context switches per request, "
            "requests per worker %s" % (engine, _ext.MODE, n, per_request,
                                         sorted(served.values(), reverse=True)))
    print(line)
    e2e_report(line)
    assert not failures, failures
    assert set(served) <= set(workers)
    if engine in ("queue", "sem"):
        assert len(served) > 1, "one worker took every request: %s" % served
