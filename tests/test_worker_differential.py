"""Compatibility by difference: the same bytes to stock gunicorn and to SyncMutexWorker.

Each case is sent over a raw TCP connection to two gunicorn masters started
with the same app (``apps:app``, which echoes the request environ and body as
sorted JSON for any path outside ``/_/``) and the same settings:

* the oracle: ``-k sync --http-parser python`` (gunicorn's own worker and
  its pure-Python parser);
* ours: ``-k turboworkers.SyncMutexWorker``. In accelerated mode it runs with
  ``http_parser = auto`` (the default), so the Cython parser and response
  writer answer; with ``--http-parser python`` it would fall back to
  gunicorn's code and compare gunicorn with itself. In pure mode it gets
  ``--http-parser python`` like the oracle: its HTTP code is then gunicorn's
  own by design, and ``auto`` would pick gunicorn_h1c, whose differences from
  the Python parser are gunicorn's business, not ours.

The client sends the request, half-closes (so a truncated request ends in
EOF instead of a wait), and reads until the server closes, within a deadline.
The two answers must be equal byte for byte once the values of ``Date`` and
``Server`` are masked and ``SERVER_PORT`` (each server's own port, same number
of digits) is written as ``PORT`` in the echoed environ; whether the server
closed, or the exchange ended on a socket error, must be equal too.

Cases: every file of the gunicorn request corpus (each with the settings
expected.json gives it), and the cases of ``OWN_CASES`` below. One documented
difference is asserted as such: for ``Expect: 100-continue``, gunicorn sends
``100 Continue`` as soon as it has parsed the head; the Cython core sends it
when the application first reads the body. An application that reads the
body gets identical bytes; one that never reads it gets no ``100 Continue``
from us (accelerated mode only).
"""
import json
import re

import pytest

import corpus
import servers
from turboworkers import _ext

ACCELERATED = _ext.MODE == "accelerated"
# same settings on both sides; a short timeout keeps stock's idle wait short
COMMON_ARGS = ["--timeout", "10", "--graceful-timeout", "5"]
STOCK_ARGS = ["--http-parser", "python"]
OURS_ARGS = [] if ACCELERATED else ["--http-parser", "python"]
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


# -- the two servers per group of settings ------------------------------------

def config_text(cfg):
    """A gunicorn config file setting ``cfg`` (expected.json's form of settings)."""
    lines = []
    for name, value in sorted(cfg.items()):
        if isinstance(value, list):  # forwarded_allow_ips and the like
            value = ",".join(value)
        lines.append("%s = %r" % (name, value))
    return "\n".join(lines) + "\n"


class Pair:
    def __init__(self, stock, ours):
        self.stock = stock
        self.ours = ours

    def exchange(self, steps):
        """The same steps on a new connection to each server: (stock, ours) Exchanges."""
        results = []
        for srv in (self.stock, self.ours):
            results.append(servers.raw_exchange(lambda: srv.connect(timeout=20.0), steps,
                                                timeout=20.0))
        return results

    def logs(self):
        return "---- stock log ----\n%s\n---- ours log ----\n%s" % (
            self.stock.log_tail(25), self.ours.log_tail(25))


class Pairs:
    """One stock/ours pair per group of settings, started when first needed.

    Cases are ordered by settings, so a pair serves its group and is then
    sent SIGTERM; its shutdown overlaps with the next pair's start, and the
    fixture's teardown reaps them all.
    """

    def __init__(self, factory):
        self.factory = factory
        self.key = None
        self.pair = None

    def get(self, cfg):
        key = json.dumps(cfg, sort_keys=True)
        if key != self.key:
            if self.pair is not None:
                self.pair.stock.terminate()
                self.pair.ours.terminate()
                self.pair = None
            conf = config_text(cfg)
            stock = self.factory(name="stock", worker_class=servers.STOCK_SYNC,
                                 args=COMMON_ARGS + STOCK_ARGS, config=conf, wait=False)
            ours = self.factory(name="ours", worker_class=servers.TURBO_SYNC,
                                args=COMMON_ARGS + OURS_ARGS, config=conf, wait=False)
            stock.wait_ready()
            ours.wait_ready()
            assert len(str(stock.port)) == len(str(ours.port)), \
                "ports of different length would change Content-Length"
            self.key, self.pair = key, Pair(stock, ours)
        return self.pair


@pytest.fixture(scope="module")
def pairs(module_gunicorn_server):
    return Pairs(module_gunicorn_server)


