"""The report of the reliability scenarios (fair-4w, kill-4w, leak-1m):
``reliability.json`` and ``reliability.md``, beside (never over) latest.*."""
import json
import os

from bench import fairness, leak, report, sigkill

JAIN_TARGET = 0.95
THROUGHPUT_TARGET = 0.95      # of the fastest engine of the same class
RECOVERY_TARGET_S = 1.0
GROWTH_TARGET_MB = 2.0

SUMMARIZERS = {"fair": fairness.summarize, "kill": sigkill.summarize, "leak": leak.summarize}


def summarize(results):
    for scen in results["scenarios"]:
        SUMMARIZERS[scen["load"]]([r for r in scen["variants"] if r["status"] == "ok"])
    return results


def _f(v, fmt="%.2f"):
    return "–" if v is None else fmt % v


def _mark(ok):
    return "" if ok is None else (" ✓" if ok else " ✗")


def _ok(recs):
    return [r for r in recs if r["status"] == "ok" and r.get("summary", {}).get("rounds")]


def fair_table(scen):
    lines = ["| server | engine | req/s | Jain index (min) | requests per worker | "
             "of the fastest engine | p99 ms | failed |", "|" + "---|" * 8]
    for r in _ok(scen["variants"]):
        s = r["summary"]
        vs = s.get("vs_fastest")
        jain_ok = None if s.get("jain") is None else s["jain"] >= JAIN_TARGET
        vs_ok = None if vs is None else vs >= THROUGHPUT_TARGET
        lines.append("| %s | %s | %s | %s (%s)%s | %s | %s%s | %s | %d |" % (
            r["name"], r["engine"], _f(s.get("rps"), "%.0f"), _f(s.get("jain"), "%.3f"),
            _f(s.get("jain_min"), "%.3f"), _mark(jain_ok),
            " ".join(str(c) for c in s.get("per_worker", [])),
            _f(None if vs is None else 100 * vs, "%.0f%%"), _mark(vs_ok),
            _f(s.get("p99_ms")), s.get("failed", 0)))
    return lines


def kill_table(scen):
    lines = ["| server | engine | rounds | recovery median s | max s | requests failed "
             "during / after | victim identified as holder | every worker answered before |",
             "|" + "---|" * 8]
    for r in _ok(scen["variants"]):
        s = r["summary"]
        worst = s.get("recovery_max_s")
        lines.append("| %s | %s | %d | %s | %s%s | %d / %d | %s | %d of %d |" % (
            r["name"], r["engine"], s["rounds"], _f(s.get("recovery_median_s"), "%.3f"),
            _f(worst, "%.3f"), _mark(None if worst is None else worst <= RECOVERY_TARGET_S),
            s["failed_during"], s["failed_after"],
            "%d of %d" % (s["holder_found"], s["rounds"]) if r["engine"] != "epoll"
            else "n/a (last to answer)", s["rounds"] - s["not_settled"], s["rounds"]))
    return lines


def leak_table(scen):
    lines = ["| server | requests | seconds | RSS after warm-up KiB (at requests) | "
             "RSS at end KiB | growth MB | statuses | failed |", "|" + "---|" * 8]
    for r in _ok(scen["variants"]):
        s = r["summary"]
        base, end, g = s.get("baseline"), s.get("end"), s.get("growth_mb")
        lines.append("| %s | %d%s | %.0f | %s | %s | %s%s | %s | %d |" % (
            r["name"], s["requests"], "" if s["requests"] >= s["target"] else
            " (time limit; target %d)" % s["target"], s["seconds"],
            "%s (%d)" % (base[1], base[0]) if base else "–", end[1] if end else "–",
            _f(g), _mark(None if g is None else g <= GROWTH_TARGET_MB),
            ", ".join("%s: %d" % kv for kv in s["statuses"].items()), s["failed"]))
    return lines


TABLES = {"fair": fair_table, "kill": kill_table, "leak": leak_table}

METHOD = {
    "fair": """\
Each worker class runs with 4 workers once per accept engine (`TURBOWORKERS_ACCEPT` in the
server's environment; `TURBOWORKERS_EPOLL_ROTATE` left at its default), all variants of a class
side by side, measured in interleaved rounds of wrk keep-alive load (SyncMutexWorker closes
every connection after one answer, as `-k sync` does, so wrk reconnects). wrk's Lua script
`bench/lua/tally.lua` counts the `X-Worker-Pid` header of every answer; Jain's index
(sum x)^2 / (n sum x^2) is over the 4 workers' counts (1.0 even, 0.25 one worker took all),
median over the rounds (min in brackets), target >= %.2f. "of the fastest engine": median of
the per-round ratios of req/s to the engine of the same class with the highest median, target
>= %d%%. The Lua callback costs wrk time on every answer: absolute req/s are below the
figures of latest.md.""" % (JAIN_TARGET, 100 * THROUGHPUT_TARGET),
    "kill": """\
4 idle workers per variant. Before each kill, sequential requests (a new connection each) until
every worker answered once. The victim: for `sem` and `fcntl` the holder of the accept mutex,
the one worker with no thread sleeping in the mutex wait (`/proc/PID/task/*/wchan`) while the 3
others have one; for `epoll` the worker that answered the last request (EPOLLEXCLUSIVE wakes the
first registered waiter). SIGKILL, then requests on new connections, one after the other, until
one is answered by another worker: recovery is the time from the kill to that answer (target
<= %.0f s). "failed during" counts requests that failed in that time (none was in flight at the
kill), "after" counts failures among %d further requests. The master replaces the victim before
the next round.""" % (RECOVERY_TARGET_S, sigkill.AFTER_REQUESTS),
    "leak": """\
1 worker per class, default accept engine, `bench/apps/mixed.py` under wrk
(`bench/lua/mixed.lua`, %d connections) in runs of %d s: GET, POST with 100 B and 16 KiB
Content-Length bodies, chunked POST, a 404, in turn; for the kept-alive classes every other
run sends pipelined pairs instead. SyncMutexWorker gets single requests on a new connection
each (it does not keep connections alive, as `-k sync`). The worker's VmRSS is read after each
run; growth is the end value minus the first value read after %d requests (target <= %.0f MB).
"failed": socket errors plus answers other than 200 and the expected 404.""" % (
        leak.CONNECTIONS, leak.STEP_SECONDS, leak.WARM_REQUESTS, GROWTH_TARGET_MB),
}


def markdown(results):
    meta = results["meta"]
    out = ["# turboworkers reliability benchmark", ""]
    out += report._meta_lines(meta)
    out += ["- leak-1m: up to %s requests or %s s per server" % (
        meta.get("leak_requests"), meta.get("leak_seconds")), ""]
    out += ["Client and servers share the same %s cores on loopback; read ratios and counts, "
            "not absolute speeds." % meta["nproc"], ""]
    for scen in results["scenarios"]:
        out += ["## %s: %s" % (scen["name"], scen["title"]), "", METHOD[scen["load"]], ""]
        if scen.get("rounds") and scen["load"] != "leak":
            out += ["%d rounds." % scen["rounds"], ""]
        out += TABLES[scen["load"]](scen)
        skipped = [r for r in scen["variants"] if r["status"] != "ok"]
        if skipped:
            out += [""] + ["- not run: **%s**: %s" % (r["label"], r.get("reason"))
                           for r in skipped]
        out.append("")
    return "\n".join(out)


def write_all(results, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    summarize(results)
    paths = []
    path = os.path.join(out_dir, "reliability.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    paths.append(path)
    path = os.path.join(out_dir, "reliability.md")
    with open(path, "w") as f:
        f.write(markdown(results))
    paths.append(path)
    return paths
