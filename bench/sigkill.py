"""kill-4w: SIGKILL of the worker that is next to accept, and how long the
others take to answer a new connection.

The victim, among 4 idle workers:
- ``sem``, ``fcntl``: the holder of the accept mutex. It is the one worker
  none of whose threads sleeps in the mutex wait (``semtimedop`` or the
  ``fcntl`` lock, read from /proc/PID/task/*/wchan), with a thread in
  epoll_wait on the listeners, while the 3 others wait for the mutex:
  the method of tests/test_accept.py, per thread because a gevent worker's
  hub sleeps in epoll_wait beside its accepting thread.
- ``epoll``: the worker that answered the last of the sequential requests
  made before the kill: EPOLLEXCLUSIVE wakes the first registered waiter, and
  that is the last one to have answered unless it has just re-registered.

After the kill, requests are sent one after the other, each on a new
connection, until one is answered; the figure is the time from the kill to
that answer. Then more requests check that nothing fails afterwards.
"""
import os
import signal
import time

from bench import loadgen, procfs, procs, stats, variants

ENGINES = {
    "turbo-sync": ("sem", "fcntl"),
    "turbo-gevent": ("sem", "fcntl"),
    "turbo-thread": ("epoll",),
}
# kernel functions a thread sleeps in while it waits for the accept mutex
MUTEX_WAITS = ("semtimedop", "sys_semop", "fcntl_setlk", "locks_lock", "posix_lock")
HOLDER_TIMEOUT = 5.0      # to see one clear holder
PROBE_TIMEOUT = 2.0       # one request after the kill
RECOVERY_BOUND = 10.0     # all requests after the kill
SETTLE_REQUESTS = 1000    # at most, to see every worker answer before the kill
SETTLE_PAUSE = 0.01       # between two of them
AFTER_REQUESTS = 20       # after recovery, each on a new connection
REPLACE_TIMEOUT = 30.0    # for the master to replace the victim


def in_mutex_wait(wchan):
    return any(w in wchan for w in MUTEX_WAITS)


def mutex_holder(states):
    """The pid whose threads are all out of the mutex wait, one of them asleep
    in epoll_wait on the listeners, while every other worker has a thread in
    the mutex wait; None when that is not (yet) the picture (a worker between
    two waits, say).

    ``states`` is {pid: [wchan of each thread]}.
    """
    free = [pid for pid, chans in states.items() if not any(in_mutex_wait(w) for w in chans)]
    if len(free) == 1 and len(states) > 1 and any("epoll" in w for w in states[free[0]]):
        return free[0]
    return None


def _states(workers):
    return {pid: sorted(procfs.task_wchans(pid).values()) for pid in workers}


def settle(rs, want, exclude=()):
    """Until ``want`` workers (none in ``exclude``) are up and each answered
    one of the sequential requests. Returns (workers, last answering pid,
    whether every worker answered)."""
    host = variants.host()
    deadline = time.monotonic() + REPLACE_TIMEOUT   # for the whole settling
    while True:
        workers = [p for p in procfs.children(rs.proc.pid)
                   if p not in exclude and not procfs.is_zombie(p)]
        if len(workers) >= want or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    # a replacement still booting answers nothing yet: pace the requests so
    # that it can come up within the bound
    seen, last = set(), None
    for _ in range(SETTLE_REQUESTS):
        res = loadgen.sequential(host, rs.port, 1, total_timeout=PROBE_TIMEOUT)
        if res["pids"]:
            last = res["pids"][0]
            seen.add(last)
        if set(workers) <= seen or time.monotonic() > deadline:
            break
        time.sleep(SETTLE_PAUSE)
    return workers, last, set(workers) <= seen


def pick_victim(engine, workers, last):
    """(pid, how it was chosen)."""
    if engine == "epoll":
        return last, "answered the last request"
    deadline = time.monotonic() + HOLDER_TIMEOUT
    while True:
        states = _states(workers)
        holder = mutex_holder(states)
        if holder is not None:
            return holder, "mutex holder (%s)" % ", ".join(states[holder])
        if time.monotonic() > deadline:
            return last, "no holder seen (%s): answered the last request" % states
        time.sleep(0.005)


def probe_after_kill(port, victim, t_kill):
    """Requests on new connections until one is answered by another worker."""
    host = variants.host()
    failed, attempts = [], 0
    while time.monotonic() - t_kill < RECOVERY_BOUND:
        attempts += 1
        try:
            status, headers, _ = procs.http_get(host, port, timeout=PROBE_TIMEOUT)
        except (OSError, ValueError) as exc:
            failed.append(type(exc).__name__)
            continue
        pid = headers.get("x-worker-pid", "")
        if status == 200 and pid.isdigit() and int(pid) != victim:
            return time.monotonic() - t_kill, attempts, failed
        failed.append("status %d from %s" % (status, pid))
    return None, attempts, failed


def summarize(records):
    for rec in records:
        runs = [r for r in rec.get("runs", []) if "error" not in r]
        s = {"rounds": len(runs), "errors": len(rec.get("runs", [])) - len(runs)}
        times = [r["recovery_s"] for r in runs]
        s["recovery_median_s"] = stats.median(times)
        s["recovery_max_s"] = None if None in times or not times else max(times)
        s["unrecovered"] = sum(1 for t in times if t is None)
        s["failed_during"] = sum(len(r["failed_during"]) for r in runs)
        s["failed_after"] = sum(r["failed_after"] for r in runs)
        s["holder_found"] = sum(1 for r in runs if r["victim_was"].startswith("mutex holder"))
        s["not_settled"] = sum(1 for r in runs if not r["all_answered_before"])
        rec["summary"] = s
    return records


def run(scenario, entries, args, tmp_root, result, log=print):
    """Every variant started together; round r kills one worker of each."""
    group = variants.expand(entries, ENGINES)
    killed = {}

    def one_round(variant, rs, rnd):
        gone = killed.setdefault(variant.label, [])
        workers, last, all_seen = settle(rs, scenario.workers, exclude=gone)
        victim, how = pick_victim(variant.engine, workers, last)
        if victim is None:
            raise RuntimeError("no worker answered before the kill")
        os.kill(victim, signal.SIGKILL)
        t_kill = time.monotonic()
        gone.append(victim)
        recovery, attempts, failed = probe_after_kill(rs.port, victim, t_kill)
        after = loadgen.sequential(variants.host(), rs.port, AFTER_REQUESTS,
                                   total_timeout=RECOVERY_BOUND)
        fig = {"victim": victim, "victim_was": how, "workers_before": workers,
               "all_answered_before": all_seen, "recovery_s": recovery,
               "attempts": attempts, "failed_during": failed,
               "failed_after": after["failed"] + (AFTER_REQUESTS - after["sent"]),
               "answered_by_victim_after": sum(1 for p in after["pids"] if p == victim)}
        fig["line"] = "recovered in %s, %d failed during, %d after; victim %s" % (
            "%.3f s" % recovery if recovery is not None else "NEVER", len(failed),
            fig["failed_after"], how)
        return fig

    variants.run_groups(scenario, [group], args, tmp_root, result, one_round,
                        rounds=scenario.rounds(args.rounds), log=log)
