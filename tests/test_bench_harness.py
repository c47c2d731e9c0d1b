"""The arithmetic and parsing of the benchmark harness (bench/).

No server is started and nothing is timed: the wrk and ab outputs below were
captured from real runs of wrk 4.1.0 and ab 2.3 on loopback, against small
local servers made to answer slowly, with errors, or by closing connections.
"""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench import loadgen, procfs, procs, report, stats  # noqa: E402
from bench.scenarios import PRESETS, SCENARIOS  # noqa: E402
from bench.servers import SERVERS, availability, nginx_conf  # noqa: E402

# ------------------------------------------------------------------ samples

WRK_OK = """\
Running 2s test @ http://127.0.0.1:18444/
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.14ms    3.56ms  17.70ms   82.89%
    Req/Sec     1.12k   413.51     1.80k    65.00%
  Latency Distribution
     50%    2.76ms
     75%    5.48ms
     90%    9.08ms
     99%   15.90ms
  2223 requests in 2.00s, 251.84KB read
Requests/sec:   1111.25
Transfer/sec:    125.89KB
"""

WRK_NON2XX = """\
Running 2s test @ http://127.0.0.1:18444/mixed
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.34ms    2.97ms  16.85ms   85.07%
    Req/Sec     1.38k   650.77     3.75k    80.00%
  Latency Distribution
     50%    1.79ms
     75%    4.87ms
     90%    7.61ms
     99%   13.14ms
  2755 requests in 2.00s, 315.12KB read
  Non-2xx or 3xx responses: 772
Requests/sec:   1374.26
Transfer/sec:    157.19KB
"""

WRK_TIMEOUTS = """\
Running 2s test @ http://127.0.0.1:18444/slow
  2 threads and 10 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.00us    0.00us   0.00us    -nan%
    Req/Sec     3.00      0.00     3.00    100.00%
  Latency Distribution
     50%    0.00us
     75%    0.00us
     90%    0.00us
     99%    0.00us
  5 requests in 2.00s, 580.00B read
  Socket errors: connect 0, read 0, write 0, timeout 5
Requests/sec:      2.50
Transfer/sec:     289.53B
"""

WRK_SECONDS = """\
Running 4s test @ http://127.0.0.1:18444/slow
  1 threads and 3 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.20s     4.36ms   1.21s    77.78%
    Req/Sec     6.00      9.38    20.00     75.00%
  Latency Distribution
     50%    1.20s 
     75%    1.20s 
     90%    1.21s 
     99%    1.21s 
  9 requests in 4.02s, 1.02KB read
Requests/sec:      2.24
Transfer/sec:     259.48B
"""

WRK_READ_ERRORS = """\
Running 2s test @ http://127.0.0.1:18446/
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   524.84us    1.59ms  18.17ms   91.67%
    Req/Sec     4.24k     1.63k   10.69k    95.00%
  Latency Distribution
     50%   39.00us
     75%   79.00us
     90%    1.54ms
     99%    8.35ms
  8465 requests in 2.01s, 330.66KB read
  Socket errors: connect 0, read 12697, write 0, timeout 0
Requests/sec:   4212.66
Transfer/sec:    164.56KB
"""

WRK_REFUSED = "unable to connect to 127.0.0.1:18445 Connection refused\n"

AB_HEAD = """\
This is ApacheBench, Version 2.3 <$Revision$>
Copyright 1996 Adam Twiss, Zeus Technology Ltd, http://www.zeustech.net/
Licensed to The Apache Software Foundation, http://www.apache.org/

Benchmarking 127.0.0.1 (be patient)
Completed 100 requests
Completed 200 requests
Completed 300 requests
Finished 300 requests


Server Software:        WSGIServer/0.2
Server Hostname:        127.0.0.1
Server Port:            18444

"""

AB_OK = AB_HEAD + """\
Document Path:          /
Document Length:        2 bytes

Concurrency Level:      4
Time taken for tests:   0.260 seconds
Complete requests:      300
Failed requests:        0
Total transferred:      34800 bytes
HTML transferred:       600 bytes
Requests per second:    1155.09 [#/sec] (mean)
Time per request:       3.463 [ms] (mean)
Time per request:       0.866 [ms] (mean, across all concurrent requests)
Transfer rate:          130.85 [Kbytes/sec] received

Connection Times (ms)
              min  mean[+/-sd] median   max
Connect:        0    0   0.1      0       1
Processing:     0    3   5.2      1      16
Waiting:        0    3   5.2      1      16
Total:          1    3   5.2      1      16

Percentage of the requests served within a certain time (ms)
  50%      1
  66%      1
  75%      1
  80%      2
  90%     16
  95%     16
  98%     16
  99%     16
 100%     16 (longest request)
"""

AB_LENGTH = AB_HEAD + """\
Document Path:          /rand
Document Length:        1 bytes

Concurrency Level:      4
Time taken for tests:   0.084 seconds
Complete requests:      300
Failed requests:        283
   (Connect: 0, Receive: 0, Length: 283, Exceptions: 0)
Total transferred:      37562 bytes
HTML transferred:       3190 bytes
Requests per second:    3583.80 [#/sec] (mean)
Time per request:       1.116 [ms] (mean)
Time per request:       0.279 [ms] (mean, across all concurrent requests)
Transfer rate:          438.20 [Kbytes/sec] received

Percentage of the requests served within a certain time (ms)
  50%      1
  66%      1
  75%      1
  80%      1
  90%      1
  95%      2
  98%      2
  99%      3
 100%      3 (longest request)
"""

