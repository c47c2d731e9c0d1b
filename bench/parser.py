"""Micro-benchmark: parse one typical browser request, side by side.

    python -m bench.parser [--reps 9] [--target-ms 60] [--out bench/results/parser.json]

The request is a ~700-byte GET as a browser sends it (a dozen headers, a
~250-byte cookie). Each contender turns it into what it produces:

- ``h1c.parse_request``: gunicorn_h1c, the method/path/version and a list of
  header tuples only (no environ);
- ``h1c.parse_to_wsgi_environ``: gunicorn_h1c's own environ builder (not the
  environ gunicorn builds: no wsgi.input, no gunicorn policy checks);
- ``httptools``: ``HttpRequestParser`` with callbacks collecting the URL and
  header tuples (no environ);
- ``gunicorn (python)`` / ``gunicorn (h1c)``: gunicorn's ``Request`` with its
  pure-Python parser or with gunicorn_h1c, then ``gunicorn.http.wsgi.create``:
  the complete environ a gunicorn worker hands to the application;
- ``turboworkers``: ``turboworkers._http_parser.RequestParser``, the complete
  environ, once with a new parser per request and once with one parser fed
  the same request again and again (a keep-alive connection). The parser
  gives a header of low variety (Host, User-Agent, Accept...) the same str
  object as last time when its bytes are the same, as they are here; a third
  run ("unseen values") parses variants of the request in which those values
  always differ from the last, to show what that sharing is worth.

Timing: ``time.perf_counter_ns`` around a loop of N calls, N chosen so that
one repetition lasts about ``--target-ms``; the repetitions of all
contenders are interleaved (A B C, A B C, ...). Reported per call: the best
and the median repetition, and calls per second at the median. Ratios, of
the medians and of the bests: how many times slower than turboworkers (new
parser per request) each contender is.
"""
import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PEER = ("127.0.0.1", 5000)
SERVER = ("127.0.0.1", 8000)

REQUEST = (
    b"GET /articles/2024/42?page=2 HTTP/1.1\r\n"
    b"Host: www.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: text/html,application/xhtml+xml,*/*;q=0.8\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Referer: https://www.example.com/articles/\r\n"
    b"Connection: keep-alive\r\n"
    b"Cookie: sessionid=8f3b2c1d9e7a4f6b0c5d2e8a1b7f3c9d; csrftoken=Qm9vZ2llV29vZ2llQm9vZ2ll"
    b"V29vZ2llQm9v; theme=dark; lang=en-US; _ga=GA1.2.1234567890.1700000000; "
    b"_gid=GA1.2.987654321.1700000000; consent=analytics%3Dtrue%26ads%3Dfalse; cart=3f2a9c; "
    b"tz=Europe%2FBerlin\r\n"
    b"Upgrade-Insecure-Requests: 1\r\n"
    b"Sec-Fetch-Dest: document\r\n"
    b"Sec-Fetch-Mode: navigate\r\n"
    b"Sec-Fetch-Site: same-origin\r\n"
    b"Cache-Control: max-age=0\r\n"
    b"\r\n"
)
N_HEADERS = REQUEST.count(b"\r\n") - 2


class _FakeSocket:
    """What wsgi.create may touch: nothing is sent for a request without Expect."""

    def send(self, data):
        return len(data)

    def sendall(self, data):
        return None


# ------------------------------------------------------------------ contenders
# Each factory returns (callable doing one parse, check(result) -> None or raise).

def make_h1c_headers():
    import gunicorn_h1c
    parse = gunicorn_h1c.parse_request

    def one():
        return parse(REQUEST)

    def check(res):
        assert len(res["headers"]) == N_HEADERS and res["consumed"] == len(REQUEST), res
    return one, check


def make_h1c_environ():
    import gunicorn_h1c
    parse = gunicorn_h1c.parse_to_wsgi_environ

    def one():
        return parse(REQUEST, SERVER, PEER)

    def check(env):
        assert env["HTTP_COOKIE"].startswith("sessionid="), env
    return one, check


def make_httptools(reuse):
    import httptools

    class Collector:
        __slots__ = ("url", "headers", "done")

        def __init__(self):
            self.url = None
            self.headers = []
            self.done = False

        def on_url(self, url):
            self.url = url

        def on_header(self, name, value):
            self.headers.append((name, value))

        def on_message_complete(self):
            self.done = True

    if reuse:
        coll = Collector()
        parser = httptools.HttpRequestParser(coll)

        def one():
            coll.headers = []
            parser.feed_data(REQUEST)
            return coll
    else:
        def one():
            coll = Collector()
            httptools.HttpRequestParser(coll).feed_data(REQUEST)
            return coll

    def check(coll):
        assert coll.done and len(coll.headers) == N_HEADERS and coll.url.startswith(b"/articles"), \
            (coll.done, coll.headers)
    return one, check


