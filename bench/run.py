"""Run the benchmark: ``python -m bench [--preset quick] [--scenario NAME] [--server NAME] ...``

For each scenario, every server it names is started side by side on its own
loopback port, warmed up, then measured in interleaved rounds
(A B C, A B C, ...): round i of every server ran close in time, under the same
conditions. Servers not being measured sit idle. The median over the rounds
is reported, and ratios are taken round by round (see bench.stats).

In a one-worker wrk scenario the server (every process of it) runs on one CPU
and wrk on the others (``cpu_split``): the load generator is a machine of its
own in any real deployment, and on two cores a server fast enough to keep wrk
busy would otherwise share its core with wrk's threads, its latency then
measuring the scheduler's time slices. wrk then runs one thread per CPU it
has, for the same reason. ``--no-pin`` turns this off.
"""
import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
import time

from bench import fairness, leak, loadgen, procfs, procs, reliability_report, report, sigkill
from bench.scenarios import PRESETS, RELIABILITY_LOADS, SCENARIOS
from bench.servers import ROOT, SERVERS, availability, find_tool, launch

HOST = "127.0.0.1"
READY_TIMEOUT = 60.0

# how each reliability load is run, and which engines it gives each server
RELIABILITY_RUN = {"fair": fairness.run, "kill": sigkill.run, "leak": leak.run}
RELIABILITY_ENGINES = {"fair": fairness.ENGINES, "kill": sigkill.ENGINES, "leak": {}}
# the load generator each load needs on PATH (None: the harness's own client)
LOAD_TOOL = {"sequential": None, "fair": "wrk", "kill": None, "leak": "wrk"}


def log(msg):
    print(msg, flush=True)


# ------------------------------------------------------------------ environment

def run_probe(python):
    rc, out, err = procs.run_bounded([python, "-m", "bench.probe"], timeout=120, cwd=ROOT,
                                     env=dict(os.environ, PYTHONPATH=ROOT))
    if rc != 0:
        raise RuntimeError("bench.probe failed (%s): %s" % (rc, err.strip()[-500:]))
    return json.loads(out)


def tool_version(argv):
    if find_tool(argv[0]) is None:
        return None
    try:
        rc, out, err = procs.run_bounded(argv, timeout=10)
    except OSError:
        return None
    text = (out + err).strip().splitlines()
    return text[0].strip() if text else None


def git_state():
    """The commit measured, and whether the package's sources had uncommitted changes."""
    try:
        rc, out, _ = procs.run_bounded(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], 10)
        if rc != 0:
            return None
        commit = out.strip()
        rc, out, _ = procs.run_bounded(["git", "-C", ROOT, "status", "--porcelain", "--",
                                        "turboworkers", "cext", "setup.py"], 10)
        dirty = rc == 0 and bool(out.strip())
        return commit + (" + uncommitted changes in turboworkers/ or cext/" if dirty else "")
    except OSError:
        return None


def _loadavg():
    """The 1-minute load average: other work on the machine skews every figure."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _short(text, pattern):
    """The version number in a tool's banner (the banner itself if none is found)."""
    if not text:
        return None
    m = re.search(pattern, text)
    return m.group(1) if m else text


def machine_meta(probe, args, argv):
    mods = probe.get("modules", {})
    tw = probe.get("turboworkers", {})
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "nproc": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "loadavg_start": _loadavg(),
        "python": probe.get("python"),
        "gunicorn": mods.get("gunicorn", {}).get("version"),
        "turboworkers": tw.get("version"),
        "turboworkers_mode": tw.get("mode"),
        "git": git_state(),
        "turboworkers_import_error": tw.get("import_error"),
        "peers": {m: (info.get("version") if info.get("ok") else None)
                  for m, info in mods.items()
                  if m in ("gunicorn_h1c", "gevent", "greenlet", "meinheld", "granian",
                           "bjoern", "flask")},
        "tools": {
            "nginx": _short(tool_version([find_tool("nginx") or "nginx", "-v"]), r"nginx/(\S+)"),
            "wrk": _short(tool_version(["wrk", "-v"]), r"^wrk (\S+)"),
            "ab": _short(tool_version(["ab", "-V"]), r"Version (\S+)"),
        },
        "command": " ".join(["python", "-m", "bench"] + argv),
        "preset": args.preset,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "ab_requests": args.ab_requests,
        "herd_requests": args.herd_requests,
        "pin_one_worker": not args.no_pin,
        "leak_requests": args.leak_requests,
        "leak_seconds": args.leak_seconds,
    }