AB_NON2XX = AB_HEAD + """\
Document Path:          /mixed
Document Length:        2 bytes

Concurrency Level:      4
Time taken for tests:   0.079 seconds
Complete requests:      300
Failed requests:        107
   (Connect: 0, Receive: 0, Length: 107, Exceptions: 0)
Non-2xx responses:      107
Total transferred:      35228 bytes
HTML transferred:       814 bytes
Requests per second:    3808.07 [#/sec] (mean)
Time per request:       1.050 [ms] (mean)
Time per request:       0.263 [ms] (mean, across all concurrent requests)
Transfer rate:          436.69 [Kbytes/sec] received

Percentage of the requests served within a certain time (ms)
  50%      1
  66%      1
  75%      1
  80%      1
  90%      1
  95%      2
  98%      2
  99%      2
 100%      2 (longest request)
"""

AB_CSV = "Percentage served,Time in ms\n0,1.161\n1,1.292\n49,3.881\n50,3.915\n98,12.236\n" \
         "99,13.036\n100,14.488\n"


# ------------------------------------------------------------------ wrk

def test_wrk_plain():
    r = loadgen.parse_wrk(WRK_OK)
    assert r["rps"] == 1111.25
    assert r["requests"] == 2223 and r["seconds"] == 2.0
    assert r["p50_ms"] == pytest.approx(2.76)
    assert r["p99_ms"] == pytest.approx(15.90)
    assert r["avg_ms"] == pytest.approx(4.14)
    assert r["latency_ms"] == {50.0: 2.76, 75.0: 5.48, 90.0: 9.08, 99.0: 15.90}
    assert r["failed"] == 0 and r["non2xx"] == 0
    assert r["socket_errors"] == {"connect": 0, "read": 0, "write": 0, "timeout": 0}


def test_wrk_non2xx_counts_as_failed():
    r = loadgen.parse_wrk(WRK_NON2XX)
    assert r["non2xx"] == 772 and r["failed"] == 772
    assert r["rps"] == 1374.26


def test_wrk_timeouts_and_microseconds():
    r = loadgen.parse_wrk(WRK_TIMEOUTS)
    assert r["socket_errors"]["timeout"] == 5
    assert r["failed"] == 5
    assert r["p50_ms"] == 0.0 and r["p99_ms"] == 0.0


def test_wrk_seconds_unit():
    r = loadgen.parse_wrk(WRK_SECONDS)
    assert r["p50_ms"] == pytest.approx(1200.0)
    assert r["p99_ms"] == pytest.approx(1210.0)
    assert r["avg_ms"] == pytest.approx(1200.0)
    assert r["seconds"] == pytest.approx(4.02)


def test_wrk_read_errors_and_mixed_units():
    r = loadgen.parse_wrk(WRK_READ_ERRORS)
    assert r["socket_errors"] == {"connect": 0, "read": 12697, "write": 0, "timeout": 0}
    assert r["failed"] == 12697
    assert r["p50_ms"] == pytest.approx(0.039)
    assert r["latency_ms"][90.0] == pytest.approx(1.54)
    assert r["p99_ms"] == pytest.approx(8.35)
    assert r["avg_ms"] == pytest.approx(0.52484)


def test_wrk_that_did_not_run():
    with pytest.raises(ValueError):
        loadgen.parse_wrk(WRK_REFUSED)


@pytest.mark.parametrize("number,unit,ms", [
    ("263.35", "us", 0.26335), ("2.5", "ms", 2.5), ("1.5", "s", 1500.0), ("1", "m", 60000.0)])
def test_duration_units(number, unit, ms):
    assert loadgen.duration_ms(number, unit) == pytest.approx(ms)


def test_wrk_argv_whole_seconds():
    argv = loadgen.wrk_argv("http://127.0.0.1:1/", 50, 5.0)
    assert argv[:2] == ["wrk", "--latency"] and "-d5s" in argv and "-c50" in argv


# ------------------------------------------------------------------ ab

def test_ab_plain():
    r = loadgen.parse_ab(AB_OK)
    assert r["rps"] == 1155.09
    assert r["requests"] == 300 and r["seconds"] == 0.26
    assert r["p50_ms"] == 1.0 and r["p99_ms"] == 16.0
    assert r["latency_ms"][100.0] == 16.0
    assert r["avg_ms"] == pytest.approx(3.463)
    assert r["failed"] == 0 and r["non2xx"] == 0


def test_ab_csv_percentiles_preferred():
    r = loadgen.parse_ab(AB_OK, AB_CSV)
    assert r["p50_ms"] == pytest.approx(3.915)
    assert r["p99_ms"] == pytest.approx(13.036)
    assert loadgen.parse_ab_csv(AB_CSV)[0.0] == pytest.approx(1.161)


def test_ab_length_failures():
    r = loadgen.parse_ab(AB_LENGTH)
    assert r["failed"] == 283
    assert r["socket_errors"]["length"] == 283 and r["non2xx"] == 0
    assert r["p99_ms"] == 3.0