def make_gunicorn(mode):
    from gunicorn.config import Config
    from gunicorn.http.message import Request
    from gunicorn.http.unreader import IterUnreader
    from gunicorn.http.wsgi import create

    cfg = Config()
    cfg.set("http_parser", mode)
    sock = _FakeSocket()

    def one():
        req = Request(cfg, IterUnreader([REQUEST]), PEER)
        resp, environ = create(req, sock, PEER, SERVER, cfg)
        return environ

    def check(env):
        assert env["HTTP_COOKIE"].startswith("sessionid=") and env["PATH_INFO"] == \
            "/articles/2024/42", env
    return one, check


def unseen_value_requests(n=64):
    """``n`` variants of REQUEST in which every header but Cookie and Referer
    has a value that differs from the previous variant's (its last characters
    replaced by a counter, the length kept)."""
    head, _, _ = REQUEST.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    out = []
    for i in range(n):
        new = [lines[0]]
        for line in lines[1:]:
            name, _, value = line.partition(b": ")
            if name not in (b"Cookie", b"Referer"):
                k = min(5, len(value))
                value = value[:-k] + (b"%05d" % i)[-k:]
            new.append(name + b": " + value)
        out.append(b"\r\n".join(new) + b"\r\n\r\n")
    return out


def make_turbo(reuse, unseen_values=False):
    from gunicorn.config import Config
    from turboworkers._http_parser import ParserConfig, RequestParser

    config = ParserConfig(Config())
    if unseen_values:
        # what the sharing of header values between requests is worth: here
        # it never finds the bytes it saw last
        parser = RequestParser(config, None, PEER, SERVER)
        variants = unseen_value_requests()
        state = [0]

        def one():
            i = state[0] = (state[0] + 1) % len(variants)
            return parser.parse(variants[i])
    elif reuse:
        parser = RequestParser(config, None, PEER, SERVER)

        def one():
            return parser.parse(REQUEST)
    else:
        def one():
            return RequestParser(config, None, PEER, SERVER).parse(REQUEST)

    def check(env):
        assert env["HTTP_COOKIE"].startswith("sessionid=") and env["PATH_INFO"] == \
            "/articles/2024/42", env
    return one, check


CONTENDERS = [
    # name, what it produces, factory
    ("turboworkers (new parser per request)", "complete environ", lambda: make_turbo(False)),
    ("turboworkers (one parser, keep-alive)", "complete environ", lambda: make_turbo(True)),
    ("turboworkers (keep-alive, unseen values)", "complete environ",
     lambda: make_turbo(True, unseen_values=True)),
    ("gunicorn Request+wsgi.create (python parser)", "complete environ",
     lambda: make_gunicorn("python")),
    ("gunicorn Request+wsgi.create (h1c parser)", "complete environ",
     lambda: make_gunicorn("fast")),
    ("gunicorn_h1c.parse_request", "header tuples only", make_h1c_headers),
    ("gunicorn_h1c.parse_to_wsgi_environ", "h1c's own environ (partial)", make_h1c_environ),
    ("httptools (new parser per request)", "header tuples only", lambda: make_httptools(False)),
    ("httptools (one parser, keep-alive)", "header tuples only", lambda: make_httptools(True)),
]
BASELINE = CONTENDERS[0][0]


def _loop(fn, n):
    gc.collect()
    t0 = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return time.perf_counter_ns() - t0


def calibrate(fn, target_ns):
    n = 100
    while True:
        elapsed = _loop(fn, n)
        if elapsed >= target_ns / 4 or n >= 10_000_000:
            return max(100, int(n * target_ns / max(elapsed, 1)))
        n *= 4


def measure(reps=9, target_ms=60.0, log=print):
    ready, missing = [], {}
    for name, produces, factory in CONTENDERS:
        try:
            fn, check = factory()
            check(fn())
            check(fn())      # the second call: a reused parser must still be right
        except Exception as exc:  # noqa: BLE001 - a contender that fails is reported, not fatal
            missing[name] = "%s: %s" % (type(exc).__name__, str(exc).splitlines()[0][:200]
                                        if str(exc) else "")
            log("  not measured: %s (%s)" % (name, missing[name]))
            continue
        ready.append((name, produces, fn))
    counts = {name: calibrate(fn, target_ms * 1e6) for name, _, fn in ready}
    samples = {name: [] for name, _, _ in ready}
    for rep in range(reps):
        for name, _, fn in ready:                       # interleaved
            samples[name].append(_loop(fn, counts[name]) / counts[name] / 1000.0)
        log("  repetition %d/%d done" % (rep + 1, reps))
    rows = []
    base = statistics.median(samples[BASELINE]) if BASELINE in samples else None
    base_best = min(samples[BASELINE]) if BASELINE in samples else None
    for name, produces, _ in ready:
        us = samples[name]
        med = statistics.median(us)
        rows.append({
            "name": name, "produces": produces, "calls_per_rep": counts[name],
            "best_us": min(us), "median_us": med, "samples_us": us,
            "per_second_at_median": 1e6 / med,
            "times_turbo_fresh": (med / base) if base else None,
            "times_turbo_fresh_best": (min(us) / base_best) if base_best else None,
        })
    return rows, missing