# -- comparing answers --------------------------------------------------------

_DATE = re.compile(rb"(\r\nDate:)[^\r\n]*")
_SERVER = re.compile(rb"(\r\nServer:)[^\r\n]*")


def normalize(data, port):
    data = _DATE.sub(rb"\1 <date>", data)
    data = _SERVER.sub(rb"\1 <server>", data)
    return data.replace(b'"SERVER_PORT": "%d"' % port, b'"SERVER_PORT": "PORT"')


def outcome(ex, srv):
    return {"data": normalize(ex.data, srv.port), "closed": ex.closed, "error": ex.error}


def show(data, limit=1500):
    text = data.decode("latin-1")
    return text if len(text) <= limit else text[:limit] + "... (%d bytes)" % len(data)


def assert_same(pair, stock_ex, ours_ex, label):
    a, b = outcome(stock_ex, pair.stock), outcome(ours_ex, pair.ours)
    if a != b:
        # the first differing byte, to read the diff quickly
        n = next((i for i, (x, y) in enumerate(zip(a["data"], b["data"])) if x != y),
                 min(len(a["data"]), len(b["data"])))
        pytest.fail("%s: stock gunicorn and SyncMutexWorker differ (first at byte %d)\n"
                    "stock: closed=%s error=%s\n%s\n\nours: closed=%s error=%s\n%s\n\n%s"
                    % (label, n, a["closed"], a["error"], show(a["data"]),
                       b["closed"], b["error"], show(b["data"]), pair.logs()))
    # an exchange that ran into the deadline proves nothing about equality
    assert a["closed"], "%s: the server never closed the connection\n%s" % (label, pair.logs())


# -- the gunicorn corpus ------------------------------------------------------

_missing = corpus.available()
EXPECTED = {} if _missing else corpus.load_expected()
CORPUS_NAMES = [] if _missing else sorted(
    corpus.case_names(), key=lambda n: (json.dumps(EXPECTED[n]["cfg"], sort_keys=True) != "{}",
                                        json.dumps(EXPECTED[n]["cfg"], sort_keys=True), n))


@pytest.mark.skipif(bool(_missing), reason=_missing or "")
@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_corpus(pairs, name):
    pair = pairs.get(EXPECTED[name]["cfg"])
    data = corpus.load_case(name)
    stock, ours = pair.exchange([("send", data), ("shut",)])
    assert_same(pair, stock, ours, name)
    # a sanity check of the harness: the oracle answered. (Whether it accepted
    # the request is the installed gunicorn's decision, which expected.json
    # does not always record: see test_parser_corpus.py.)
    head = stock.data.split(b"\r\n", 1)[0]
    if EXPECTED[name].get("error") == "NoMoreData":
        assert stock.data == b"", (name, stock.data[:200])
    elif EXPECTED[name]["expect"] == "ok":
        assert re.match(rb"HTTP/1\.[01] [245]\d\d ", head), (name, head)
    else:
        assert re.match(rb"HTTP/1\.1 [45]\d\d ", head), (name, head)


# -- our own cases ------------------------------------------------------------

H = b"Host: example.com\r\n"
MB = 1 << 20


def _chunked(payload, size):
    out = bytearray()
    for i in range(0, len(payload), size):
        piece = payload[i:i + size]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    return bytes(out) + b"0\r\n\r\n"