def test_ab_non2xx_counted_once():
    # ab reports the 107 error answers both as Non-2xx and as Length failures
    r = loadgen.parse_ab(AB_NON2XX)
    assert r["non2xx"] == 107
    assert r["failed"] == 107


def test_ab_without_result():
    with pytest.raises(ValueError):
        loadgen.parse_ab("apr_socket_connect(): Connection refused (111)\n")


def test_ab_argv_bounded():
    argv = loadgen.ab_argv("http://127.0.0.1:1/", 8, 20000, 5.0, "/tmp/x.csv")
    # -t must come before -n, or ab's -t resets the count to 50000
    assert argv.index("-t") < argv.index("-n")
    assert argv[argv.index("-n") + 1] == "20000" and argv[argv.index("-c") + 1] == "8"
    assert "-e" in argv and "-r" in argv


# ------------------------------------------------------------------ stats

def test_jain_even_and_one_worker():
    assert stats.jain([5] * 8) == pytest.approx(1.0)
    assert stats.jain([500], n=8) == pytest.approx(1 / 8)
    assert stats.jain([500, 0, 0, 0, 0, 0, 0, 0]) == pytest.approx(1 / 8)


def test_jain_known_spread():
    counts = [115, 111, 105, 58, 43, 25, 23, 20]
    expected = 500 ** 2 / (8 * sum(c * c for c in counts))
    assert stats.jain(counts) == pytest.approx(expected)
    assert stats.jain(counts) == pytest.approx(0.72107, abs=1e-5)


def test_jain_pads_idle_workers_with_zero():
    assert stats.jain([10, 10], n=4) == pytest.approx(0.5)
    assert stats.jain([491, 9], n=8) == pytest.approx(500 ** 2 / (8 * (491 ** 2 + 81)))


def test_jain_edge_cases():
    assert stats.jain([], n=8) is None
    assert stats.jain([0, 0, 0]) is None
    with pytest.raises(ValueError):
        stats.jain([1, 2, 3], n=2)


def test_median():
    assert stats.median([3, 1, 2]) == 2
    assert stats.median([4, 1, 3, 2]) == 2.5
    assert stats.median([None, 5, float("nan"), 1, 3]) == 3
    assert stats.median([]) is None and stats.median([None]) is None


def test_ratio_and_paired_ratio():
    assert stats.ratio(10, 4) == 2.5
    assert stats.ratio(1, 0) is None and stats.ratio(None, 1) is None
    # per-round ratios 2.0, 1.0, 3.0 -> median 2.0, while the ratio of the
    # medians would be 20/10
    assert stats.paired_ratio([20, 10, 30], [10, 10, 10]) == 2.0
    assert stats.paired_ratio([20, None, 30], [10, 10, 0]) == 2.0
    assert stats.paired_ratio([None], [1]) is None


def test_best():
    assert stats.best({"a": 1, "b": 3, "c": None}) == ("b", 3)
    assert stats.best({}) == (None, None)


def test_percentile_nearest_rank():
    vals = list(range(1, 101))
    assert loadgen.percentile(vals, 50) == 50
    assert loadgen.percentile(vals, 99) == 99
    assert loadgen.percentile([7], 99) == 7
    assert loadgen.percentile([], 50) is None


# ------------------------------------------------------------------ /proc

def _task(root, pid, tid, vol, nonvol, children=None):
    d = root / str(pid) / "task" / str(tid)
    d.mkdir(parents=True)
    (d / "status").write_text(
        "Name:\tpython\nState:\tS (sleeping)\nTgid:\t%d\nPid:\t%d\n"
        "voluntary_ctxt_switches:\t%d\nnonvoluntary_ctxt_switches:\t%d\n"
        % (pid, tid, vol, nonvol))
    if children is not None:
        (d / "children").write_text(" ".join(str(c) for c in children) + (" " if children else ""))


def _proc(root, pid, ppid, comm="python", rss_kib=None):
    d = root / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    (d / "stat").write_text("%d (%s) S %d %d %d 0 -1 4194560 0 0 0 0\n" % (pid, comm, ppid, pid, pid))
    status = "Name:\t%s\nPid:\t%d\nPPid:\t%d\n" % (comm, pid, ppid)
    if rss_kib is not None:
        status += "VmRSS:\t  %d kB\n" % rss_kib
    (d / "status").write_text(status)


def test_context_switches_sum_every_thread(tmp_path):
    _task(tmp_path, 200, 200, 10, 2)
    _task(tmp_path, 200, 201, 5, 1)
    _task(tmp_path, 200, 202, 0, 7)
    _task(tmp_path, 300, 300, 100, 3)
    assert procfs.context_switches(200, root=str(tmp_path)) == 25
    assert procfs.context_switches(300, root=str(tmp_path)) == 103
    assert procfs.total_context_switches([200, 300], root=str(tmp_path)) == 128
    # a process that is gone counts as 0
    assert procfs.context_switches(999, root=str(tmp_path)) == 0


def test_children_from_task_children_files(tmp_path):
    _task(tmp_path, 100, 100, 0, 0, children=[201, 202])
    _task(tmp_path, 100, 101, 0, 0, children=[203])
    assert procfs.children(100, root=str(tmp_path)) == [201, 202, 203]


