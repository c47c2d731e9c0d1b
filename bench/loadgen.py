"""Load generators: wrk (keep-alive), ab (a connection per request), and a
sequential raw-socket client (the herd scenario); and the parsers of their output.

Every figure is returned in the same units: requests per second, latencies in
milliseconds, counts of failed requests.
"""
import math
import os
import re
import socket
import time

from bench import procs

# --------------------------------------------------------------------------- wrk

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}
_WRK_PCT = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+([\d.]+)(us|ms|s|m|h)\s*$")
_WRK_RPS = re.compile(r"^Requests/sec:\s*([\d.]+)", re.M)
_WRK_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.M)
_WRK_SOCKERR = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_WRK_LAT_AVG = re.compile(r"^\s*Latency\s+([\d.]+)(us|ms|s|m|h)\s", re.M)


def duration_ms(number, unit):
    """A wrk duration ("263.35", "us") in milliseconds."""
    return float(number) * _UNIT_MS[unit]


def parse_wrk(text):
    """Parse the output of ``wrk --latency``.

    Returns a dict with rps, requests, seconds, latency_ms (percentile ->
    ms), p50_ms, p99_ms, avg_ms, socket errors by kind, non2xx and failed
    (non-2xx + every socket error). Raises ValueError if the output has no
    Requests/sec line (wrk did not run).
    """
    m = _WRK_RPS.search(text)
    if not m:
        raise ValueError("no 'Requests/sec' in wrk output: %r" % text[-300:])
    out = {"rps": float(m.group(1))}
    m = _WRK_TOTAL.search(text)
    out["requests"] = int(m.group(1)) if m else None
    out["seconds"] = duration_ms(m.group(2), m.group(3)) / 1000.0 if m else None
    m = _WRK_LAT_AVG.search(text)
    out["avg_ms"] = duration_ms(m.group(1), m.group(2)) if m else None
    latency = {}
    in_dist = False
    for line in text.splitlines():
        if "Latency Distribution" in line:
            in_dist = True
            continue
        if in_dist:
            pm = _WRK_PCT.match(line)
            if pm:
                latency[float(pm.group(1))] = duration_ms(pm.group(2), pm.group(3))
            else:
                in_dist = False
    out["latency_ms"] = latency
    out["p50_ms"] = latency.get(50.0)
    out["p99_ms"] = latency.get(99.0)
    m = _WRK_SOCKERR.search(text)
    errors = dict(zip(("connect", "read", "write", "timeout"),
                      (int(g) for g in m.groups()))) if m else \
        {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    out["socket_errors"] = errors
    m = _WRK_NON2XX.search(text)
    out["non2xx"] = int(m.group(1)) if m else 0
    out["failed"] = out["non2xx"] + sum(errors.values())
    return out


def wrk_argv(url, connections, duration, threads=2, timeout=2.0, script=None, script_args=()):
    argv = ["wrk", "--latency", "-t%d" % threads, "-c%d" % connections,
            "-d%ss" % _num(duration), "--timeout", "%ss" % _num(timeout)]
    if script:
        argv += ["-s", script]
    argv.append(url)
    if script_args:
        argv += ["--"] + [str(a) for a in script_args]
    return argv


def run_wrk(url, connections, duration, threads=2, timeout=2.0, script=None, script_args=(),
            cpus=None):
    """Run wrk, bounded in time; returns (parsed figures, raw output).

    ``script`` is a Lua file of bench/lua/ (``wrk -s``), ``script_args`` what
    its ``init(args)`` receives; ``cpus`` the CPUs wrk may run on (all if None).
    """
    threads = max(1, min(threads, connections))
    argv = wrk_argv(url, connections, duration, threads, timeout, script, script_args)
    rc, out, err = procs.run_bounded(argv, timeout=duration + timeout + 15, cpus=cpus)
    if rc is None:
        raise RuntimeError("wrk did not finish in time")
    if rc != 0:
        raise RuntimeError("wrk exited %s: %s" % (rc, (err or out).strip()[-300:]))
    return parse_wrk(out), out


def _num(x):
    return ("%g" % x)


# lines that the Lua scripts of bench/lua/ print from done(), after wrk's summary
_TALLY = re.compile(r"^tally (\S+) (\d+)$", re.M)
_STATUS = re.compile(r"^status (\d+) (\d+)$", re.M)


def parse_tally(text):
    """{worker pid (int, or None for answers without X-Worker-Pid): answers}
    from the ``tally PID COUNT`` lines of bench/lua/tally.lua."""
    out = {}
    for pid, count in _TALLY.findall(text):
        key = int(pid) if pid.isdigit() else None
        out[key] = out.get(key, 0) + int(count)
    return out


def parse_statuses(text):
    """{HTTP status: answers} from the ``status CODE COUNT`` lines of bench/lua/mixed.lua."""
    out = {}
    for code, count in _STATUS.findall(text):
        out[int(code)] = out.get(int(code), 0) + int(count)
    return out


# --------------------------------------------------------------------------- ab

_AB_RPS = re.compile(r"^Requests per second:\s*([\d.]+)", re.M)
_AB_COMPLETE = re.compile(r"^Complete requests:\s*(\d+)", re.M)
_AB_FAILED = re.compile(r"^Failed requests:\s*(\d+)", re.M)
_AB_NON2XX = re.compile(r"^Non-2xx responses:\s*(\d+)", re.M)
_AB_WRITE_ERR = re.compile(r"^Write errors:\s*(\d+)", re.M)
_AB_TIME = re.compile(r"^Time taken for tests:\s*([\d.]+) seconds", re.M)
_AB_PCT = re.compile(r"^\s*(\d+)%\s+(\d+)")
_AB_BREAKDOWN = re.compile(
    r"\(Connect: (\d+), Receive: (\d+), Length: (\d+), Exceptions: (\d+)\)")
_AB_MEAN = re.compile(r"^Time per request:\s*([\d.]+) \[ms\] \(mean\)$", re.M)


def parse_ab(text, csv_text=None):
    """Parse the output of ``ab``, and the file of its ``-e`` option if given.

    ab's printed percentile table is in whole milliseconds; the ``-e`` CSV
    has the same percentiles with microseconds, and is preferred. ``failed``
    counts connect, receive and exception failures, non-2xx answers (or
    length mismatches, whichever is more: ab counts a non-2xx answer with
    another body length under both) and write errors. Raises ValueError if
    there is no "Requests per second" line.
    """
    m = _AB_RPS.search(text)
    if not m:
        raise ValueError("no 'Requests per second' in ab output: %r" % text[-300:])
    out = {"rps": float(m.group(1))}
    m = _AB_COMPLETE.search(text)
    out["requests"] = int(m.group(1)) if m else None
    m = _AB_TIME.search(text)
    out["seconds"] = float(m.group(1)) if m else None
    m = _AB_MEAN.search(text)
    out["avg_ms"] = float(m.group(1)) if m else None
    latency = {}
    in_table = False
    for line in text.splitlines():
        if line.startswith("Percentage of the requests served"):
            in_table = True
            continue
        if in_table:
            pm = _AB_PCT.match(line)
            if pm:
                latency[float(pm.group(1))] = float(pm.group(2))
            else:
                in_table = False
    out["latency_source"] = "ab table (whole ms)"
    if csv_text:
        fine = parse_ab_csv(csv_text)
        if fine:
            latency = fine
            out["latency_source"] = "ab -e csv"
    out["latency_ms"] = latency
    out["p50_ms"] = latency.get(50.0)
    out["p99_ms"] = latency.get(99.0)
    failed = _int(_AB_FAILED, text)
    non2xx = _int(_AB_NON2XX, text)
    write_errors = _int(_AB_WRITE_ERR, text)
    m = _AB_BREAKDOWN.search(text)
    kinds = dict(zip(("connect", "receive", "length", "exceptions"),
                     (int(g) for g in m.groups()))) if m else \
        {"connect": 0, "receive": 0, "length": failed, "exceptions": 0}
    out["non2xx"] = non2xx
    out["socket_errors"] = dict(kinds, write=write_errors)
    # ab counts a non-2xx answer whose body length differs from the first
    # answer's as a "Length" failure too: count such a request once.
    out["failed"] = (kinds["connect"] + kinds["receive"] + kinds["exceptions"]
                     + max(kinds["length"], non2xx) + write_errors)
    return out


def _int(regex, text):
    m = regex.search(text)
    return int(m.group(1)) if m else 0


def parse_ab_csv(text):
    """ab -e output ("Percentage served,Time in ms" then "50,1.234" lines)."""
    latency = {}
    for line in text.splitlines():
        pct, sep, ms = line.partition(",")
        if not sep:
            continue
        try:
            latency[float(pct)] = float(ms)
        except ValueError:
            continue   # the header line
    return latency


def ab_argv(url, concurrency, requests, time_limit, csv_path=None):
    # -t first: it implies -n 50000, which the -n after it overrides. -r: a
    # receive error is counted, not fatal. -s: per-request timeout.
    argv = ["ab", "-q", "-r", "-s", "5", "-t", _num(time_limit), "-n", str(requests),
            "-c", str(concurrency)]
    if csv_path:
        argv += ["-e", csv_path]
    return argv + [url]


def run_ab(url, concurrency, requests, time_limit, csv_path=None):
    """Run ab (HTTP/1.0, a new connection per request); (figures, raw output)."""
    if csv_path and os.path.exists(csv_path):
        os.unlink(csv_path)
    argv = ab_argv(url, concurrency, requests, time_limit, csv_path)
    rc, out, err = procs.run_bounded(argv, timeout=time_limit + 20)
    if rc is None:
        raise RuntimeError("ab did not finish in time")
    csv_text = None
    if csv_path:
        try:
            with open(csv_path) as f:
                csv_text = f.read()
        except OSError:
            pass
    try:
        return parse_ab(out, csv_text), out
    except ValueError:
        raise RuntimeError("ab exited %s: %s" % (rc, (err or out).strip()[-300:]))


# ------------------------------------------------------ sequential raw-socket client

def sequential(host, port, count, request_timeout=5.0, total_timeout=60.0):
    """Send ``count`` requests one after the other, each on a new connection.

    Each request waits until the server has closed the connection before the
    next one is sent, so exactly one request is ever in flight: the herd
    scenario then measures what an idle pool of workers does for a single
    connection. Bounded by ``count`` and ``total_timeout``.

    Returns a dict: pids (list, one entry per answered request: the
    X-Worker-Pid header, None if absent), latencies_ms, failed, sent, and
    elapsed seconds.
    """
    request = (b"GET / HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n"
               % (host.encode(), port))
    pids, latencies, failed, sent = [], [], 0, 0
    start = time.monotonic()
    deadline = start + total_timeout
    for _ in range(count):
        if time.monotonic() >= deadline:
            break
        sent += 1
        t0 = time.perf_counter()
        try:
            raw = _one_exchange(host, port, request, min(request_timeout,
                                                         max(0.01, deadline - time.monotonic())))
            status, headers, _ = procs.parse_response(raw)
        except (OSError, ValueError):
            failed += 1
            continue
        latencies.append((time.perf_counter() - t0) * 1000.0)
        if not 200 <= status < 300:
            failed += 1
            continue
        pid = headers.get("x-worker-pid")
        pids.append(int(pid) if pid and pid.isdigit() else None)
    return {"pids": pids, "latencies_ms": latencies, "failed": failed, "sent": sent,
            "elapsed": time.monotonic() - start}


def _one_exchange(host, port, request, timeout):
    end = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(request)
        chunks = []
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError("response not complete in time")
            s.settimeout(left)
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def percentile(values, pct):
    """Nearest-rank percentile of a list (None if empty)."""
    vals = sorted(values)
    if not vals:
        return None
    k = max(0, min(len(vals) - 1, math.ceil(pct / 100.0 * len(vals)) - 1))
    return vals[k]
