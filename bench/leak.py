"""leak-1m: does a worker's memory grow over a million kept-alive requests?

One worker per turbo class serves bench/apps/mixed.py under wrk with
bench/lua/mixed.lua: GETs, POSTs with a Content-Length body (100 B and
16 KiB), chunked POSTs and 404s, one per write, alternating with runs of
pipelined pairs. SyncMutexWorker answers one request per connection (as
``-k sync``): wrk reconnects after each answer, and it gets no pipelined
pairs (it closes the connection after the first answer, so the second is
never answered, by design).

The load runs as wrk runs of a few seconds; the worker's RSS is read after
each. The growth is the RSS at the end minus the RSS of the first sample
taken after the warm-up (``WARM_REQUESTS``). Bounded by a request count and
a time limit; the report says how many requests were made.
"""
import math
import os
import time

from bench import loadgen, procfs, variants

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lua", "mixed.lua")
WARM_REQUESTS = 100_000
STEP_SECONDS = 3          # one wrk run; the RSS is read after each
CONNECTIONS = 8
EXPECTED_STATUSES = (200, 404)


def modes_for(server):
    return ("single",) if server.style == "sync" else ("single", "pair")


def step_seconds(done, target, rate, remaining, step=STEP_SECONDS):
    """Whole seconds for the next wrk run: ``step``, cut short when the
    requests still wanted at the last ``rate`` take less, never past the time
    ``remaining``; 0 when nothing is left to do."""
    if done >= target or remaining < 1:
        return 0
    want = step
    if rate:
        want = min(step, max(1, math.ceil((target - done) / rate)))
    return int(min(want, math.floor(remaining)))


def growth(samples, warm=WARM_REQUESTS):
    """RSS growth from ``samples`` [(requests so far, RSS KiB)] in time order.

    The baseline is the first sample at or after ``warm`` requests (not the
    last one: then nothing would be measured). Returns a dict with the
    baseline and final samples and growth_mb; growth_mb is None when no
    sample follows the baseline.
    """
    base = next((s for s in samples if s[0] >= warm and s[1] is not None), None)
    end = samples[-1] if samples else None
    if base is None or end is None or end is base or end[1] is None:
        return {"baseline": base, "end": end, "growth_mb": None}
    return {"baseline": base, "end": end, "growth_mb": (end[1] - base[1]) / 1024.0}


def run(scenario, entries, args, tmp_root, result, log=print):
    """One variant at a time (each alone on the machine), default engine."""
    target, limit = args.leak_requests, args.leak_seconds

    def one_round(variant, rs, rnd):
        worker = rs.workers[0]
        samples, statuses = [], {}
        done, socket_errors, runs = 0, 0, 0
        t0 = time.monotonic()
        rate = None
        modes = modes_for(variant.server)
        while True:
            ran = False
            for mode in modes:
                secs = step_seconds(done, target, rate, limit - (time.monotonic() - t0))
                if secs == 0:
                    break
                wrk, out = loadgen.run_wrk(rs.url, CONNECTIONS, secs, script=SCRIPT,
                                           script_args=(mode,))
                ran = True
                runs += 1
                done += wrk["requests"] or 0
                rate = wrk["rps"] or rate
                socket_errors += sum(wrk["socket_errors"].values())
                for code, n in loadgen.parse_statuses(out).items():
                    statuses[code] = statuses.get(code, 0) + n
                samples.append((done, procfs.rss_kib(worker)))
            if not ran:
                break
        if not samples or samples[-1][0] != done:
            samples.append((done, procfs.rss_kib(worker)))
        rs.refresh_workers()
        g = growth(samples)
        unexpected = sum(n for code, n in statuses.items() if code not in EXPECTED_STATUSES)
        fig = {"requests": done, "target": target, "seconds": round(time.monotonic() - t0, 1),
               "time_limit_s": limit, "wrk_runs": runs, "modes": list(modes),
               "statuses": {str(k): v for k, v in sorted(statuses.items())},
               "failed": unexpected + socket_errors, "socket_errors": socket_errors,
               "worker": worker, "worker_replaced": rs.workers != [worker],
               "rss_samples_kib": samples, **g}
        fig["line"] = "%d requests in %.0f s, RSS %s -> %s KiB: growth %s MB, failed %d" % (
            done, fig["seconds"], g["baseline"] and g["baseline"][1], g["end"] and g["end"][1],
            "%.2f" % g["growth_mb"] if g["growth_mb"] is not None else "?", fig["failed"])
        return fig

    groups = [[v] for v in variants.expand(entries, {})]
    variants.run_groups(scenario, groups, args, tmp_root, result, one_round, rounds=1, log=log)


def summarize(records):
    for rec in records:
        runs = [r for r in rec.get("runs", []) if "error" not in r]
        rec["summary"] = dict(runs[-1], rounds=len(runs)) if runs else {"rounds": 0}
        rec["summary"].pop("line", None)
    return records