def test_children_fallback_scans_ppid(tmp_path):
    _proc(tmp_path, 100, 1)
    (tmp_path / "100" / "task" / "100").mkdir(parents=True)   # no children file
    _proc(tmp_path, 201, 100, comm="gunicorn: worker [app]")
    _proc(tmp_path, 202, 100, comm="odd ) name (x")
    _proc(tmp_path, 300, 1)
    (tmp_path / "self").mkdir()
    assert procfs.children(100, root=str(tmp_path)) == [201, 202]
    assert procfs.ppid_of(202, root=str(tmp_path)) == 100


def test_descendants(tmp_path):
    _task(tmp_path, 10, 10, 0, 0, children=[11])
    _task(tmp_path, 11, 11, 0, 0, children=[12, 13])
    _task(tmp_path, 12, 12, 0, 0, children=[])
    _task(tmp_path, 13, 13, 0, 0, children=[])
    assert procfs.descendants(10, root=str(tmp_path)) == [11, 12, 13]


def test_rss(tmp_path):
    _proc(tmp_path, 50, 1, rss_kib=20480)
    _proc(tmp_path, 51, 1)
    assert procfs.rss_kib(50, root=str(tmp_path)) == 20480
    assert procfs.rss_kib(51, root=str(tmp_path)) is None
    assert procfs.rss_kib(52, root=str(tmp_path)) is None


# ------------------------------------------------------------------ report

def _rec(name, family, rps, stock=(), status="ok", **extra):
    runs = [dict({"round": i + 1, "rps": v, "p50_ms": 1.0, "p99_ms": 2.0, "failed": 0,
                  "rss_kib": [20480, 22528]}, **extra) for i, v in enumerate(rps)]
    return {"name": name, "title": name, "family": family, "style": "sync",
            "stock": list(stock), "status": status, "reason": None, "runs": runs}


def test_summary_medians_and_ratios():
    results = {"meta": {}, "scenarios": [{
        "name": "hello-1w", "title": "t", "load": "wrk", "app": "hello", "workers": 1,
        "servers": [
            _rec("turbo-sync", "turbo", [300, 200, 330], stock=("sync-py", "sync-fast")),
            _rec("sync-py", "stock", [100, 100, 110]),
            _rec("sync-fast", "stock", [150, 100, 165]),
            _rec("bjoern", "peer", [200, 200, 200]),
            _rec("nginx", "ceiling", [1000, 1000, 1000]),
            _rec("turbo-thread", "turbo", [], status="skipped"),
        ]}]}
    report.summarize(results)
    recs = {r["name"]: r for r in results["scenarios"][0]["servers"]}
    s = recs["turbo-sync"]["summary"]
    assert s["rps"] == 300 and s["rounds"] == 3
    assert s["rss_mb_per_worker"] == pytest.approx(21.0)
    q = s["ratios"]
    assert q["vs_stock_py"] == pytest.approx(3.0)          # 3.0, 2.0, 3.0
    assert q["vs_stock_fast"] == pytest.approx(2.0)        # 2.0, 2.0, 2.0
    assert q["best_peer"] == "bjoern"                       # nginx is the ceiling, not a peer
    assert q["vs_best_peer"] == pytest.approx(1.5)
    assert q["vs_ceiling"] == pytest.approx(0.3)
    assert recs["bjoern"]["summary"]["ratios"]["best_peer"] == "sync-fast"
    assert "vs_best_peer" not in recs["nginx"]["summary"]["ratios"]
    assert recs["turbo-thread"]["summary"] == {}
    md = "\n".join(report.scenario_table(results["scenarios"][0]))
    assert "| turbo-sync | 300 |" in md and "3.00×" in md
    assert "turbo-thread" in report.not_run(results)


def test_summary_herd():
    def herd(name, family, cs, per_worker, stock=()):
        rec = _rec(name, family, [10, 10, 10], stock=stock)
        for run, c, pw in zip(rec["runs"], cs, per_worker):
            run.update(cs_per_request=c, per_worker=pw, jain=stats.jain(pw))
        return rec
    results = {"meta": {}, "scenarios": [{
        "name": "herd-8w", "title": "t", "load": "sequential", "app": "hello", "workers": 8,
        "servers": [
            herd("turbo-sync", "turbo", [1.0, 1.2, 1.1], [[63] * 7 + [59]] * 3,
                 stock=("sync-py", "sync-fast")),
            herd("sync-py", "stock", [10.0, 12.0, 11.0],
                 [[115, 111, 105, 58, 43, 25, 23, 20], [500, 0, 0, 0, 0, 0, 0, 0],
                  [100, 100, 100, 100, 50, 50, 0, 0]]),
        ]}]}
    report.summarize(results)
    recs = {r["name"]: r for r in results["scenarios"][0]["servers"]}
    s = recs["sync-py"]["summary"]
    assert s["cs_per_request"] == 11.0
    # Jain per round: 0.721, 0.125, 0.694; the spread shown is the median round's
    assert s["jain"] == pytest.approx(500 ** 2 / (8 * 45000))
    assert s["per_worker"] == [100, 100, 100, 100, 50, 50, 0, 0]
    q = recs["turbo-sync"]["summary"]["ratios"]
    assert q["vs_stock_py"] == pytest.approx(0.1)           # context switches: lower is better
    assert "vs_best_peer" not in q
    assert "requests per worker" in "\n".join(report.scenario_table(results["scenarios"][0]))