# ------------------------------------------------------------------ planning

def plan(args, probe):
    """[(scenario, [(server, skip reason or None)])] for what was asked."""
    preset = PRESETS[args.preset]
    names = args.scenario or preset["scenarios"]
    out = []
    for name in names:
        scenario = SCENARIOS[name]
        if args.threads is not None:
            # one --threads for every thread-style server of every scenario
            scenario = dataclasses.replace(scenario, thread_threads=args.threads)
        listed = preset["servers_override"].get(name, scenario.servers)
        if args.server:
            listed = [s for s in scenario.servers if s in args.server]
        entries = []
        for sname in listed:
            server = SERVERS[sname]
            if scenario.app not in server.apps:
                continue
            entries.append((server, availability(server, probe)))
        out.append((scenario, entries))
    return out


def variant_count(scenario, entries):
    """Servers that run, times the engines each runs with (reliability loads)."""
    engines = RELIABILITY_ENGINES.get(scenario.load, {})
    return sum(len(engines.get(s.name, (None,))) for s, reason in entries if reason is None)


def estimate_seconds(the_plan, args):
    """A slightly pessimistic guess, from the timings of earlier runs on 2 cores."""
    total = 0.0
    for scenario, entries in the_plan:
        n = sum(1 for _, reason in entries if reason is None)
        if not n:
            continue
        rounds = scenario.rounds(args.rounds)
        if scenario.load in RELIABILITY_LOADS:
            v = variant_count(scenario, entries)
            if scenario.load == "fair":
                total += n * 4.0 + v * (args.warmup + 0.5 + rounds * (args.duration + 0.3))
            elif scenario.load == "kill":
                total += 4.0 + v * rounds * 2.5
            else:
                total += n * (4.0 + args.leak_seconds)
            continue
        total += 3.0 + 0.1 * n * scenario.workers                  # start-up, shut-down
        if scenario.load == "wrk":
            total += n * (args.warmup + 0.3 if args.warmup >= 1 else 0.2)
            total += rounds * n * (args.duration + 0.15)
        elif scenario.load == "ab":
            total += n * 0.4
            total += rounds * n * (min(args.duration, args.ab_requests / 5000.0) + 0.2)
        else:
            total += n * 0.2
            total += rounds * n * (0.2 + args.herd_requests * 0.0006)
    return total


def fmt_secs(s):
    s = int(round(s))
    return "%dm%02ds" % (s // 60, s % 60)


# ------------------------------------------------------------------ one server

class Running:
    """One started server: its process, port and worker pids."""

    def __init__(self, server, scenario, args, tmpdir, cpus=None, load_cpus=None):
        self.server = server
        self.cpus = cpus
        self.load_cpus = load_cpus
        self.scenario = scenario
        self.tmpdir = tmpdir
        self.port = procs.free_port(HOST)
        self.proc = None
        self.workers = []
        self.error = None
        self.log_path = os.path.join(tmpdir, "server.log")
        self.options = {
            "workers": scenario.workers,
            "threads": scenario.thread_threads if server.style == "thread" else None,
            "worker_connections": scenario.gevent_connections if server.style == "gevent" else None,
            "load_connections": scenario.load_connections(server),
        }
        self.launch = launch(server, app=scenario.app, host=HOST, port=self.port,
                             workers=scenario.workers, threads=scenario.thread_threads,
                             worker_connections=scenario.gevent_connections,
                             tmpdir=tmpdir, python=args.python)
        self.options["argv"] = self.launch.argv

    def start(self):
        for path, text in self.launch.config_files.items():
            with open(path, "w") as f:
                f.write(text)
        self.proc = procs.spawn(self.launch.argv, log_path=self.log_path,
                                env=self.launch.env, cwd=self.launch.cwd, cpus=self.cpus)

    def log_tail(self, lines=4):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                text = [ln.rstrip() for ln in f if ln.strip()]
        except OSError:
            return ""
        return " | ".join(text[-lines:])[-600:]

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, deadline):
        """Wait until the port answers 200 and every worker process exists."""
        want = self.scenario.workers
        last = "port not open"
        while time.monotonic() < deadline:
            if not self.alive():
                self.error = "exited with %s before it was ready: %s" % (
                    self.proc.returncode, self.log_tail())
                return False
            if procs.port_open(HOST, self.port):
                try:
                    status, headers, _ = procs.http_get(HOST, self.port, timeout=2.0)
                except (OSError, ValueError) as exc:
                    last = "no answer: %s" % exc
                else:
                    if status != 200:
                        last = "answered %d" % status
                    else:
                        kids = procfs.children(self.proc.pid)
                        if len(kids) >= want:
                            self.workers = kids
                            return True
                        last = "%d of %d workers up" % (len(kids), want)
            time.sleep(0.1)
        self.error = "not ready within %.0fs (%s): %s" % (READY_TIMEOUT, last, self.log_tail())
        return False

    def refresh_workers(self):
        kids = procfs.children(self.proc.pid) if self.alive() else []
        changed = set(kids) != set(self.workers)
        self.workers = kids
        return changed

    def rss_kib(self):
        return [procfs.rss_kib(pid) for pid in self.workers]

    def stop(self):
        if self.proc is not None:
            procs.stop(self.proc)

    @property
    def url(self):
        return "http://%s:%d/" % (HOST, self.port)


