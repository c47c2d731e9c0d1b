"""Differential fuzzer: turboworkers._http_parser against gunicorn's reference parser.

One fuzzed input is read as::

    byte 0, 1   settings (one bit per gunicorn setting that changes parsing)
    byte 2      how the request is cut into reads (0: whole, 255: byte by
                byte, else a seed for up to 8 random cuts)
    byte 3      how the application reads the body (gunicorn_oracle.PLANS)
                and which peer / server address the connection has
    the rest    the bytes the client sends (one connection, maybe pipelined)

Our parser serves the connection first, in pull mode (``next_request()``),
through ``gunicorn_oracle.run_turbo``; gunicorn's pure-Python parser is then
fed the very reads ours got (``run_gunicorn``). A case fails (the fuzzer
stops with the input) when:

* our parser raises anything but a ``gunicorn.http.errors`` class (in
  ``next_request()`` or while the body is read), or the harness itself
  breaks (an object not as gunicorn's, a reader that never ends);
* our parser accepts a request that gunicorn does not accept, or accepts it
  with another request line, headers, environ, body, trailers or
  should_close.

With ``FUZZ_STRICT=1`` any difference fails, the error class and message of a
refusal and the 100 Continue writes included (what
tests/test_parser_differential.py asserts). Otherwise a refusal that differs
(ours refuses what gunicorn accepts, or with another error) is printed once
per kind and counted, not fatal.

A hang is bounded by libFuzzer's ``-timeout`` under atheris, and by SIGALRM
in the fallback loop.

Run: ``python tests/fuzz_parser.py [libFuzzer flags] CORPUS_DIR...`` (atheris),
or ``python tests/fuzz_parser.py --fallback SECONDS CORPUS_DIR...`` (a seeded
random-mutation loop with the same checks, for where atheris is missing;
``FUZZ_SEED`` replays one). ``--write-seeds DIR`` writes the seed corpus.
At the end libFuzzer prints ``Done N runs in S second(s)``, the fallback loop
``fuzz_parser: N executions ...``.

Coverage feedback comes from gunicorn's Python parser and the oracle module
(instrumented by atheris): the compiled parser is not built with libFuzzer's
instrumentation, so an input is kept when it takes a new path through the
reference, not through ours.
"""
import os
import random
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

try:
    import atheris
except ImportError:  # the fallback loop needs nothing else
    atheris = None

if atheris is not None and "--fallback" not in sys.argv and "--write-seeds" not in sys.argv:
    # coverage feedback comes from gunicorn's Python parser (the compiled
    # parser is not instrumented): inputs that take new paths through the
    # reference are kept
    with atheris.instrument_imports(include=["gunicorn.http", "gunicorn_oracle"]):
        import gunicorn.http.message  # noqa: F401
        import gunicorn.http.body  # noqa: F401
        import gunicorn.http.parser  # noqa: F401
        import gunicorn.http.unreader  # noqa: F401
        import gunicorn.http.wsgi  # noqa: F401
        import gunicorn_oracle as oracle
else:
    import gunicorn_oracle as oracle

import corpus  # noqa: E402
import gunicorn.http.errors  # noqa: E402
from turboworkers import _ext  # noqa: E402

if _ext.MODE != "accelerated":
    sys.stderr.write("fuzz_parser: the compiled parser is not loaded (%s); nothing to fuzz\n"
                     % (_ext.IMPORT_ERROR or "TURBOWORKERS_NO_EXTENSIONS is set"))
    sys.exit(2)

hp = _ext.http_parser

STRICT = os.environ.get("FUZZ_STRICT", "") not in ("", "0")
MAX_REQUEST = 4096      # bytes of request a case uses (the rest is ignored)
CASE_SECONDS = 10       # the fallback loop's bound on one case

# -- decoding one input -------------------------------------------------------------

#: (bit, setting, value) for the two settings bytes
SETTING_BITS = [
    (0, "limit_request_line", 64),
    (1, "limit_request_fields", 4),
    (2, "limit_request_field_size", 40),
    (3, "permit_unconventional_http_method", True),
    (4, "permit_unconventional_http_version", True),
    (5, "casefold_http_method", True),
    (6, "header_map", "refuse"),
    (7, "header_map", "dangerous"),
    (8, "forwarded_allow_ips", "*"),
    (9, "secure_scheme_headers", {}),
    (10, "forwarder_headers", "SCRIPT_NAME,PATH_INFO,REMOTE_USER"),
    (11, "limit_request_line", 0),
    (12, "limit_request_field_size", 0),
    (13, "limit_request_fields", 0),
    (14, "workers", 2),
]
PEERS = [("127.0.0.1", 5000), ("10.1.2.3", 41234), ("::1", 6000), "", "/run/client.sock"]
SERVERS = [("127.0.0.1", 8000), ("0.0.0.0", 80), ("::", 8443), "/tmp/gunicorn.sock"]


