"""The scenarios: what is served, by how many workers, under which load, to whom.

A scenario lists the servers it is meant for; the harness drops the ones that
are not available here (with the reason) or were not asked for.
"""
from dataclasses import dataclass

ALL_WSGI = ("turbo-sync", "turbo-thread", "turbo-gevent",
            "sync-py", "sync-fast", "gthread-py", "gthread-fast", "gevent-py", "gevent-fast",
            "meinheld", "granian", "bjoern")
ALL = ALL_WSGI + ("nginx",)
OURS_AND_STOCK = ALL_WSGI[:9]
TURBO = ALL_WSGI[:3]


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    app: str                      # key of bench.servers.APPS
    workers: int
    load: str                     # "wrk" | "ab" | "sequential"; reliability: "fair" | "kill" | "leak"
    servers: tuple
    connections: int = 50         # wrk -c / ab -c
    # per concurrency style: (wrk connections, gunicorn --threads, --worker-connections)
    thread_threads: int = 8
    gevent_connections: int = 1000
    thread_load: int = None       # wrk -c for thread-style servers (None: connections)
    gevent_load: int = None       # wrk -c for gevent-style servers (None: connections)
    min_rounds: int = 0           # at least this many rounds, whatever --rounds says

    def rounds(self, asked):
        return max(asked, self.min_rounds)

    def load_connections(self, server):
        if server.style == "thread" and self.thread_load:
            return self.thread_load
        if server.style == "gevent" and self.gevent_load:
            return self.gevent_load
        return self.connections


SCENARIOS = {s.name: s for s in (
    Scenario("hello-1w", "hello world, 1 worker, 50 keep-alive connections (wrk)",
             "hello", 1, "wrk", ALL, connections=50),
    Scenario("hello-2w", "hello world, 2 workers, 50 keep-alive connections (wrk)",
             "hello", 2, "wrk", ALL, connections=50),
    Scenario("flask-1w", "Flask JSON endpoint, 1 worker, 50 keep-alive connections (wrk)",
             "flask", 1, "wrk", OURS_AND_STOCK, connections=50),
    Scenario("io-1w", "I/O-bound (sleep 10 ms), 1 worker: threads 32 and 100 connections, "
             "or gevent with 1000 worker connections and 500 connections (wrk)",
             "io", 1, "wrk",
             ("turbo-thread", "turbo-gevent", "gthread-py", "gthread-fast",
              "gevent-py", "gevent-fast"),
             connections=100, thread_threads=32, thread_load=100, gevent_load=500),
    Scenario("conn-2w", "a new connection per request, 2 workers (ab -c 8)",
             "hello", 2, "ab", ALL, connections=8),
    # A herd round takes a fraction of a second and its spread varies much
    # from round to round: more rounds cost nothing and steady the median.
    Scenario("herd-8w", "herd and spread: 8 idle workers, sequential one-connection requests",
             "hello", 8, "sequential", ALL, connections=1, min_rounds=5),
    # The reliability scenarios (bench.fairness, bench.sigkill, bench.leak)
    # run each turbo class once per accept engine and write reliability.*.
    # Other work on the machine moves throughput from one run to the next:
    # five rounds steady the medians of fair-4w.
    Scenario("fair-4w", "fairness per accept engine: 4 workers, 64 keep-alive connections "
             "(wrk, answers counted per worker)", "hello", 4, "fair", TURBO, connections=64, min_rounds=5),
    Scenario("kill-4w", "SIGKILL of the next worker to accept among 4 idle ones: time until "
             "a new connection is answered", "hello", 4, "kill", TURBO, connections=1,
             min_rounds=5),
    Scenario("leak-1m", "RSS growth of 1 worker over a million mixed requests (GET, POST, "
             "chunked, 404, pipelined pairs)", "mixed", 1, "leak", TURBO, connections=8),
)}

# loads run by the reliability modules, reported in reliability.json/.md
RELIABILITY_LOADS = ("fair", "kill", "leak")

# make bench-quick: hello world on every server, the herd with fewer peers
QUICK_HERD = ("turbo-sync", "turbo-thread", "turbo-gevent",
              "sync-fast", "gthread-fast", "gevent-fast", "meinheld")

PRESETS = {
    "full": {"scenarios": ["hello-1w", "hello-2w", "flask-1w", "io-1w", "conn-2w", "herd-8w"],
             "duration": 5.0, "rounds": 3, "warmup": 0.0, "servers_override": {}},
    "quick": {"scenarios": ["hello-1w", "herd-8w"], "duration": 3.0, "rounds": 3,
              "warmup": 0.0, "servers_override": {"herd-8w": QUICK_HERD}},
    # make bench-reliability: not in "full", whose budget is 15 minutes
    "reliability": {"scenarios": ["fair-4w", "kill-4w", "leak-1m"], "duration": 5.0,
                    "rounds": 3, "warmup": 1.0, "servers_override": {}},
}