# ------------------------------------------------------------------ registry and config

def test_registry_pairs_turbo_with_stock():
    for name, server in SERVERS.items():
        for twin in server.stock:
            assert SERVERS[twin].family == "stock" and SERVERS[twin].style == server.style
    for scen in SCENARIOS.values():
        assert set(scen.servers) <= set(SERVERS)
    for preset in PRESETS.values():
        assert set(preset["scenarios"]) <= set(SCENARIOS)


def test_availability_reasons():
    probe = {"turboworkers": {"ok": True}, "modules": {"gevent": {"ok": False,
                                                                   "reason": "ImportError: x"}},
             "turbo": {"SyncMutexWorker": {"ok": True},
                       "EpollThreadWorker": {"ok": False, "reason": "not built yet"}}}
    assert availability(SERVERS["turbo-sync"], probe) is None
    assert availability(SERVERS["turbo-thread"], probe) == "not built yet"
    assert availability(SERVERS["turbo-gevent"], probe) == "not built yet"
    assert "not installed" in availability(SERVERS["gevent-py"], probe)


def test_nginx_conf_stays_in_tmpdir(tmp_path):
    text = nginx_conf(str(tmp_path), "127.0.0.1", 12345, 8)
    assert "daemon off;" in text and "worker_processes 8;" in text
    assert "listen 127.0.0.1:12345;" in text
    for key in ("pid ", "error_log ", "client_body_temp_path "):
        line = [ln for ln in text.splitlines() if ln.strip().startswith(key)][0]
        assert str(tmp_path) in line
    assert 'return 200 "Hello, World!"' in text