def decode(data):
    """(settings dict, reads, plan, peer, server) of one fuzzed input."""
    head = data[:4].ljust(4, b"\0")
    bits = head[0] | (head[1] << 8)
    cfg = {}
    for bit, name, value in SETTING_BITS:
        if bits & (1 << bit):
            cfg[name] = value
    request = bytes(data[4:4 + MAX_REQUEST])
    cut = head[2]
    if cut == 0 or len(request) < 2:
        reads = [request] if request else []
    elif cut == 255 and len(request) <= 600:
        reads = corpus.split_bytes(request)
    else:
        reads = corpus.split_random(request, random.Random(cut), max_cuts=8)
    plan = oracle.PLANS[head[3] % len(oracle.PLANS)]
    peer = PEERS[(head[3] // len(oracle.PLANS)) % len(PEERS)]
    server = SERVERS[(head[3] // (len(oracle.PLANS) * len(PEERS))) % len(SERVERS)]
    return cfg, reads, plan, peer, server


def encode(request, settings_bits=0, cut=0, plan=0):
    """The input that ``decode`` reads back as ``request`` with these choices."""
    return bytes([settings_bits & 0xFF, settings_bits >> 8, cut, plan]) + request


# -- the checks -----------------------------------------------------------------------

class Disagreement(AssertionError):
    """Our parser did what the reference would not (the fuzzer reports the input)."""


STATS = {"executions": 0, "refusal differences": 0, "gunicorn raised outside its errors": 0,
         "settings refused": 0}
_SEEN = set()


#: the names gunicorn_oracle.describe_error gives gunicorn.http.errors classes
HTTP_ERRORS = frozenset(name for name, obj in vars(gunicorn.http.errors).items()
                        if isinstance(obj, type) and issubclass(obj, BaseException))


def _foreign(error):
    """True when a described error is not a gunicorn.http.errors class."""
    return error is not None and error[0] not in HTTP_ERRORS


def _note(kind, text):
    STATS["refusal differences"] += 1
    if kind not in _SEEN:
        _SEEN.add(kind)
        sys.stderr.write("fuzz_parser: note (not fatal): %s\n" % text)


def check(data):
    """Run both parsers over one input; raise Disagreement on a finding."""
    STATS["executions"] += 1
    cfg, reads, plan, peer, server = decode(data)
    try:
        gcfg = corpus.make_cfg(cfg)
    except Exception:  # a combination gunicorn's validators refuse: not a case
        return
    supported, _why = hp.supports_config(gcfg)
    if supported is not True:
        STATS["settings refused"] += 1
        return
    case = "input %r\nsettings %r, reads %r, plan %r, peer %r, server %r" % (
        bytes(data[4:4 + MAX_REQUEST]), cfg, reads if len(reads) < 40 else "%d reads" % len(reads),
        plan, peer, server)
    try:
        ours, served = oracle.run_turbo(hp, reads, cfg, peer, server, plan)
    except AssertionError as exc:
        raise Disagreement("harness check failed on our parser: %s\n%s" % (exc, case))
    except Exception as exc:
        raise Disagreement("our parser raised outside next_request() and the body: %s: %s\n%s"
                           % (type(exc).__name__, exc, case))
    if ours.end and ours.end[0] == "error" and _foreign(ours.end[1:]):
        raise Disagreement("our parser raised %s: %s (not a gunicorn error)\n%s" % (ours.end[1], ours.end[2], case))
    for n, entry in enumerate(ours.requests):
        if not isinstance(entry, dict) or "request" not in entry:
            raise Disagreement("request %d: %r\n%s" % (n, entry, case))
        if _foreign(entry["body_error"]):
            raise Disagreement("request %d: reading the body raised %r (not a gunicorn error)\n%s"
                               % (n, entry["body_error"], case))
    theirs = oracle.run_gunicorn(served, cfg, peer, server, plan)
    if theirs.end and theirs.end[0] == "error" and _foreign(theirs.end[1:]):
        STATS["gunicorn raised outside its errors"] += 1
    # every request we accepted, gunicorn accepts the same way
    for n, entry in enumerate(ours.requests):
        if n >= len(theirs.requests):
            raise Disagreement("we accepted request %d, gunicorn refused it with %r\nours: %r\n%s"
                               % (n, theirs.end, entry, case))
        other = theirs.requests[n]
        keys = ("request", "environ") if entry["body_error"] is not None else tuple(entry)
        diff = {k: (entry.get(k), other.get(k)) for k in keys if entry.get(k) != other.get(k)}
        if diff:
            raise Disagreement("request %d accepted differently:\n%s\n%s"
                               % (n, oracle.describe_difference(ours, theirs), case))
    if ours != theirs:
        text = "refusals differ: ours %r (%d requests), gunicorn %r (%d requests)\n%s" % (
            ours.end, len(ours.requests), theirs.end, len(theirs.requests), case)
        if STRICT:
            raise Disagreement(text)
        _note((ours.end[:2], theirs.end[:2], len(ours.requests) - len(theirs.requests)), text)
    elif STRICT:
        problems = oracle.check_continues(ours, theirs, plan)
        if problems:
            raise Disagreement("100 Continue: %s\n%s" % ("; ".join(problems), case))


def TestOneInput(data):
    check(data)


def report():
    sys.stderr.write("fuzz_parser: %d executions, %d refusal differences (not fatal), "
                     "%d times gunicorn raised outside its errors, %d settings refused%s\n"
                     % (STATS["executions"], STATS["refusal differences"],
                        STATS["gunicorn raised outside its errors"], STATS["settings refused"],
                        ", strict" if STRICT else ""))
    sys.stderr.flush()


# -- seeds ----------------------------------------------------------------------------

def seed_requests():
    """Small valid and hostile requests the fuzzer starts from."""
    h = b"Host: example.com\r\n"
    reqs = [
        b"GET / HTTP/1.1\r\n" + h + b"\r\n",
        b"GET /a/b%20c?x=1&y=%zz#frag HTTP/1.1\r\n" + h + b"User-Agent: t\r\nAccept: */*\r\n\r\n",
        b"GET http://example.com:8080/p?q HTTP/1.1\r\n" + h + b"\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"HEAD / HTTP/1.1\r\n" + h + b"Connection: close\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\n" + h + b"\r\n",
        b"CONNECT example.com:443 HTTP/1.1\r\n" + h + b"\r\n",
        b"POST /p HTTP/1.1\r\n" + h + b"Content-Length: 5\r\n\r\nhello",
        b"POST /p HTTP/1.1\r\n" + h + b"Content-Length: 12\r\n\r\nline1\nline2\n",
        b"POST /p HTTP/1.1\r\n" + h + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"POST /p HTTP/1.1\r\n" + h + b"Transfer-Encoding: chunked\r\n\r\n"
        b"5;name=val\r\nhello\r\n3;x\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n",
        b"POST /p HTTP/1.1\r\n" + h + b"Transfer-Encoding: gzip, chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
        b"POST /p HTTP/1.1\r\n" + h + b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
        b"GET /1 HTTP/1.1\r\n" + h + b"\r\nGET /2 HTTP/1.1\r\n" + h + b"\r\nGET /3 HTTP/1.0\r\n\r\n",
        b"POST /1 HTTP/1.1\r\n" + h + b"Content-Length: 3\r\n\r\nabcGET /2 HTTP/1.1\r\n" + h + b"\r\n",
        b"GET / HTTP/1.1\r\n" + h + b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\n"
        b"Forwarded: for=1.2.3.4\r\nScript-Name: /app\r\n\r\n",
        b"GET /app/x HTTP/1.1\r\n" + h + b"SCRIPT_NAME: /app\r\nX_Weird: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + h + b"Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"get / HTTP/1.1\r\n" + h + b"\r\n",
        b"GET / HTTP/1.1\r\n" + h + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\n" + h + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\n" + h + b"Content-Length: +3\r\n\r\nabc",
        b"POST / HTTP/1.0\r\n" + h + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\n" + h + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\n" + h + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\n" + h + b"Transfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\n" + h + b"Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\n" + h + b"Transfer-Encoding: chunked\r\n\r\n5;a\rb\r\nhello\r\n0\r\n\r\n",
        b"GET /a\rb HTTP/1.1\r\n" + h + b"\r\n",
        b"GET / HTTP/1.1\r\n" + h + b"X-A: b\x00c\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + h + b"X-A: b\r\n c\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + h + b"X-A : b\r\n\r\n",
        b"GET / HTTP/1.1\nHost: h\n\n",
        b"GET / HTTP/1.1\r\n" + h + b"Expect: 100-foo\r\n\r\n",
        b"GET /" + b"a" * 100 + b" HTTP/1.1\r\n" + h + b"\r\n",
        b"GET / HTTP/1.1\r\n" + h + b"".join(b"X-%d: v\r\n" % i for i in range(8)) + b"\r\n",
        b"GET / HTTP/1.1\r\n" + h + b"X-Long: " + b"v" * 60 + b"\r\n\r\n",
        b"GET / HTTP/9.9\r\n" + h + b"\r\n",
        b"MKCALENDAR /cal HTTP/1.1\r\n" + h + b"\r\n",
        b"\r\nGET / HTTP/1.1\r\n" + h + b"\r\n",
    ]
    return reqs


def write_seeds(directory):
    os.makedirs(directory, exist_ok=True)
    n = 0
    for i, request in enumerate(seed_requests()):
        # the plain input, and the same request with other settings, reads and body plans
        variants = [encode(request), encode(request, 0x0007, 255, 1), encode(request, 0x0138, 7, 4),
                    encode(request, 0x06C0, 200, 9 + 11 * 2)]
        for j, data in enumerate(variants):
            with open(os.path.join(directory, "seed-%03d-%d" % (i, j)), "wb") as f:
                f.write(data)
            n += 1
    return n


# -- the fallback: a seeded random-mutation loop -------------------------------------

def _mutate(rnd, data, pool):
    data = bytearray(data)
    for _ in range(rnd.randint(1, 6)):
        op = rnd.randrange(8)
        pos = rnd.randint(0, len(data))
        if op == 0 and data:                      # flip a byte
            data[min(pos, len(data) - 1)] = rnd.randrange(256)
        elif op == 1:                             # insert an interesting byte
            data[pos:pos] = bytes([rnd.choice(b"\r\n\t \x00\x0b\x0c\x7f\x80\xff:;,-_\"0aF")])
        elif op == 2 and data:                    # delete a run
            del data[pos:pos + rnd.randint(1, 8)]
        elif op == 3 and data:                    # duplicate a run
            a = rnd.randrange(len(data))
            data[pos:pos] = data[a:a + rnd.randint(1, 40)]
        elif op == 4:                             # splice from another input
            other = rnd.choice(pool)
            a = rnd.randrange(len(other) or 1)
            data[pos:pos] = other[a:a + rnd.randint(1, 60)]
        elif op == 5 and len(data) >= 4:          # other settings, cut, plan
            data[rnd.randrange(4)] = rnd.randrange(256)
        elif op == 6:                             # an interesting token
            data[pos:pos] = rnd.choice([b"\r\n", b"chunked", b"Content-Length: ", b"Transfer-Encoding: ",
                                        b"0\r\n\r\n", b"ffffffffffffffff", b"HTTP/1.0", b"%00", b"\r\n "])
        else:                                     # truncate
            del data[pos:]
    return bytes(data)


class _CaseTimeout(Exception):
    pass


def _alarm(_signum, _frame):
    raise _CaseTimeout()


def fallback(seconds, dirs):
    seed = int(os.environ.get("FUZZ_SEED") or random.randrange(1 << 32))
    sys.stderr.write("fuzz_parser: fallback loop, seed %d (FUZZ_SEED=%d replays), %.0f s\n"
                     % (seed, seed, seconds))
    rnd = random.Random(seed)
    pool = []
    for d in dirs:
        if os.path.isdir(d):
            for name in sorted(os.listdir(d)):
                with open(os.path.join(d, name), "rb") as f:
                    pool.append(f.read())
    pool = pool or [encode(r) for r in seed_requests()]
    signal.signal(signal.SIGALRM, _alarm)
    deadline = time.monotonic() + seconds
    for data in pool:
        _run_bounded(data)
    while time.monotonic() < deadline:
        _run_bounded(_mutate(rnd, rnd.choice(pool), pool))
    report()


def _run_bounded(data):
    signal.alarm(CASE_SECONDS)
    try:
        check(data)
    except _CaseTimeout:
        raise Disagreement("a case ran over %d s (hang)\ninput %r" % (CASE_SECONDS, data))
    except Disagreement:
        sys.stderr.write("fuzz_parser: the failing input, whole: %r\n" % (data,))
        raise
    finally:
        signal.alarm(0)


def main(argv):
    if "--write-seeds" in argv:
        n = write_seeds(argv[argv.index("--write-seeds") + 1])
        print("fuzz_parser: %d seed files written" % n)
        return 0
    if "--fallback" in argv or atheris is None:
        if "--fallback" in argv:
            i = argv.index("--fallback")
            seconds = float(argv[i + 1])
            rest = argv[1:i] + argv[i + 2:]
        else:
            sys.stderr.write("fuzz_parser: atheris is not importable; using the fallback loop\n")
            seconds = float(os.environ.get("FUZZ_SECONDS", "600"))
            rest = argv[1:]
        fallback(seconds, [a for a in rest if not a.startswith("-")])
        return 0
    import atexit
    atexit.register(report)
    atheris.Setup(argv, TestOneInput)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