# ------------------------------------------------------------------ measuring

def measure(rs, args, warmup=False):
    scenario = rs.scenario
    if warmup and (scenario.load == "sequential" or args.warmup < 1):
        # wrk and ab count whole seconds: a shorter warm-up is a burst of
        # single requests, enough to load the code paths of every worker.
        loadgen.sequential(HOST, rs.port, max(50, 4 * scenario.workers), total_timeout=20)
        return None
    if scenario.load == "wrk":
        duration = args.warmup if warmup else args.duration
        # pinned: one wrk thread per CPU it has, so that its threads do not
        # take turns on one core either
        threads = len(rs.load_cpus) if rs.load_cpus else 2
        figures, _ = loadgen.run_wrk(rs.url, rs.options["load_connections"], duration,
                                     threads=threads, cpus=rs.load_cpus)
        return figures
    if scenario.load == "ab":
        requests = max(100, args.ab_requests // 20) if warmup else args.ab_requests
        limit = args.warmup if warmup else args.duration
        figures, _ = loadgen.run_ab(rs.url, scenario.connections, requests, limit,
                                    csv_path=os.path.join(rs.tmpdir, "ab-percentiles.csv"))
        return figures
    # sequential: herd and spread
    workers = list(rs.workers)
    before = procfs.total_context_switches(workers)
    res = loadgen.sequential(HOST, rs.port, args.herd_requests,
                             total_timeout=max(30.0, args.herd_requests * 0.2))
    after = procfs.total_context_switches(workers)
    answered = len(res["pids"])
    counts = {pid: 0 for pid in workers}
    others = 0
    for pid in res["pids"]:
        if pid in counts:
            counts[pid] += 1
        else:
            others += 1
    from bench.stats import jain
    per_worker = [counts[pid] for pid in workers]
    lat = res["latencies_ms"]
    return {
        "rps": answered / res["elapsed"] if res["elapsed"] > 0 else None,
        "requests": answered,
        "sent": res["sent"],
        "failed": res["failed"],
        "p50_ms": loadgen.percentile(lat, 50),
        "p99_ms": loadgen.percentile(lat, 99),
        "context_switches": after - before,
        "cs_per_request": (after - before) / answered if answered else None,
        "per_worker": per_worker,
        "unknown_pid_requests": others,
        "jain": jain(per_worker, n=max(scenario.workers, len(per_worker))),
    }


def _nan(v):
    return float("nan") if v is None else v


def progress(i, total, t0, scenario, rnd, rounds, name, fig, rss):
    elapsed = fmt_secs(time.monotonic() - t0)
    head = "[%3d/%d %s] %-9s round %d/%d %-13s" % (i, total, elapsed, scenario.name, rnd,
                                                   rounds, name)
    if fig is None:
        return head + " (no figures)"
    mb = [r / 1024.0 for r in rss if r]
    rss_s = " rss %.1f MB/worker" % (sum(mb) / len(mb)) if mb else ""
    if scenario.load == "sequential":
        return head + " cs/req %6.2f  jain %.3f  p50 %.2f ms  failed %d%s  [%s]" % (
            _nan(fig["cs_per_request"]), _nan(fig["jain"]), _nan(fig["p50_ms"]),
            fig["failed"], rss_s, " ".join(str(c) for c in sorted(fig["per_worker"], reverse=True)))
    return head + " %9.0f req/s  p50 %7.2f ms  p99 %7.2f ms  failed %d%s" % (
        _nan(fig["rps"]), _nan(fig["p50_ms"]), _nan(fig["p99_ms"]),
        fig["failed"], rss_s)


def cpu_split(scenario, args, available=None):
    """(server CPUs, wrk CPUs) for ``scenario``, or (None, None) when
    neither is pinned: only one-worker wrk scenarios, with two CPUs or more."""
    if args.no_pin or scenario.workers != 1 or scenario.load != "wrk":
        return None, None
    cpus = sorted(os.sched_getaffinity(0) if available is None else available)
    if len(cpus) < 2:
        return None, None
    return [cpus[0]], cpus[1:]


def run_scenario(scenario, entries, args, counter, t0, sink, tmp_root):
    """Run one scenario; its result is appended to ``sink`` first, so that an
    interrupted run still reports what it measured."""
    rounds = scenario.rounds(args.rounds)
    server_cpus, load_cpus = cpu_split(scenario, args)
    result = {"name": scenario.name, "title": scenario.title, "load": scenario.load,
              "app": scenario.app, "workers": scenario.workers, "rounds": rounds,
              "server_cpus": server_cpus, "load_cpus": load_cpus, "servers": []}
    sink.append(result)
    records = {}
    for server, reason in entries:
        rec = {"name": server.name, "title": server.title, "family": server.family,
               "style": server.style, "stock": list(server.stock), "status": "skipped",
               "reason": reason, "runs": []}
        records[server.name] = rec
        result["servers"].append(rec)
    running = []
    scen_tmp = os.path.join(tmp_root, scenario.name)
    os.makedirs(scen_tmp, exist_ok=True)
    try:
        for server, reason in entries:
            if reason is not None:
                log("  skip %-13s %s" % (server.name, reason))
                continue
            tmpdir = os.path.join(scen_tmp, server.name)
            os.makedirs(tmpdir, exist_ok=True)
            os.chmod(tmpdir, 0o755)
            rs = Running(server, scenario, args, tmpdir, server_cpus, load_cpus)
            records[server.name]["options"] = rs.options
            rs.start()
            running.append(rs)
        deadline = time.monotonic() + READY_TIMEOUT
        ready = []
        for rs in running:
            rec = records[rs.server.name]
            if rs.wait_ready(deadline):
                rec["status"] = "ok"
                rec["reason"] = None
                ready.append(rs)
            else:
                rec["status"] = "failed"
                rec["reason"] = "did not start: " + rs.error
                log("  FAIL %-13s %s" % (rs.server.name, rec["reason"]))
                rs.stop()
        for rs in ready:
            try:
                measure(rs, args, warmup=True)
            except (RuntimeError, OSError, ValueError) as exc:
                log("  warm-up of %s: %s" % (rs.server.name, exc))
            rs.refresh_workers()
        for rnd in range(1, rounds + 1):
            for rs in ready:
                rec = records[rs.server.name]
                if rec["status"] != "ok":
                    continue
                counter[0] += 1
                if not rs.alive():
                    rec["status"] = "failed"
                    rec["reason"] = "exited during the run (code %s): %s" % (
                        rs.proc.returncode, rs.log_tail())
                    log("  FAIL %-13s %s" % (rs.server.name, rec["reason"]))
                    continue
                try:
                    fig = measure(rs, args)
                except (RuntimeError, OSError, ValueError) as exc:
                    fig = {"error": str(exc)}
                    log("  run error %s: %s" % (rs.server.name, exc))
                changed = rs.refresh_workers()
                rss = rs.rss_kib()
                if fig is not None:
                    fig["round"] = rnd
                    fig["rss_kib"] = rss
                    fig["workers_changed"] = changed
                    fig["worker_pids"] = list(rs.workers)
                    rec["runs"].append(fig)
                log(progress(counter[0], counter[1], t0, scenario, rnd, rounds,
                             rs.server.name, None if "error" in fig else fig, rss))
    finally:
        stop_together(running)
    return result


def stop_together(running):
    """SIGTERM every server's group first, so they shut down in parallel, then reap each."""
    for rs in running:
        if rs.proc is not None:
            procs.signal_group(rs.proc.pid, signal.SIGTERM)
    for rs in running:
        rs.stop()


# ------------------------------------------------------------------ main

def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="full",
                    help="full: every scenario (make bench); quick: hello-1w and the herd "
                         "with fewer peers, 3 s runs (make bench-quick); reliability: "
                         "fair-4w, kill-4w and leak-1m, written to reliability.json/.md "
                         "(make bench-reliability)")
    ap.add_argument("--scenario", action="append", default=[],
                    help="scenario name (repeatable, or comma separated): " + ", ".join(SCENARIOS))
    ap.add_argument("--server", action="append", default=[],
                    help="server name (repeatable, or comma separated): " + ", ".join(SERVERS))
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (>= 1)")
    ap.add_argument("--duration", type=float, default=None, help="seconds per wrk run")
    ap.add_argument("--warmup", type=float, default=None, help="seconds of wrk warm-up per server")
    ap.add_argument("--ab-requests", type=int, default=10000,
                    help="ab -n for the connection-per-request scenario (also bounded by "
                         "--duration seconds)")
    ap.add_argument("--herd-requests", type=int, default=500)
    ap.add_argument("--threads", type=int, default=None,
                    help="gunicorn --threads of the thread-style servers (turbo-thread, gthread-*) "
                         "in every scenario, instead of each scenario's own")
    ap.add_argument("--leak-requests", type=int, default=1_000_000,
                    help="requests per server in leak-1m (also bounded by --leak-seconds)")
    ap.add_argument("--leak-seconds", type=float, default=180.0,
                    help="time limit per server in leak-1m")
    ap.add_argument("--no-pin", action="store_true",
                    help="let one-worker servers and wrk run on any CPU (by default the "
                         "server gets the first CPU and wrk the others)")
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter that runs the Python servers (default: this one)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--keep-tmp", action="store_true",
                    help="keep the run's directory of server configurations and logs")
    ap.add_argument("--list", action="store_true", help="list scenarios and servers, then exit")
    ap.add_argument("--dry-run", action="store_true",
                    help="print the plan (who runs where, who is skipped and why) and the "
                         "time estimate, then exit")
    args = ap.parse_args(argv)
    args.scenario = [n for item in args.scenario for n in item.split(",") if n]
    args.server = [n for item in args.server for n in item.split(",") if n]
    for n in args.scenario:
        if n not in SCENARIOS:
            ap.error("unknown scenario %r (known: %s)" % (n, ", ".join(SCENARIOS)))
    for n in args.server:
        if n not in SERVERS:
            ap.error("unknown server %r (known: %s)" % (n, ", ".join(SERVERS)))
    preset = PRESETS[args.preset]
    for key in ("rounds", "duration", "warmup"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    # wrk and ab take whole seconds
    args.duration = float(max(1, math.ceil(args.duration)))
    if args.warmup >= 1:
        args.warmup = float(math.ceil(args.warmup))
    if args.threads is not None and args.threads < 1:
        ap.error("--threads must be at least 1")
    if (args.rounds < 1 or args.duration <= 0 or args.herd_requests < 1 or args.ab_requests < 1
            or args.leak_requests < 1 or args.leak_seconds < 1):
        ap.error("--rounds, --duration, --herd-requests, --ab-requests, --leak-requests and "
                 "--leak-seconds must be positive (--leak-seconds at least 1)")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.list:
        for s in SCENARIOS.values():
            print("%-9s %s\n          servers: %s" % (s.name, s.title, ", ".join(s.servers)))
        for s in SERVERS.values():
            print("%-13s %-7s %s" % (s.name, s.family, s.title))
        return 0
    procs.install_handlers()
    t0 = time.monotonic()
    missing = [t for t in ("wrk", "ab") if shutil.which(t) is None]
    if missing:
        log("missing load generator(s): %s (make bench installs them)" % ", ".join(missing))
    probe = run_probe(args.python)
    the_plan = plan(args, probe)
    n_runs = sum(scenario.rounds(args.rounds) * (variant_count(scenario, entries)
                                                 if scenario.load in RELIABILITY_LOADS else
                                                 sum(1 for _, r in entries if r is None))
                 for scenario, entries in the_plan)
    log("turboworkers bench: preset %s, %d round(s), %gs per wrk run, %d run(s) in %d "
        "scenario(s); estimated %s" % (args.preset, args.rounds, args.duration, n_runs,
                                       len(the_plan), fmt_secs(estimate_seconds(the_plan, args))))
    if args.dry_run:
        for scenario, entries in the_plan:
            engines = RELIABILITY_ENGINES.get(scenario.load, {})
            log("%-9s run: %s" % (scenario.name, ", ".join(
                s.name + ("[%s]" % ",".join(engines[s.name]) if s.name in engines else "")
                for s, r in entries if r is None)))
            for s, r in entries:
                if r is not None:
                    log("          skip %s: %s" % (s.name, r))
        return 0
    tw = probe.get("turboworkers", {})
    log("turboworkers %s, mode %s%s" % (tw.get("version"), tw.get("mode"),
                                         " (%s)" % tw["import_error"] if tw.get("import_error")
                                         else ""))
    # Server configurations, logs and ab's CSV files live outside the work
    # tree, in a directory of this run, removed at the end unless asked to
    # keep it or a server failed (its log is the explanation).
    tmp_root = tempfile.mkdtemp(prefix="turboworkers-bench-")
    results = {"meta": machine_meta(probe, args, argv), "scenarios": []}
    # the reliability scenarios have their own report: they never replace latest.*
    reliability = {"meta": results["meta"], "scenarios": []}
    counter = [0, n_runs]
    status = 0
    try:
        for scenario, entries in the_plan:
            tool = LOAD_TOOL.get(scenario.load, scenario.load)
            if tool and shutil.which(tool) is None:
                entries = [(s, r or "%s is not installed" % tool) for s, r in entries]
            log("== %s: %s" % (scenario.name, scenario.title))
            if scenario.load in RELIABILITY_LOADS:
                sink = {"name": scenario.name, "title": scenario.title, "load": scenario.load,
                        "app": scenario.app, "workers": scenario.workers,
                        "rounds": scenario.rounds(args.rounds), "variants": []}
                reliability["scenarios"].append(sink)
                RELIABILITY_RUN[scenario.load](scenario, entries, args, tmp_root, sink, log=log)
                continue
            run_scenario(scenario, entries, args, counter, t0, results["scenarios"], tmp_root)
    except KeyboardInterrupt:
        log("interrupted: stopping every server, writing what was measured")
        status = 130
    finally:
        procs.stop_all()
        results["meta"]["elapsed_s"] = round(time.monotonic() - t0, 1)
        results["meta"]["loadavg_end"] = _loadavg()
        paths = []
        if results["scenarios"]:
            paths += report.write_all(results, args.out, plots=not args.no_plots)
        if reliability["scenarios"]:
            paths += reliability_report.write_all(reliability, args.out)
        for p in paths:
            log("wrote %s" % os.path.relpath(p, os.getcwd()))
    failed = [r["name"] for sc in results["scenarios"] for r in sc["servers"]
              if r["status"] == "failed"]
    failed += [r["label"] for sc in reliability["scenarios"] for r in sc["variants"]
               if r["status"] == "failed"]
    if args.keep_tmp or failed:
        log("server logs kept in %s" % tmp_root)
    else:
        shutil.rmtree(tmp_root, ignore_errors=True)
    log("done in %s" % fmt_secs(time.monotonic() - t0))
    leftovers = procs.running_pids()
    if leftovers:
        log("warning: still running: %s" % leftovers)
    return status


if __name__ == "__main__":
    sys.exit(main())