def _big(n):
    return (b"0123456789abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKLMNOPQRSTUVWXYZ\n" * (n // 64 + 1))[:n]


def post(path, body, extra=b"", version=b"1.1"):
    return (b"POST " + path + b" HTTP/" + version + b"\r\n" + H + extra
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def get(path, extra=b"", version=b"1.1", method=b"GET"):
    return method + b" " + path + b" HTTP/" + version + b"\r\n" + H + extra + b"\r\n"


CHUNKED = b"Transfer-Encoding: chunked\r\n"
LINES = b"first line\nsecond line\r\nthird\n\nno newline at the end"

OWN_CASES = {
    # plain requests and versions
    "get": get(b"/path/to?x=1&y=two"),
    "get-http10-no-host": b"GET /old HTTP/1.0\r\n\r\n",
    "get-http10-keepalive": get(b"/ka", b"Connection: keep-alive\r\n", version=b"1.0"),
    "get-http11-no-host": b"GET /nohost HTTP/1.1\r\n\r\n",
    "get-connection-close": get(b"/c", b"Connection: close\r\n"),
    "get-empty-query": get(b"/q?"),
    "options-asterisk": b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n",
    "delete-with-body": b"DELETE /d HTTP/1.1\r\n" + H + b"Content-Length: 4\r\n\r\ngone",
    "custom-method": get(b"/m", method=b"PURGE"),
    "lowercase-method": get(b"/lower", method=b"get"),
    "mixed-case-method": get(b"/mixed", method=b"Get"),
    # targets
    "absolute-form": b"GET http://example.com:8080/a/b?c=d HTTP/1.1\r\n" + H + b"\r\n",
    "absolute-form-https": b"GET https://other.example/x HTTP/1.1\r\n" + H + b"\r\n",
    "absolute-form-no-path": b"GET http://example.com HTTP/1.1\r\n" + H + b"\r\n",
    "percent-encoded": get(b"/a%20b/%2F%c3%A9/%7e?q=%41%20&r=%2"),
    "percent-invalid": get(b"/bad%zz%/x"),
    "double-slash": get(b"//double//slash"),
    "dot-segments": get(b"/a/../b/./c"),
    "fragment": get(b"/frag#section"),
    "raw-utf8-path": get(b"/caf\xc3\xa9"),
    "long-uri-under-limit": get(b"/" + b"a" * 4000),
    # headers
    "duplicate-headers": get(b"/dup", b"X-Dup: a\r\nX-Dup: b\r\nCookie: c=1\r\nCookie: d=2\r\n"),
    "duplicate-host": b"GET /h HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
    "underscore-header": get(b"/u", b"X_Forwarded_For: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\n"
                                  b"My_Header: x\r\n"),
    "header-utf8-value": get(b"/v", b"X-Name: caf\xc3\xa9\r\n"),
    "header-empty-value": get(b"/e", b"X-Empty:\r\nX-Space: \r\n"),
    "header-value-spaces": get(b"/s", b"X-Pad:   padded value  \t\r\n"),
    "header-case": get(b"/c", b"x-lower: 1\r\nX-UPPER: 2\r\ncOnTeNt-TyPe: text/odd\r\n"),
    "content-type": post(b"/ct", b"a=1&b=2", b"Content-Type: application/x-www-form-urlencoded\r\n"),
    "host-with-port": b"GET /hp HTTP/1.1\r\nHost: example.com:8443\r\n\r\n",
    "host-ipv6": b"GET /v6 HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
    "forwarded-proto": get(b"/fp", b"X-Forwarded-Proto: https\r\n"),
    "forwarded-ssl": get(b"/fs", b"X-Forwarded-Ssl: on\r\n"),
    "scheme-headers-conflict": get(b"/sc", b"X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n"),
    "script-name-header": get(b"/app/page", b"SCRIPT_NAME: /app\r\n"),
    "script-name-header-dash": get(b"/app/page", b"Script-Name: /app\r\n"),
    "upgrade-header": get(b"/up", b"Connection: Upgrade\r\nUpgrade: websocket\r\n"),
    "te-header-in-request": get(b"/te", b"TE: trailers\r\n"),
    "leading-crlf": b"\r\n" + get(b"/lead"),
    "lf-only-lines": b"GET /lf HTTP/1.1\nHost: example.com\n\n",
    # bodies
    "post-content-length": post(b"/p", b"hello body"),
    "post-empty": post(b"/p0", b""),
    "post-binary": post(b"/bin", bytes(range(256))),
    "post-chunked": b"POST /ch HTTP/1.1\r\n" + H + CHUNKED + b"\r\n" + _chunked(b"hello chunked world", 5),
    "post-chunked-ext-trailers": (b"POST /tr HTTP/1.1\r\n" + H + CHUNKED + b"\r\n"
                                  b"5;name=value\r\nhello\r\n6;flag\r\n world\r\n"
                                  b"0\r\nX-Trailer: t1\r\nX-Other: t2\r\n\r\n"),
    "post-chunked-uppercase-hex": (b"POST /hex HTTP/1.1\r\n" + H + CHUNKED + b"\r\n"
                                   b"A\r\n0123456789\r\n0\r\n\r\n"),
    "post-1mb-content-length": post(b"/big", _big(MB)),
    "post-1mb-chunked": b"POST /bigch HTTP/1.1\r\n" + H + CHUNKED + b"\r\n" + _chunked(_big(MB), 65531),
    "post-1mb-digest": post(b"/_/digest", _big(MB)),
    "post-http10-body": post(b"/p10", b"old body", version=b"1.0"),
    "readline-cl": post(b"/_/readline", LINES),
    "readline-chunked": b"POST /_/readline HTTP/1.1\r\n" + H + CHUNKED + b"\r\n" + _chunked(LINES, 7),
    "readline-sized": post(b"/_/readline?size=4", LINES),
    "iter-cl": post(b"/_/iter", LINES),
    "iter-chunked": b"POST /_/iter HTTP/1.1\r\n" + H + CHUNKED + b"\r\n" + _chunked(LINES, 3),
    "read-n": post(b"/_/read_n?n=5", LINES),
    "read-n-chunked": b"POST /_/read_n?n=3 HTTP/1.1\r\n" + H + CHUNKED + b"\r\n" + _chunked(LINES, 4),
    "body-not-read": post(b"/_/noread", b"ignored body"),
    "body-not-read-chunked": b"POST /_/noread HTTP/1.1\r\n" + H + CHUNKED + b"\r\n" + _chunked(b"x" * 50, 9),
    "truncated-body": b"POST /short HTTP/1.1\r\n" + H + b"Content-Length: 10\r\n\r\nabc",
    "truncated-chunked": b"POST /shortch HTTP/1.1\r\n" + H + CHUNKED + b"\r\n5\r\nhel",
    # pipelining: sync answers the first request and closes
    "pipelined-get-get": get(b"/one") + get(b"/two"),
    "pipelined-post-get": post(b"/one", b"body one") + get(b"/two"),
    "pipelined-chunked-get": (b"POST /one HTTP/1.1\r\n" + H + CHUNKED + b"\r\n" + _chunked(b"abc", 2)
                              + get(b"/two")),
    "pipelined-head-get": get(b"/one", method=b"HEAD") + get(b"/two"),
    "pipelined-three": get(b"/one") + get(b"/two") + get(b"/three"),
    # responses
    "head": get(b"/head", method=b"HEAD"),
    "head-stream": get(b"/_/stream", method=b"HEAD"),
    "head-file": get(b"/_/file?size=1000", method=b"HEAD"),
    "head-http10": get(b"/head10", method=b"HEAD", version=b"1.0"),
    "hello": get(b"/_/hello"),
    "stream": get(b"/_/stream?n=7"),
    "stream-http10": get(b"/_/stream?n=3", version=b"1.0"),
    "write-callable": get(b"/_/write"),
    "write-callable-http10": get(b"/_/write", version=b"1.0"),
    "status-204": get(b"/_/status?code=204"),
    "status-304": get(b"/_/status?code=304"),
    "status-204-with-body": get(b"/_/status?code=204&body=1"),
    "status-304-with-body": get(b"/_/status?code=304&body=1"),
    "status-404": get(b"/_/status?code=404&body=1"),
    "file": get(b"/_/file?size=300000"),
    "file-no-length": get(b"/_/file?size=70000&length=0"),
    "file-http10-no-length": get(b"/_/file?size=5000&length=0", version=b"1.0"),
    "file-empty": get(b"/_/file?size=0"),
    "big-response": get(b"/_/big"),
    "multi-headers": get(b"/_/multi-headers"),
    # application errors
    "raise-before": get(b"/_/raise-before"),
    "raise-after-start": get(b"/_/raise-after-start"),
    "raise-mid-body": get(b"/_/raise-mid-body"),
    "bad-header-crlf": get(b"/_/bad-header?kind=crlf"),
    "bad-header-lf": get(b"/_/bad-header?kind=lf"),
    "bad-header-cr": get(b"/_/bad-header?kind=cr"),
    "bad-header-name-crlf": get(b"/_/bad-header?kind=name"),
    "bad-header-name-space": get(b"/_/bad-header?kind=space"),
    # malformed requests, one per error class of gunicorn.http.errors (and then some)
    "empty-connection": b"",
    "truncated-head": b"GET /trunc HTTP/1.1\r\nHost: exa",
    "invalid-request-line": b"GARBAGE\r\n\r\n",
    "invalid-request-line-spaces": b"GET  /two-spaces HTTP/1.1\r\n" + H + b"\r\n",
    "invalid-method-chars": get(b"/m", method=b"G@T"),
    "invalid-method-short": get(b"/m", method=b"GE"),
    "invalid-http-version": get(b"/v", version=b"1.2"),
    "invalid-http-version-2": get(b"/v", version=b"2.0"),
    "invalid-http-version-text": b"GET /v HTTP/x.y\r\n" + H + b"\r\n",
    "invalid-header-name-space": get(b"/h", b"Bad Header: x\r\n"),
    "invalid-header-name-colon-space": get(b"/h", b"Host : x\r\n"),
    "invalid-header-no-colon": get(b"/h", b"NoColonHere\r\n"),
    "invalid-header-value-ctl": get(b"/h", b"X-Ctl: a\x01b\r\n"),
    "invalid-header-value-nul": get(b"/h", b"X-Nul: a\x00b\r\n"),
    "obsolete-folding": get(b"/fold", b"X-Folded: a\r\n  continued\r\n"),
    "limit-request-line": get(b"/" + b"a" * 5000),
    "limit-request-headers-count": get(b"/many", b"".join(b"X-H%d: v\r\n" % i for i in range(101))),
    "limit-request-header-size": get(b"/long", b"X-Long: " + b"v" * 9000 + b"\r\n"),
    "unsupported-transfer-coding": b"POST /te HTTP/1.1\r\n" + H + b"Transfer-Encoding: xyz\r\n\r\n",
    "transfer-coding-gzip-only": b"POST /te HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n",
    "transfer-coding-gzip-chunked": (b"POST /te HTTP/1.1\r\n" + H
                                     + b"Transfer-Encoding: gzip, chunked\r\n\r\n"
                                     + _chunked(b"not really gzip", 4)),
    "transfer-coding-chunked-not-last": (b"POST /te HTTP/1.1\r\n" + H
                                         + b"Transfer-Encoding: chunked, gzip\r\n\r\n"),
    "transfer-coding-identity": (b"POST /te HTTP/1.1\r\n" + H
                                 + b"Transfer-Encoding: identity\r\nContent-Length: 2\r\n\r\nok"),
    "transfer-coding-http10": (b"POST /te HTTP/1.0\r\n" + H + CHUNKED + b"\r\n"
                               + _chunked(b"abc", 3)),
    "content-length-and-chunked": (b"POST /smuggle HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n"
                                   + CHUNKED + b"\r\n" + _chunked(b"abc", 3)),
    "content-length-duplicate-differ": (b"POST /cl HTTP/1.1\r\n" + H
                                        + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
    "content-length-duplicate-same": (b"POST /cl HTTP/1.1\r\n" + H
                                      + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc"),
    "content-length-negative": b"POST /cl HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n",
    "content-length-plus": b"POST /cl HTTP/1.1\r\n" + H + b"Content-Length: +3\r\n\r\nabc",
    "content-length-not-number": b"POST /cl HTTP/1.1\r\n" + H + b"Content-Length: 3x\r\n\r\nabc",
    "content-length-huge": (b"POST /cl HTTP/1.1\r\n" + H
                            + b"Content-Length: 99999999999999999999999\r\n\r\nabc"),
    "invalid-chunk-size": b"POST /c HTTP/1.1\r\n" + H + CHUNKED + b"\r\nzz\r\nabc\r\n0\r\n\r\n",
    "invalid-chunk-size-huge": (b"POST /c HTTP/1.1\r\n" + H + CHUNKED
                                + b"\r\nffffffffffffffffffff\r\nabc\r\n0\r\n\r\n"),
    "chunk-missing-terminator": b"POST /c HTTP/1.1\r\n" + H + CHUNKED + b"\r\n3\r\nabcX\r\n0\r\n\r\n",
    "invalid-chunk-extension": b"POST /c HTTP/1.1\r\n" + H + CHUNKED + b"\r\n3;\x01\r\nabc\r\n0\r\n\r\n",
    "expectation-failed": post(b"/x", b"abc", b"Expect: something-else\r\n"),
    "expect-http10-ignored": post(b"/x", b"abc", b"Expect: 100-continue\r\n", version=b"1.0"),
    "expect-100-all-at-once": post(b"/x", b"abc", b"Expect: 100-continue\r\n"),
    "expect-100-uppercase-all-at-once": post(b"/x", b"abc", b"Expect: 100-CONTINUE\r\n"),
    "expect-100-bad-chunk": (b"POST /x HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\n" + CHUNKED
                             + b"\r\nzz\r\n"),
}


@pytest.mark.parametrize("name", sorted(OWN_CASES))
def test_own_case(pairs, name):
    pair = pairs.get({})
    stock, ours = pair.exchange([("send", OWN_CASES[name]), ("shut",)])
    assert_same(pair, stock, ours, name)


# Cases that need the client to wait: the body is sent only once 100 Continue came.
def _expect_head(path, length, extra=b""):
    return (b"POST " + path + b" HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\n" + extra
            + b"Content-Length: %d\r\n\r\n" % length)


EXPECT_WAIT_CASES = {
    "expect-100-wait-echo": (_expect_head(b"/wait", 11), b"hello world"),
    "expect-100-wait-1mb": (_expect_head(b"/_/digest", MB), _big(MB)),
    "expect-100-wait-readline": (_expect_head(b"/_/readline", len(LINES)), LINES),
    "expect-100-wait-chunked": ((b"POST /wait HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\n"
                                 + CHUNKED + b"\r\n"), _chunked(b"chunked after continue", 6)),
}


@pytest.mark.parametrize("name", sorted(EXPECT_WAIT_CASES))
def test_expect_100_continue_client_waits(pairs, name):
    """The client sends the body only after ``100 Continue``: identical bytes."""
    head, body = EXPECT_WAIT_CASES[name]
    pair = pairs.get({})
    steps = [("send", head), ("expect", CONTINUE), ("send", body), ("shut",)]
    stock, ours = pair.exchange(steps)
    assert stock.data.startswith(CONTINUE + b"HTTP/1.1 200 OK\r\n"), show(stock.data)
    assert_same(pair, stock, ours, name)


@pytest.mark.parametrize("body", [None, b"12345"], ids=["client-waits", "body-sent-at-once"])
@pytest.mark.parametrize("path", [b"/_/noread", b"/_/hello", b"/_/status?code=204",
                                  b"/_/file?size=1000"])
def test_expect_100_continue_app_never_reads(pairs, path, body):
    """The documented difference: no ``100 Continue`` when the app never reads the body.

    gunicorn answers ``100 Continue`` as soon as it parsed the head, then the
    response; the Cython core answers only the response, so a client that
    waits never sends a body nobody reads. Everything after the interim
    response is identical. In pure mode the worker uses gunicorn's code, and
    the bytes are identical from the first one.
    """
    pair = pairs.get({})
    steps = [("send", _expect_head(path, 5))]
    if body is not None:
        steps = [("send", _expect_head(path, 5) + body), ("shut",)]
    stock, ours = pair.exchange(steps)
    a, b = outcome(stock, pair.stock), outcome(ours, pair.ours)
    assert a["data"].startswith(CONTINUE), show(a["data"])
    if ACCELERATED:
        assert not b["data"].startswith(CONTINUE), show(b["data"])
        b = dict(b, data=CONTINUE + b["data"])
    assert a == b, "after the 100 Continue:\nstock: %s\n\nours: %s\n\n%s" % (
        show(a["data"]), show(b["data"]), pair.logs())
    assert a["closed"]


def test_corpus_and_own_cases_cover_every_error_class():
    """Every request error gunicorn's base worker answers with a status is exercised."""
    classes = {EXPECTED[n].get("error") for n in CORPUS_NAMES} - {None}
    expected = {"InvalidRequestLine", "InvalidRequestMethod", "InvalidHTTPVersion",
                "InvalidHeader", "InvalidHeaderName", "LimitRequestLine", "LimitRequestHeaders",
                "InvalidChunkSize", "ChunkMissingTerminator", "InvalidChunkExtension",
                "InvalidSchemeHeaders", "ObsoleteFolding", "InvalidProxyLine", "NoMoreData"}
    if not _missing:
        assert expected <= classes, expected - classes
    # the classes the corpus lacks are in OWN_CASES
    for name in ("unsupported-transfer-coding", "expectation-failed"):
        assert name in OWN_CASES


# -- the same over TLS --------------------------------------------------------

TLS_CASES = ["get", "get-http10-no-host", "post-content-length", "post-chunked",
             "post-chunked-ext-trailers", "post-1mb-chunked", "readline-chunked",
             "pipelined-get-get", "pipelined-post-get", "head", "head-file", "stream",
             "stream-http10", "write-callable", "status-204-with-body", "file", "file-no-length",
             "file-http10-no-length", "big-response", "raise-before", "raise-mid-body",
             "bad-header-crlf", "invalid-request-line", "invalid-header-name-space",
             "limit-request-line", "limit-request-headers-count", "unsupported-transfer-coding",
             "invalid-chunk-size", "expect-100-all-at-once", "percent-encoded", "absolute-form"]


@pytest.fixture(scope="module")
def tls_pair(module_gunicorn_server, tmp_path_factory):
    cert, key = servers.make_self_signed_cert(str(tmp_path_factory.mktemp("tls")))
    if cert is None:
        pytest.skip(key)
    args = COMMON_ARGS + ["--certfile", cert, "--keyfile", key]
    stock = module_gunicorn_server(name="stock-tls", worker_class=servers.STOCK_SYNC,
                                   args=args + STOCK_ARGS, wait=False)
    ours = module_gunicorn_server(name="ours-tls", worker_class=servers.TURBO_SYNC,
                                  args=args + OURS_ARGS, wait=False)
    stock.wait_ready()
    ours.wait_ready()
    return Pair(stock, ours), servers.tls_client_context(cert)


@pytest.mark.parametrize("name", TLS_CASES)
def test_tls_case(tls_pair, name):
    """The same bytes inside TLS (no half-close: it would end the TLS session)."""
    pair, ctx = tls_pair
    results = []
    for srv in (pair.stock, pair.ours):
        results.append(servers.raw_exchange(lambda: srv.connect(timeout=20.0, ssl_context=ctx),
                                            [("send", OWN_CASES[name])], timeout=20.0))
    assert_same(pair, results[0], results[1], "tls " + name)


# -- applications that bend PEP 3333 ------------------------------------------

def _odd_names():
    import apps
    return sorted(apps._odd_cases())


@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
@pytest.mark.parametrize("case", _odd_names())
def test_odd_application(pairs, case, method, version):
    """Whatever the app does wrong, the server's answer is gunicorn's, byte for byte."""
    pair = pairs.get({})
    data = get(b"/_/odd?case=" + case.encode(), method=method, version=version)
    stock, ours = pair.exchange([("send", data), ("shut",)])
    assert_same(pair, stock, ours, "%s %s HTTP/%s" % (case, method.decode(), version.decode()))


# -- the same cases under other settings ---------------------------------------

SETTINGS_GROUPS = {
    "small-limits": {"limit_request_line": 100, "limit_request_fields": 5,
                     "limit_request_field_size": 50},
    "no-limits": {"limit_request_line": 0, "limit_request_field_size": 0},
    "no-trusted-forwarders": {"forwarded_allow_ips": ""},
    "all-forwarders-more-headers": {"forwarded_allow_ips": "*",
                                    "forwarder_headers": "SCRIPT_NAME,PATH_INFO,REMOTE_USER"},
    "header-map-refuse": {"header_map": "refuse"},
    "header-map-dangerous": {"header_map": "dangerous"},
    "unconventional-methods": {"permit_unconventional_http_method": True,
                               "casefold_http_method": True},
    "unconventional-versions": {"permit_unconventional_http_version": True},
    "no-sendfile": {"sendfile": False},
    "own-scheme-header": {"secure_scheme_headers": {"X-SCHEME": "https"}},
}


def _all_cases():
    import apps
    cases = dict(OWN_CASES)
    for name in apps._odd_cases():
        cases["odd-" + name] = get(b"/_/odd?case=" + name.encode())
    cases["forwarder-headers"] = get(b"/app/x", b"SCRIPT_NAME: /app\r\nREMOTE_USER: bob\r\n"
                                               b"X-Scheme: https\r\nPATH_INFO: /other\r\n")
    return cases


@pytest.mark.parametrize("group", sorted(SETTINGS_GROUPS))
def test_cases_under_settings(pairs, group):
    """Every own case and odd application under other settings: one failure lists all differences."""
    pair = pairs.get(SETTINGS_GROUPS[group])
    differences = []
    for name, data in sorted(_all_cases().items()):
        stock, ours = pair.exchange([("send", data), ("shut",)])
        a, b = outcome(stock, pair.stock), outcome(ours, pair.ours)
        if a != b or not a["closed"]:
            differences.append("%s:\n  stock (closed=%s error=%s): %r\n  ours  (closed=%s error=%s): %r"
                               % (name, a["closed"], a["error"], a["data"][:400],
                                  b["closed"], b["error"], b["data"][:400]))
    assert not differences, "%s: %d difference(s)\n%s\n\n%s" % (
        group, len(differences), "\n".join(differences), pair.logs())