def _versions():
    out = {"python": platform.python_version()}
    for mod in ("gunicorn", "gunicorn_h1c", "httptools", "turboworkers"):
        try:
            from importlib import metadata
            out[mod] = metadata.version(mod)
        except Exception:  # noqa: BLE001
            out[mod] = None
    try:
        from turboworkers import _ext
        out["turboworkers_mode"] = _ext.MODE
    except Exception:  # noqa: BLE001
        out["turboworkers_mode"] = None
    return out


def table(rows, missing):
    lines = ["%-46s %-28s %9s %9s %12s %9s %9s" % (
        "parser", "produces", "best us", "median us", "calls/s", "vs turbo", "(best)")]
    for r in rows:
        lines.append("%-46s %-28s %9.3f %9.3f %12.0f %9s %9s" % (
            r["name"], r["produces"], r["best_us"], r["median_us"], r["per_second_at_median"],
            "%.2fx" % r["times_turbo_fresh"] if r["times_turbo_fresh"] else "-",
            "%.2fx" % r["times_turbo_fresh_best"] if r["times_turbo_fresh_best"] else "-"))
    for name, reason in missing.items():
        lines.append("%-46s not measured: %s" % (name, reason))
    return "\n".join(lines)


def markdown(result):
    """parser.md: the same table, for people."""
    v = result["versions"]
    lines = [
        "# HTTP request parsing, side by side",
        "",
        "- date: %s; `nproc`: %s; kernel: %s" % (result["date"], result["nproc"], result["kernel"]),
        "- Python %s, gunicorn %s, gunicorn_h1c %s, httptools %s, turboworkers %s (mode: %s)" % (
            v.get("python"), v.get("gunicorn"), v.get("gunicorn_h1c"), v.get("httptools"),
            v.get("turboworkers"), v.get("turboworkers_mode")),
        "- request: a %d-byte browser GET with %d headers (see `REQUEST` in bench/parser.py); "
        "%d interleaved repetitions of about %g ms each; command: `python -m bench.parser`" % (
            result["request_bytes"], result["headers"], result["reps"], result["target_ms"]),
        "",
        "| parser | produces | best µs | median µs | calls/s (median) | time vs turboworkers "
        "(median) | (best) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["results"]:
        lines.append("| %s | %s | %.3f | %.3f | %.0f | %s | %s |" % (
            r["name"], r["produces"], r["best_us"], r["median_us"], r["per_second_at_median"],
            "%.2f×" % r["times_turbo_fresh"] if r["times_turbo_fresh"] else "–",
            "%.2f×" % r["times_turbo_fresh_best"] if r["times_turbo_fresh_best"] else "–"))
    for name, reason in result["not_measured"].items():
        lines.append("| %s | not measured: %s | | | | | |" % (name, reason.replace("|", "/")))
    lines += ["", "\"time vs turboworkers\": time per call divided by turboworkers' with a new "
              "parser per request; above 1 is slower. \"header tuples only\" contenders do less "
              "work than the ones producing a complete environ.", ""]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.parser", description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--target-ms", type=float, default=60.0,
                    help="duration of one repetition of one contender")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "parser.json"))
    args = ap.parse_args(argv)
    if args.reps < 1 or args.target_ms <= 0:
        ap.error("--reps and --target-ms must be positive")
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    print("request: %d bytes, %d headers" % (len(REQUEST), N_HEADERS),
          flush=True)
    rows, missing = measure(args.reps, args.target_ms,
                            log=lambda m: print(m, flush=True))
    print()
    print(table(rows, missing))
    print("\n'vs turbo': time per call / turboworkers' (new parser per request), of the medians "
          "and of the best repetitions; above 1 is slower than turboworkers.")
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "nproc": len(os.sched_getaffinity(0)), "kernel": platform.release(),
        "versions": _versions(), "request_bytes": len(REQUEST),
        "request": REQUEST.decode("latin-1"), "headers": N_HEADERS,
        "reps": args.reps, "target_ms": args.target_ms,
        "results": rows, "not_measured": missing,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print("wrote %s" % args.out)
    md_path = os.path.splitext(args.out)[0] + ".md"
    with open(md_path, "w") as f:
        f.write(markdown(result))
    print("wrote %s" % md_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