def test_parse_response():
    from bench.procs import parse_response
    status, headers, body = parse_response(
        b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nX-Worker-Pid: 4242\r\n\r\nHello, World!")
    assert status == 200 and headers["x-worker-pid"] == "4242" and body == b"Hello, World!"
    with pytest.raises(ValueError):
        parse_response(b"HTTP/1.1 200 OK\r\n")


def test_hello_app_body_and_pid_header():
    from bench.apps import hello
    seen = {}

    def start_response(status, headers):
        seen["status"], seen["headers"] = status, dict(headers)
    body = b"".join(hello.app({}, start_response))
    assert body == b"Hello, World!" and len(body) == 13
    assert seen["headers"]["Content-Length"] == "13"
    assert seen["headers"]["X-Worker-Pid"] == str(os.getpid())


def test_cli_arguments():
    from bench.run import estimate_seconds, parse_args
    args = parse_args(["--preset", "quick", "--scenario", "hello-1w,herd-8w", "--duration", "2.5"])
    assert args.duration == 3.0            # wrk counts whole seconds
    assert args.rounds == 3 and args.scenario == ["hello-1w", "herd-8w"]
    with pytest.raises(SystemExit):
        parse_args(["--scenario", "nope"])
    plan = [(SCENARIOS["hello-1w"], [(SERVERS["sync-py"], None), (SERVERS["nginx"], "x")])]
    assert estimate_seconds(plan, args) > args.rounds * args.duration
    with pytest.raises(SystemExit):
        parse_args(["--threads", "0"])


def test_threads_option_reaches_every_scenario():
    from bench.run import parse_args, plan as make_plan
    probe = {}
    default = make_plan(parse_args(["--scenario", "hello-1w,io-1w"]), probe)
    assert [s.thread_threads for s, _ in default] == [8, 32]
    chosen = make_plan(parse_args(["--scenario", "hello-1w,io-1w", "--threads", "2"]), probe)
    assert [s.thread_threads for s, _ in chosen] == [2, 2]
    assert SCENARIOS["io-1w"].thread_threads == 32      # the scenario itself is left alone


def test_readme_splice():
    snippet = "<!-- bench:start (generated) -->\n| a | b |\n<!-- bench:end -->\n"
    readme = "# x\n\nintro\n<!-- bench:start old -->\nold table\n<!-- bench:end -->\n\nmore\n"
    new, ok = report.splice_readme(readme, snippet)
    assert ok
    assert new == "# x\n\nintro\n<!-- bench:start (generated) -->\n| a | b |\n" \
                  "<!-- bench:end -->\n\nmore\n"
    assert report.splice_readme(new, snippet) == (new, True)
    assert report.splice_readme("# no markers\n", snippet) == ("# no markers\n", False)


# ------------------------------------------------------------------ reliability scenarios

# wrk 4.1.0 with bench/lua/tally.lua against 4 GeventMutexWorker workers
WRK_TALLY = """\
Running 2s test @ http://127.0.0.1:54827/
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.55ms    4.72ms  39.86ms   87.24%
    Req/Sec    32.73k     3.15k   40.43k    82.93%
  Latency Distribution
     50%  109.00us
     75%  170.00us
     90%    6.93ms
     99%   23.36ms
  133230 requests in 2.10s, 22.62MB read
Requests/sec:  63457.39
Transfer/sec:     10.77MB
tally 27180 68407
tally 27183 64823
"""

# wrk 4.1.0 with bench/lua/mixed.lua (mode single) against EpollThreadWorker
WRK_MIXED = """\
Running 10s test @ http://127.0.0.1:38851/
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   142.29us  115.50us   3.12ms   97.90%
    Req/Sec    24.93k   678.82    25.41k   100.00%
  10000 requests in 10.00s, 1.71MB read
  Non-2xx or 3xx responses: 2000
Requests/sec:    999.98
Transfer/sec:    175.19KB
status 200 8000
status 404 2000
"""


def test_wrk_argv_with_script():
    argv = loadgen.wrk_argv("http://h/", 64, 5, threads=2, script="x.lua", script_args=("pair",))
    assert argv[argv.index("-s") + 1] == "x.lua"
    assert argv[-3:] == ["http://h/", "--", "pair"]    # script arguments after the URL
    assert "--" not in loadgen.wrk_argv("http://h/", 64, 5, script="x.lua")


def test_parse_tally():
    assert loadgen.parse_tally(WRK_TALLY) == {27180: 68407, 27183: 64823}
    assert loadgen.parse_wrk(WRK_TALLY)["requests"] == 133230
    assert loadgen.parse_tally("tally none 3\ntally 12 4\ntally 12 1\n") == {None: 3, 12: 5}
    assert loadgen.parse_tally(WRK_OK) == {}


def test_parse_statuses():
    assert loadgen.parse_statuses(WRK_MIXED) == {200: 8000, 404: 2000}
    # wrk counts the expected 404s as failures: the scenario uses the statuses instead
    assert loadgen.parse_wrk(WRK_MIXED)["failed"] == 2000


def test_fair_round_figures():
    from bench import fairness
    wrk = loadgen.parse_wrk(WRK_TALLY)
    tally = {10: 300, 11: 100, 12: 100, 99: 7, None: 3}
    fig = fairness.round_figures(wrk, tally, [10, 11, 12, 13])
    assert fig["per_worker"] == [300, 100, 100, 0]       # an idle worker counts as 0
    assert fig["unknown_pid_requests"] == 10
    assert fig["counted"] == 510
    assert fig["jain"] == pytest.approx(500 ** 2 / (4 * 110000))
    assert fig["rps"] == wrk["rps"]


def test_fair_summary_against_the_fastest_engine_of_the_class():
    from bench import fairness

    def rec(name, engine, rps, jain=1.0):
        return {"name": name, "engine": engine, "label": "%s/%s" % (name, engine),
                "status": "ok", "runs": [{"round": i + 1, "rps": v, "jain": jain,
                                          "per_worker": [1, 1, 1, 1], "failed": 0}
                                         for i, v in enumerate(rps)]}
    recs = [rec("turbo-sync", "sem", [100, 90, 110]), rec("turbo-sync", "none", [50, 90, 55]),
            rec("turbo-thread", "epoll", [1000, 1000, 1000], jain=0.5)]
    fairness.summarize(recs)
    sem, none, thread = (r["summary"] for r in recs)
    assert sem["fastest"] == "sem" and sem["vs_fastest"] == 1.0
    assert none["vs_fastest"] == pytest.approx(0.5)      # 0.5, 1.0, 0.5 round by round
    # another class is not compared with turbo-sync
    assert thread["fastest"] == "epoll" and thread["vs_fastest"] == 1.0
    assert thread["jain"] == 0.5 and thread["jain_min"] == 0.5


def test_fair_and_kill_engines_are_accept_engines():
    from bench import fairness, sigkill
    from turboworkers import accept
    for table in (fairness.ENGINES, sigkill.ENGINES):
        for server, engines in table.items():
            assert SERVERS[server].family == "turbo"
            assert set(engines) <= set(accept.ENGINES)
    assert "none" in fairness.ENGINES["turbo-sync"]      # the stock-like baseline


def test_mutex_holder_from_wait_channels():
    from bench.sigkill import mutex_holder
    sync_sem = {1: ["do_epoll_wait"], 2: ["__do_semtimedop"], 3: ["__do_semtimedop"],
                4: ["__do_semtimedop"]}
    assert mutex_holder(sync_sem) == 1
    sync_fcntl = {1: ["fcntl_setlk", "hrtimer_nanosleep"], 2: ["do_epoll_wait", "futex_do_wait"],
                  3: ["fcntl_setlk", "hrtimer_nanosleep"]}
    assert mutex_holder(sync_fcntl) == 2
    # a gevent worker's hub sleeps in epoll_wait beside its accepting thread
    gevent_sem = {1: ["__do_semtimedop", "do_epoll_wait"], 2: ["do_epoll_wait", "do_epoll_wait"],
                  3: ["__do_semtimedop", "do_epoll_wait"]}
    assert mutex_holder(gevent_sem) == 2
    # a holder between two waits ("0": running) or two candidates: no answer yet
    assert mutex_holder({1: ["0"], 2: ["__do_semtimedop"]}) is None
    assert mutex_holder({1: ["do_epoll_wait"], 2: ["do_epoll_wait"],
                         3: ["__do_semtimedop"]}) is None
    assert mutex_holder({1: ["do_epoll_wait"]}) is None


def test_task_wchans_and_zombies(tmp_path):
    for tid, wchan in ((70, "do_epoll_wait"), (71, "0")):
        d = tmp_path / "70" / "task" / str(tid)
        d.mkdir(parents=True)
        (d / "wchan").write_text(wchan)
    assert procfs.task_wchans(70, root=str(tmp_path)) == {70: "do_epoll_wait", 71: "0"}
    assert procfs.task_wchans(71, root=str(tmp_path)) == {}
    _proc(tmp_path, 80, 1)
    (tmp_path / "81").mkdir()
    (tmp_path / "81" / "stat").write_text("81 (python) Z 1 81 81 0 -1\n")
    assert not procfs.is_zombie(80, root=str(tmp_path))
    assert procfs.is_zombie(81, root=str(tmp_path))
    assert procfs.is_zombie(82, root=str(tmp_path))      # gone


def test_kill_summary():
    from bench import sigkill

    def run(i, t, during=(), after=0, how="mutex holder (do_epoll_wait)"):
        return {"round": i, "recovery_s": t, "failed_during": list(during),
                "failed_after": after, "victim_was": how, "all_answered_before": True}
    rec = {"status": "ok", "runs": [run(1, 0.004), run(2, 0.002), run(3, 0.5, ["TimeoutError"]),
                                    run(4, 0.003, after=1, how="answered the last request"),
                                    {"round": 5, "error": "x"}]}
    s = sigkill.summarize([rec])[0]["summary"]
    assert s["rounds"] == 4 and s["errors"] == 1
    assert s["recovery_median_s"] == pytest.approx(0.0035)
    assert s["recovery_max_s"] == 0.5
    assert (s["failed_during"], s["failed_after"], s["holder_found"]) == (1, 1, 3)
    rec["runs"].append(run(6, None))
    s = sigkill.summarize([rec])[0]["summary"]
    assert s["unrecovered"] == 1 and s["recovery_max_s"] is None


def test_leak_step_seconds():
    from bench.leak import step_seconds
    assert step_seconds(0, 1000000, None, 180, step=3) == 3          # no rate yet
    assert step_seconds(900000, 1000000, 50000, 180, step=3) == 2    # 100k left at 50k/s
    assert step_seconds(999000, 1000000, 50000, 180, step=3) == 1    # at least a second
    assert step_seconds(0, 1000000, 10000, 1.5, step=3) == 1         # the time limit
    assert step_seconds(0, 1000000, 10000, 0.5, step=3) == 0
    assert step_seconds(1000000, 1000000, 10000, 100, step=3) == 0


def test_leak_growth():
    from bench.leak import growth
    samples = [(50000, 20000), (120000, 20480), (600000, 21000), (1000000, 21504)]
    g = growth(samples, warm=100000)
    assert g["baseline"] == (120000, 20480) and g["end"] == (1000000, 21504)
    assert g["growth_mb"] == pytest.approx(1.0)
    # no sample after the baseline: nothing measured
    assert growth([(50000, 20000), (150000, 20000)], warm=100000)["growth_mb"] is None
    assert growth([], warm=1)["growth_mb"] is None


def test_leak_modes():
    from bench.leak import modes_for
    assert modes_for(SERVERS["turbo-sync"]) == ("single",)    # one request per connection
    assert modes_for(SERVERS["turbo-gevent"]) == ("single", "pair")


def test_variant_environment():
    from bench import variants
    env = {"PATH": "/bin", "TURBOWORKERS_EPOLL_ROTATE": "3", "TURBOWORKERS_ACCEPT": "queue"}
    assert variants.server_env(env, "sem") == {"PATH": "/bin", "TURBOWORKERS_ACCEPT": "sem"}
    assert variants.server_env(env, None) == {"PATH": "/bin"}
    assert env["TURBOWORKERS_ACCEPT"] == "queue"                # the harness's own is untouched
    out = variants.expand([(SERVERS["turbo-thread"], None), (SERVERS["turbo-sync"], "x")],
                          {"turbo-thread": ("epoll", "none")})
    assert [(v.label, r) for v, r in out] == [("turbo-thread/epoll", None),
                                              ("turbo-thread/none", None),
                                              ("turbo-sync/default", "x")]


def test_mixed_app():
    import io
    from bench.apps import mixed
    seen = {}

    def start_response(status, headers):
        seen["status"], seen["headers"] = status, dict(headers)

    def call(path, body=b""):
        env = {"PATH_INFO": path, "wsgi.input": io.BytesIO(body)}
        out = b"".join(mixed.app(env, start_response))
        assert seen["headers"]["Content-Length"] == str(len(out))
        assert seen["headers"]["X-Worker-Pid"] == str(os.getpid())
        return seen["status"], out
    assert call("/") == ("200 OK", b"Hello, World!")
    assert call("/upload", b"x" * 20000) == ("200 OK", b"read 20000 bytes")
    assert call("/missing")[0] == "404 Not Found"


def test_reliability_preset():
    from bench.scenarios import RELIABILITY_LOADS
    assert PRESETS["reliability"]["scenarios"] == ["fair-4w", "kill-4w", "leak-1m"]
    for name in ("full", "quick"):
        assert not any(SCENARIOS[n].load in RELIABILITY_LOADS for n in PRESETS[name]["scenarios"])
    from bench.run import estimate_seconds, parse_args, plan
    args = parse_args(["--preset", "reliability", "--leak-seconds", "30"])
    assert args.leak_requests == 1000000 and args.leak_seconds == 30
    probe = {"turboworkers": {"ok": True}, "modules": {"gevent": {"ok": True}},
             "turbo": {n: {"ok": True} for n in ("SyncMutexWorker", "EpollThreadWorker",
                                                  "GeventMutexWorker")}}
    the_plan = plan(args, probe)
    assert [s.name for s, _ in the_plan] == ["fair-4w", "kill-4w", "leak-1m"]
    assert estimate_seconds(the_plan, args) > 3 * 30               # leak runs per server
    with pytest.raises(SystemExit):
        parse_args(["--leak-seconds", "0"])


def test_reliability_report(tmp_path):
    from bench import reliability_report
    fair = {"name": "turbo-sync", "engine": "sem", "label": "turbo-sync/sem", "status": "ok",
            "runs": [{"round": 1, "rps": 100.0, "jain": 0.99, "per_worker": [25, 25, 24, 26],
                      "failed": 0, "p99_ms": 3.0}]}
    kill = {"name": "turbo-sync", "engine": "sem", "label": "turbo-sync/sem", "status": "ok",
            "runs": [{"round": 1, "recovery_s": 0.004, "failed_during": [], "failed_after": 0,
                      "victim_was": "mutex holder (do_epoll_wait)",
                      "all_answered_before": True}]}
    leak = {"name": "turbo-thread", "engine": None, "label": "turbo-thread/default",
            "status": "ok", "runs": [{"round": 1, "requests": 400000, "target": 1000000,
                                      "seconds": 180.0, "statuses": {"200": 320000,
                                                                     "404": 80000},
                                      "failed": 0, "baseline": [120000, 20480],
                                      "end": [400000, 20992], "growth_mb": 0.5}]}
    skipped = {"name": "turbo-gevent", "engine": "sem", "label": "turbo-gevent/sem",
               "status": "skipped", "reason": "not installed", "runs": []}
    meta = {"date": "d", "nproc": 2, "kernel": "k", "machine": "m", "command": "c",
            "preset": "reliability", "rounds": 1, "duration_s": 5, "warmup_s": 1,
            "leak_requests": 1000000, "leak_seconds": 180}
    results = {"meta": meta, "scenarios": [
        {"name": "fair-4w", "title": "t", "load": "fair", "rounds": 1,
         "variants": [fair, skipped]},
        {"name": "kill-4w", "title": "t", "load": "kill", "rounds": 1, "variants": [kill]},
        {"name": "leak-1m", "title": "t", "load": "leak", "rounds": 1, "variants": [leak]}]}
    paths = reliability_report.write_all(results, str(tmp_path))
    assert sorted(os.path.basename(p) for p in paths) == ["reliability.json", "reliability.md"]
    md = (tmp_path / "reliability.md").read_text()
    assert "| turbo-sync | sem | 100 | 0.990 (0.990) ✓ | 26 25 25 24 | 100% ✓ |" in md
    assert "| turbo-sync | sem | 1 | 0.004 | 0.004 ✓ | 0 / 0 | 1 of 1 | 1 of 1 |" in md
    assert "400000 (time limit; target 1000000)" in md and "0.50 ✓" in md
    assert "not run: **turbo-gevent/sem**: not installed" in md


def test_cpu_split_only_for_one_worker_wrk_scenarios():
    from bench.run import cpu_split, parse_args
    args = parse_args([])
    assert cpu_split(SCENARIOS["hello-1w"], args, {0, 1}) == ([0], [1])
    assert cpu_split(SCENARIOS["io-1w"], args, {3, 1, 2}) == ([1], [2, 3])
    assert cpu_split(SCENARIOS["hello-2w"], args, {0, 1}) == (None, None)
    assert cpu_split(SCENARIOS["conn-2w"], args, {0, 1}) == (None, None)
    assert cpu_split(SCENARIOS["herd-8w"], args, {0, 1}) == (None, None)
    assert cpu_split(SCENARIOS["hello-1w"], args, {0}) == (None, None)
    assert cpu_split(SCENARIOS["hello-1w"], parse_args(["--no-pin"]), {0, 1}) == (None, None)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_pinned_processes_and_their_children_stay_on_their_cpus():
    # the server's workers are forked by its master: they must inherit it
    cpu = max(os.sched_getaffinity(0))
    code = ("import os, sys; pid = os.fork()\n"
            "if pid == 0: print(sorted(os.sched_getaffinity(0))); sys.stdout.flush(); os._exit(0)\n"
            "os.waitpid(pid, 0); print(sorted(os.sched_getaffinity(0)))")
    rc, out, _ = procs.run_bounded([sys.executable, "-c", code], timeout=30, cpus=[cpu])
    assert rc == 0
    assert out.split("\n")[:2] == [str([cpu])] * 2
    rc, out, _ = procs.run_bounded([sys.executable, "-c", code], timeout=30)
    assert out.split("\n")[0] == str(sorted(os.sched_getaffinity(0)))
