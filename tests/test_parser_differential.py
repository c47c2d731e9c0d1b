"""Differential test: turboworkers._http_parser against gunicorn's reference parser.

Requests are generated (valid ones, broken ones, pipelined sequences, byte-level
mutations of valid ones), with random gunicorn settings among those that change
parsing, a TCP or unix peer and server address, a random cut of the input
into reads and a random way of reading the body. Our parser serves the
connection first; gunicorn's pure-Python parser is then fed the very reads ours
got (``gunicorn_oracle.ChunkSource``) and both outcomes must be equal: same
requests served, same accept/reject, same error class and message, same
environ, same body pieces, same trailers, same should_close, and the 100
Continue writes consistent with the deliberate difference in when we send it.

Two drivers share one set of generators (``Draw``): hypothesis, which shrinks
a failure to a small example, and a bulk loop over ``random.Random`` that makes
most of the cases cheaply. Its seed changes each run and is printed with any
failure; ``TURBOWORKERS_DIFF_SEED=<n>`` replays a run. A bulk failure is shrunk
by deleting bytes while the disagreement stays, and reported with the input.
``test_generated_case_count`` (last in the file) asserts how many cases ran.
"""
import os
import random

import pytest

from turboworkers import _ext

if _ext.MODE == "pure":
    pytest.skip("pure mode (TURBOWORKERS_NO_EXTENSIONS=1): the compiled parser is not used",
                allow_module_level=True)

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import corpus  # noqa: E402
import gunicorn_oracle as oracle  # noqa: E402

hp = _ext.http_parser

#: cases each test makes; the sum must reach MIN_CASES in a full run
HYPOTHESIS_EXAMPLES = {
    "test_hypothesis_requests": 1500,
    "test_hypothesis_mutated": 1500,
    "test_hypothesis_pipelined": 700,
    "test_hypothesis_near_limits": 700,
}
BULK_CASES = 20000
MIN_CASES = 20000
MAX_REPORTED = 8   # kinds of disagreement a bulk run shrinks and reports

COUNT = {"cases": 0}
COMPLETED = set()


# -- where choices come from -----------------------------------------------------

class Draw:
    """The choices a generator makes. Simpler answers come first, so shrinking goes there."""

    def integer(self, lo, hi):
        raise NotImplementedError

    def text(self, alphabet, lo, hi):
        raise NotImplementedError

    def choice(self, seq):
        return seq[self.integer(0, len(seq) - 1)]

    def chance(self, p):
        """True with probability p; shrinks to False."""
        return self.integer(0, 999) >= 1000 - int(p * 1000)


class RandomDraw(Draw):
    def __init__(self, rnd):
        self.rnd = rnd

    def integer(self, lo, hi):
        return self.rnd.randint(lo, hi)

    def text(self, alphabet, lo, hi):
        return bytes(self.rnd.choices(alphabet, k=self.rnd.randint(lo, hi)))

    def choice(self, seq):
        return self.rnd.choice(seq)

    def chance(self, p):
        return self.rnd.random() < p


class HypothesisDraw(Draw):
    def __init__(self, data):
        self.data = data

    def integer(self, lo, hi):
        return self.data.draw(st.integers(lo, hi))

    def text(self, alphabet, lo, hi):
        chars = "".join(sorted(set(alphabet.decode("latin-1"))))
        return self.data.draw(st.text(alphabet=chars, min_size=lo, max_size=hi)).encode("latin-1")


# -- settings, addresses, reads ----------------------------------------------------

def effective_line_limit(overrides):
    limit = overrides.get("limit_request_line", 4094)
    return 8190 if limit >= 8190 else limit


def effective_field_limit(overrides):
    size = overrides.get("limit_request_field_size", 8190)
    return 8190 if size <= 0 else size


def gen_cfg(d):
    """gunicorn settings that change what the parser accepts or the environ it builds."""
    o = {}
    if d.chance(0.15):
        o["limit_request_line"] = d.choice([4094, 0, 8190, 8191, 10000, 100, 64, 1, 12, 30])
    if d.chance(0.15):
        o["limit_request_fields"] = d.choice([100, 0, 32768, 40000, 5, 3, 1])
    if d.chance(0.15):
        o["limit_request_field_size"] = d.choice([8190, 0, 8191, 9000, 100, 40, 16, 1])
    if d.chance(0.2):
        o["permit_unconventional_http_method"] = True
    if d.chance(0.2):
        o["permit_unconventional_http_version"] = True
    if d.chance(0.2):
        o["casefold_http_method"] = d.choice([True, False])
    if d.chance(0.4):
        o["header_map"] = d.choice(["drop", "refuse", "dangerous"])
    if d.chance(0.4):
        o["forwarded_allow_ips"] = d.choice(
            ["*", "127.0.0.1", "10.0.0.0/8", "192.168.1.5,::1", "", "::1", "203.0.113.0/24,127.0.0.1"])
    if d.chance(0.3):
        o["secure_scheme_headers"] = d.choice([
            {}, {"X-FORWARDED-PROTO": "https"}, {"X_FORWARDED_PROTO": "https"},
            {"FRONT-END-HTTPS": "on", "X-FORWARDED-PROTO": "https"}, {"X-SCHEME": "HTTPS"}])
    if d.chance(0.3):
        o["forwarder_headers"] = d.choice(
            ["", "*", "SCRIPT_NAME", "SCRIPT_NAME,PATH_INFO,REMOTE_USER", "X_FORWARDED_FOR,X_SCHEME"])
    if d.chance(0.05):
        o["workers"] = 2            # wsgi.multiprocess
    if d.chance(0.05):
        o["certfile"] = "/nonexistent/cert.pem"   # is_ssl: the default scheme is https
    return o


PEERS = [("127.0.0.1", 5000), ("10.1.2.3", 41234), ("::1", 6000), ("192.168.1.5", 9),
         ("203.0.113.9", 443), "", "/run/client.sock"]
SERVERS = [("127.0.0.1", 8000), ("0.0.0.0", 80), ("::", 8443), "/tmp/gunicorn.sock",
           "/tmp/odd:name.sock"]


def gen_reads(d, data):
    """Cut ``data`` into the reads a socket would return."""
    if len(data) < 2:
        return [data] if data else []
    how = d.choice(["whole", "random", "random", "lines", "bytes"])
    if how == "whole":
        return [data]
    if how == "lines":
        return corpus.split_lines(data)
    if how == "bytes" and len(data) <= 600:
        return corpus.split_bytes(data)
    cuts = sorted({d.integer(1, len(data) - 1) for _ in range(d.integer(1, 8))})
    bounds = [0] + cuts + [len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


# -- requests ---------------------------------------------------------------------

TOKEN = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
PCHARS = b"abcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@"
HIGH = bytes(range(0x80, 0x100))
CTLS = bytes(range(0x00, 0x20)) + b"\x7f"

METHODS = [b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE",
           b"PROPFIND", b"MKCALENDAR"]
ODD_METHODS = [b"get", b"post", b"connect", b"options", b"Get", b"pOST", b"GE", b"M", b"A" * 20,
               b"B" * 21, b"VERY-LONG-METHOD-NAME-X", b"-BLARGH", b"M#X", b"FOO_BAR", b"1234",
               b"!#$%&'*+-.^_`|~", b"GET!", b"G.E.T"]
BAD_METHODS = [b"", b"GET@", b"GE(T", b"GET\x00", b"G\xc9T", b"G\x7fT", b"GET\t", b"GET:", b"\xff"]

SEGMENTS = [b"a", b"stuff", b"here", b"b%20c", b"%zz", b"..", b".", b"x;y", b"~user", b"%2F", b"%2f",
            b"%F0%9F%98%80", b"a+b", b"%", b"%4", b"%00", b"", b"caf%C3%A9", b"q=1", b"%25"]
QUERIES = [b"", b"?", b"?a=1", b"?a=1&b=2", b"?x=%20y", b"?q=a/b?c", b"??", b"?a=%zz", b"?%00"]
FRAGMENTS = [b"", b"#", b"#frag", b"#a?b", b"#x#y"]
HOSTS = [b"example.com", b"example.com:8080", b"127.0.0.1", b"[::1]", b"[::1]:8000",
         b"user:pw@host", b"host:notaport", b"h%C3%A9st"]
BAD_HOSTS = [b"[::1", b"h\xc3st", b"", b"::1", b"[::1]x", b"a b"]
VERSIONS = [b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]
ODD_VERSIONS = [b"HTTP/0.9", b"HTTP/2.0", b"HTTP/1.2", b"HTTP/3.0", b"HTTP/9.9", b"http/1.1",
                b"HTTP/1.10", b"HTTP/1", b"HTTP/1.1 ", b"HTTP/ 1.1", b"HTTP/1.1\x00", b"HTTP/11",
                b"HTTPS/1.1", b"", b"HTTP/1.\xb9", b"HTTP/a.b"]


def gen_method(d, bad):
    if d.chance(bad):
        return d.choice(BAD_METHODS + [d.text(TOKEN + HIGH + CTLS, 0, 6)])
    if d.chance(0.1):
        return d.choice(ODD_METHODS + [d.text(TOKEN, 1, 24)])
    return d.choice(METHODS)


def gen_target(d, method, bad):
    if method == b"CONNECT" and d.chance(0.7):
        return d.choice([b"example.com:443", b"[::1]:443", b"host", b"127.0.0.1:8080", b"/path"])
    if method == b"OPTIONS" and d.chance(0.3):
        return b"*"
    form = d.choice(["origin", "origin", "origin", "origin", "absolute", "double"])
    if d.chance(bad):
        form = d.choice(["asterisk", "authority", "relative", "empty", "random"])
    if form == "asterisk":
        return b"*"
    if form == "authority":
        return d.choice(HOSTS + BAD_HOSTS)
    if form == "empty":
        return b""
    if form == "random":
        return d.text(PCHARS + b"/?#%[]", 0, 20)
    path = b"".join(b"/" + d.choice(SEGMENTS) for _ in range(d.integer(0, 4))) or b"/"
    if form == "double":
        path = b"/" + path
    elif form == "relative":
        path = path.lstrip(b"/") or b"rel"
    target = path + d.choice(QUERIES) + d.choice(FRAGMENTS)
    if form == "absolute":
        scheme = d.choice([b"http://", b"https://", b"HTTP://", b"ftp://", b"x-y+z://"])
        host = d.choice(HOSTS)
        if d.chance(bad):
            scheme = d.choice([b"http:/", b"http:", b"://", b"1http://", b"ht tp://"])
            host = d.choice(BAD_HOSTS)
        target = scheme + host + (target if target.startswith(b"/") else b"/" + target)
    if d.chance(bad):
        pos = d.integer(0, len(target))
        target = target[:pos] + d.choice([b"\x01", b"\x7f", b"\x80", b"\xe9", b"\xff", b"\x00",
                                           b"\t", b" ", b"%", b"\r", b"\n"]) + target[pos:]
    return target


HEADER_NAMES = [b"Host", b"User-Agent", b"Accept", b"Connection", b"Content-Type", b"Expect",
                b"X-Forwarded-Proto", b"X-Forwarded-Protocol", b"X-Forwarded-Ssl", b"X-Forwarded-For",
                b"X_Forwarded_For", b"X_Forwarded_Proto", b"X-Scheme", b"X_Scheme", b"Front-End-Https",
                b"SCRIPT_NAME", b"PATH_INFO", b"REMOTE_USER", b"Remote_User", b"X-Custom_Header",
                b"Cookie", b"Trailer", b"TE", b"Upgrade", b"Authorization", b"host", b"HOST",
                b"content-type", b"x", b"!#$%&'*+-.^_`|~", b"X-Request-Id", b"Keep-Alive"]
# framing fields come from gen_body; these are the broken uses of them
RISKY_HEADER_NAMES = [b"Content-Length", b"Transfer-Encoding", b"content-length", b"Expect"]
BAD_HEADER_NAMES = [b"Bad Name", b"Bad(Name)", b"", b"X-\x80", b"Name\t", b" Lead", b"Na\x00me",
                    b"Name ", b"\tTab", b"X-\xc3\xa9", b"[x]", b"a@b"]
# name -> (good values, values gunicorn refuses or that change the framing)
VALUES = {
    b"HOST": ([b"example.com", b"example.com:8080", b"[::1]:8000", b"", b"a:b:c", b"localhost:",
               b"h\xe9st"], []),
    b"CONNECTION": ([b"close", b"keep-alive", b"Close", b"KEEP-ALIVE", b"upgrade", b" close ",
                     b"close, keep-alive", b"te"], []),
    b"EXPECT": ([b"100-continue", b"100-Continue"], [b"200-ok", b"", b"100-continue, x"]),
    b"X-FORWARDED-PROTO": ([b"https", b"http", b"HTTPS", b""], []),
    b"X_FORWARDED_PROTO": ([b"https", b"http"], []),
    b"X-FORWARDED-SSL": ([b"on", b"off"], []),
    b"X-FORWARDED-PROTOCOL": ([b"ssl", b"tls"], []),
    b"FRONT-END-HTTPS": ([b"on", b"off"], []),
    b"X-SCHEME": ([b"HTTPS", b"https", b"http"], []),
    b"X_SCHEME": ([b"HTTPS", b"http"], []),
    b"SCRIPT_NAME": ([b"/stuff", b"", b"/x", b"/", b"/a%20b"], []),
    b"PATH_INFO": ([b"/p", b""], []),
    b"CONTENT-LENGTH": ([], [b"0", b"5", b"abc", b"-1", b"+3", b"1, 1"]),
    b"TRANSFER-ENCODING": ([], [b"chunked", b"identity", b"gzip"]),
}
PLAIN_VALUES = [b"value", b"", b" padded ", b"\tTabbed\t", b"a, b, c", b"x y  z", b"\xe9t\xe9",
                b"caf\xc3\xa9", b"\x80\xff", b"()<>@,;:\\\"/[]?={}", b"  "]
BAD_VALUES = [b"x\x00y", b"x\x01y", b"x\x7fy", b"x\ry", b"x\ny", b"\x0b", b"x\x1fy", b"\r"]
SEPARATORS = [b": ", b":", b":\t", b":  ", b" : ", b"\t:", b"::"]
EOLS = [b"\r\n", b"\n", b"\r", b"\r\r\n", b"\n\r"]


def gen_header(d, bad):
    if d.chance(bad / 2):
        name = d.choice(BAD_HEADER_NAMES + RISKY_HEADER_NAMES)
    elif d.chance(0.1):
        name = d.text(TOKEN, 1, 12)
    else:
        name = d.choice(HEADER_NAMES)
    good, risky = VALUES.get(name.upper(), ([], []))
    if risky and (d.chance(bad) or not good):
        value = d.choice(risky)
    elif good and d.chance(0.8):
        value = d.choice(good)
    else:
        value = d.choice(PLAIN_VALUES)
    if d.chance(bad):
        pos = d.integer(0, len(value))
        value = value[:pos] + d.choice(BAD_VALUES) + value[pos:]
    sep = d.choice(SEPARATORS) if d.chance(bad) else b": "
    return name + sep + value


def gen_chunked_body(d, bad):
    out = []
    for _ in range(d.integer(0, 3)):
        data = d.text(b"abcxyz \r\n0123", 0 if d.chance(bad) else 1, 24)
        size = len(data)
        if d.chance(bad / 2):
            size = max(0, size + d.choice([-1, 1, 2]))
        size_text = d.choice([b"%x", b"%X", b"0%x", b"000%x"]) % size
        if d.chance(bad / 2):
            size_text = d.choice([b"-1", b"+%x" % size, b"0x%x" % size, b"", b"%x " % size,
                                  b" %x" % size, b"FFFFFFFFFFFFFFFFFFFF", b"g"])
        out.append(size_text + gen_chunk_ext(d, bad) + b"\r\n" + data
                   + (d.choice([b"\n", b"", b"\r", b"xx"]) if d.chance(bad / 2) else b"\r\n"))
    out.append(d.choice([b"0", b"00", b"000"]) + gen_chunk_ext(d, bad) + b"\r\n")
    for _ in range(d.integer(0, 2) if d.chance(0.3) else 0):
        name = d.choice([b"X-Trailer", b"Expires", b"Content-Length", b"Host", b"Transfer-Encoding",
                         b"TE", b"Trailer", b"Authorization", b"X_Under", b"Bad Name",
                         b"X-Forwarded-Proto"])
        value = d.choice([b"v", b"5", b"", b" sp ", b"x\x01y", b"https"])
        out.append(name + b": " + value + b"\r\n")
    if d.chance(bad / 2):
        out.append(d.choice([b"", b"\n", b"\r", b"garbage"]))
    else:
        out.append(b"\r\n")
    return b"".join(out)


def gen_chunk_ext(d, bad):
    if not d.chance(0.3):
        return b""
    good = [b";a", b";a=b", b';a="q v"', b'; a = b', b";a;b=c", b'\t;x="\\""', b";n=\xe9" if bad else b";n=1"]
    bads = [b";", b";=x", b";a=\x01", b";a=b c", b";a=\"unterminated", b";a=\r", b"; ;"]
    return d.choice(bads) if d.chance(bad) else d.choice(good)


TE_VALUES = [b"chunked", b"Chunked", b"CHUNKED", b"gzip, chunked", b"gzip,chunked",
             b"deflate, chunked", b"compress,chunked", b"identity, chunked", b" chunked ",
             b"\tchunked", b"chunked, gzip", b"chunked, chunked", b"chunked, identity",
             b"br, chunked", b"chunked;q=1", b"identity", b"gzip", b"x-custom", b"", b","]


def gen_body(d, version, bad, kinds=("none", "cl", "chunked")):
    """(framing header lines, body bytes)."""
    kind = d.choice(kinds)
    if d.chance(bad):
        kind = d.choice(["cl-odd", "cl-dup", "cl+te", "te-split", "chunked"])
    elif kind == "chunked" and version != b"HTTP/1.1":
        kind = "cl"  # chunked HTTP/1.0 is refused
    headers = []
    body = b""
    if kind == "none":
        if d.chance(bad):
            body = d.text(b"abc\r\n", 0, 8)   # read as the start of the next request
    elif kind in ("cl", "cl-odd", "cl-dup"):
        body = d.text(b"abcdefxyz\r\n\x00\xff", 0, 40) if not d.chance(0.05) else b"z" * 3000
        n = len(body)
        if d.chance(bad):
            n = max(0, n + d.choice([-2, -1, 1, 5]))
        value = b"%d" % n
        if kind == "cl-odd":
            value = d.choice([b"0%d" % n, b"+%d" % n, b"-%d" % n, b" %d " % n, b"%d, %d" % (n, n),
                              b"0x%x" % n, b"", b"\xb2", b"\xbd", b"%d.0" % n, b"1e2", b"%d_0" % n])
        headers.append(b"Content-Length: " + value)
        if kind == "cl-dup":
            headers.append(b"Content-Length: " + d.choice([value, b"%d" % (n + 1)]))
    else:
        te = d.choice(TE_VALUES[:10]) if not d.chance(bad) else d.choice(TE_VALUES)
        if kind == "te-split":
            headers.append(b"Transfer-Encoding: " + d.choice([b"gzip", b"identity", b"chunked"]))
        headers.append(b"Transfer-Encoding: " + te)
        if kind == "cl+te":
            headers.insert(d.integer(0, len(headers)), b"Content-Length: " + d.choice([b"0", b"5"]))
        body = gen_chunked_body(d, bad)
    if kind != "none" and d.chance(0.15):
        headers.append(b"Expect: " + d.choice([b"100-continue", b"100-CONTINUE"]))
    return headers, body


def gen_request(d, cfg, bad, near_limits=False, body_bad=None):
    method = gen_method(d, bad)
    target = gen_target(d, method, bad)
    version = d.choice(ODD_VERSIONS) if d.chance(bad) else d.choice(VERSIONS)
    sp1 = sp2 = b" "
    if d.chance(bad / 2):
        sp1 = d.choice([b"  ", b"\t", b""])
    if d.chance(bad / 2):
        sp2 = d.choice([b"  ", b"\t", b""])
    line = method + sp1 + target + sp2 + version
    limit = effective_line_limit(cfg)
    if near_limits and limit > len(line) + 1 and target.startswith(b"/"):
        line = method + sp1 + target + b"x" * (limit + d.integer(-1, 2) - len(line)) + sp2 + version
    headers = [gen_header(d, bad) for _ in range(d.integer(0, 5))]
    if body_bad is None:
        framing, body = gen_body(d, version, bad)
    else:
        framing, body = gen_body(d, version, body_bad, kinds=("cl", "chunked", "chunked"))
    for h in framing:
        headers.insert(d.integer(0, len(headers)), h)
    if near_limits:
        fields = cfg.get("limit_request_fields", 100)
        if 0 < fields <= 8 and d.chance(0.5):
            while len(headers) < fields + d.integer(-1, 1):
                headers.append(b"X-Fill: %d" % len(headers))
        size = effective_field_limit(cfg)
        if size <= 9000 and d.chance(0.7):
            name = d.choice([b"X-Long", b"Cookie", b"X_Long"])
            # "Name: value" + CRLF is what gunicorn measures against the limit
            n = max(0, size + d.integer(-2, 1) - len(name) - 4)
            headers.insert(d.integer(0, len(headers)), name + b": " + b"v" * n)
    if d.chance(bad / 2) and headers:
        # obs-fold: a line that starts with SP or HTAB continues the previous one
        headers.insert(d.integer(1, len(headers)), d.choice([b" folded", b"\tfolded", b" ", b"\t x"]))
    eol = d.choice(EOLS) if d.chance(bad / 3) else b"\r\n"
    lead = b"\r\n" if d.chance(0.05) else b""
    if d.chance(bad / 4):
        lead = d.choice([b"\n", b"\r\n\r\n", b"\r", b" ", b"\r\n\n"])
    head = lead + line + eol
    for h in headers:
        head += h + (d.choice(EOLS) if d.chance(bad / 4) else eol)
    return head + eol + body


def gen_connection(d, cfg, bad=0.1, near_limits=False, max_requests=3, body_bad=None):
    n = d.choice([1, 1, 1, 2, 2, 3][:2 * max_requests])
    data = b"".join(gen_request(d, cfg, bad, near_limits, body_bad) for _ in range(n))
    if d.chance(0.05):
        data += d.choice([b"\r\n", b"GET", b"\x00", b"GET / HTTP/1.1\r\n"])
    return data


MUTATION_BYTES = b"\r\n\x00 \t:;,\x7f\x80\xff/%?#aZ0-_\"\\"


def mutate(d, data, n=None):
    """Byte-level damage: insert, delete, flip, duplicate, truncate."""
    for _ in range(n if n is not None else d.integer(1, 3)):
        if not data:
            data = bytes([d.choice(MUTATION_BYTES)])
            continue
        pos = d.integer(0, len(data) - 1)
        op = d.choice(["insert", "delete", "flip", "replace", "dup", "truncate"])
        if op == "insert":
            data = data[:pos] + bytes([d.choice(MUTATION_BYTES)]) + data[pos:]
        elif op == "delete":
            data = data[:pos] + data[pos + d.integer(1, 4):]
        elif op == "flip":
            data = data[:pos] + bytes([data[pos] ^ (1 << d.integer(0, 7))]) + data[pos + 1:]
        elif op == "replace":
            data = data[:pos] + bytes([d.choice(MUTATION_BYTES)]) + data[pos + 1:]
        elif op == "dup":
            end = min(len(data), pos + d.integer(1, 16))
            data = data[:end] + data[pos:end] + data[end:]
        else:
            data = data[:pos]
    return data


# -- one case ---------------------------------------------------------------------

class Case:
    def __init__(self, data, reads, cfg, peer, server, plan, with_sock=True):
        self.data = data
        self.reads = reads
        self.cfg = cfg
        self.peer = peer
        self.server = server
        self.plan = plan
        self.with_sock = with_sock

    def __repr__(self):
        return ("Case(data=%r,\n     reads=%r,\n     cfg=%r, peer=%r, server=%r, plan=%r, with_sock=%r)"
                % (self.data, self.reads if len(self.reads) < 60 else "%d reads" % len(self.reads),
                   self.cfg, self.peer, self.server, self.plan, self.with_sock))


def draw_case(d, data_gen):
    cfg = gen_cfg(d)
    data = data_gen(d, cfg)
    return Case(data, gen_reads(d, data), cfg, d.choice(PEERS), d.choice(SERVERS),
                d.choice(oracle.PLANS), with_sock=not d.chance(0.05))


def compare(case):
    """Run both parsers; None when they agree, else a description of the difference."""
    found = compare_keyed(case)
    return None if found is None else found[0]


def difference_key(ours, theirs):
    """What kind of disagreement this is, to report one bug once."""
    if ours.end != theirs.end and ours.end[:2] != theirs.end[:2]:
        return ("end", ours.end[:2], theirs.end[:2])
    for o, t in zip(ours.requests, theirs.requests):
        if o != t:
            fields = tuple(sorted(k for k in set(o) | set(t) if o.get(k) != t.get(k)))
            sub = ()
            for k in ("request", "environ"):
                if k in fields and isinstance(o.get(k), dict) and isinstance(t.get(k), dict):
                    sub += tuple(sorted({"HTTP_*" if str(x).startswith("HTTP_") else x
                                         for x in set(o[k]) | set(t[k]) if o[k].get(x) != t[k].get(x)}))
            return ("request", fields, sub)
    if len(ours.requests) != len(theirs.requests):
        return ("count", len(ours.requests) - len(theirs.requests))
    return ("end message", ours.end[:2])


def compare_keyed(case):
    """(description, kind) of the disagreement, or None."""
    COUNT["cases"] += 1
    supported, why = hp.supports_config(corpus.make_cfg(case.cfg))
    if supported is not True:
        return ("supports_config(%r) refused a setting our parser must carry out: %r" % (case.cfg, why),
                ("supports_config",))
    try:
        ours, reads = oracle.run_turbo(hp, case.reads, case.cfg, case.peer, case.server, case.plan,
                                       with_sock=case.with_sock)
    except AssertionError as exc:
        return "harness check failed while running our parser: %s" % exc, ("harness", str(exc)[:60])
    except Exception as exc:  # outside what gunicorn could raise: the request object, say
        return ("our parser raised outside next_request() and the body: %s: %s" % (type(exc).__name__, exc),
                ("raised", type(exc).__name__))
    theirs = oracle.run_gunicorn(reads, case.cfg, case.peer, case.server, case.plan)
    if ours != theirs:
        return ("outcomes differ:\n%s\nours, in full: %r" % (oracle.describe_difference(ours, theirs), ours),
                difference_key(ours, theirs))
    problems = oracle.check_continues(ours, theirs, case.plan)
    if problems:
        return "100 Continue: %s" % "; ".join(problems), ("100 Continue",)
    return None


def assert_agree(case):
    problem = compare(case)
    assert problem is None, "%r\n%s" % (case, problem)


# -- hypothesis drivers -------------------------------------------------------------

#: seconds hypothesis may spend shrinking one failure (its own default is 300,
#: too long for a suite that must stay within a few minutes)
SHRINK_SECONDS = 30


@pytest.fixture
def shrink_budget(monkeypatch):
    try:
        from hypothesis.internal.conjecture import engine
    except ImportError:  # internal module moved: keep hypothesis's own limit
        return
    monkeypatch.setattr(engine, "MAX_SHRINKING_SECONDS", SHRINK_SECONDS, raising=False)


def _settings(name):
    return settings(max_examples=HYPOTHESIS_EXAMPLES[name], deadline=None, derandomize=False,
                    suppress_health_check=list(HealthCheck), print_blob=True)


def test_hypothesis_requests(shrink_budget):
    """Mostly well-formed requests, a few broken parts, one or two per connection."""
    @_settings("test_hypothesis_requests")
    @given(st.data())
    def run(data):
        d = HypothesisDraw(data)
        assert_agree(draw_case(d, lambda d, cfg: gen_connection(d, cfg, bad=d.choice([0.0, 0.05, 0.3]),
                                                                max_requests=2)))
    run()
    COMPLETED.add("test_hypothesis_requests")


def test_hypothesis_mutated(shrink_budget):
    """Valid requests damaged at the byte level."""
    @_settings("test_hypothesis_mutated")
    @given(st.data())
    def run(data):
        d = HypothesisDraw(data)
        assert_agree(draw_case(d, lambda d, cfg: mutate(d, gen_connection(d, cfg, bad=0.0, max_requests=2))))
    run()
    COMPLETED.add("test_hypothesis_mutated")


def test_hypothesis_pipelined(shrink_budget):
    """Several requests on one connection, bodies read or left to the drain."""
    @_settings("test_hypothesis_pipelined")
    @given(st.data())
    def run(data):
        d = HypothesisDraw(data)

        def gen(d, cfg):
            return b"".join(gen_request(d, cfg, bad=d.choice([0.0, 0.1])) for _ in range(d.integer(2, 4)))
        assert_agree(draw_case(d, gen))
    run()
    COMPLETED.add("test_hypothesis_pipelined")


def test_hypothesis_near_limits(shrink_budget):
    """Request lines, header counts and field sizes on either side of the configured limits."""
    @_settings("test_hypothesis_near_limits")
    @given(st.data())
    def run(data):
        d = HypothesisDraw(data)

        def gen(d, cfg):
            if d.chance(0.8):
                cfg["limit_request_line"] = d.choice([20, 30, 48, 64, 100, 8190, 10000, 0])
                cfg["limit_request_field_size"] = d.choice([16, 24, 40, 100, 0, 8190, 9000])
                cfg["limit_request_fields"] = d.choice([1, 2, 3, 5, 100])
            return gen_connection(d, cfg, bad=d.choice([0.0, 0.05]), near_limits=True, max_requests=2)
        assert_agree(draw_case(d, gen))
    run()
    COMPLETED.add("test_hypothesis_near_limits")


# -- bulk loop ---------------------------------------------------------------------

def _bulk_data(d, cfg):
    style = d.choice(["valid", "valid", "broken", "broken", "mutated", "mutated", "limits", "pipelined",
                      "bodies"])
    if style == "valid":
        return gen_connection(d, cfg, bad=0.0)
    if style == "bodies":
        return gen_connection(d, cfg, bad=0.0, body_bad=d.choice([0.0, 0.3, 0.8]))
    if style == "broken":
        return gen_connection(d, cfg, bad=d.choice([0.05, 0.2, 0.5]))
    if style == "mutated":
        return mutate(d, gen_connection(d, cfg, bad=0.0))
    if style == "limits":
        cfg["limit_request_line"] = d.choice([20, 30, 48, 64, 100, 8190, 0])
        cfg["limit_request_field_size"] = d.choice([16, 24, 40, 100, 0, 8190])
        cfg["limit_request_fields"] = d.choice([1, 2, 3, 5, 100])
        return gen_connection(d, cfg, bad=0.05, near_limits=True)
    return b"".join(gen_request(d, cfg, bad=0.05) for _ in range(d.integer(2, 5)))


def shrink(case, key, budget=1500):
    """A smaller case with the same kind of disagreement: reads merged, settings dropped, bytes deleted."""
    def fails(c):
        found = compare_keyed(c)
        return found is not None and found[1] == key

    def with_data(c, data, reads=None):
        return Case(data, reads if reads is not None else [data], c.cfg, c.peer, c.server, c.plan,
                    c.with_sock)

    runs = 0
    best = case
    # Fewer reads first: whole input, if the difference does not need the cut.
    if len(best.reads) > 1 and fails(with_data(best, best.data)):
        best = with_data(best, best.data)
    for name in list(best.cfg):
        cfg = dict(best.cfg)
        del cfg[name]
        c = Case(best.data, best.reads, cfg, best.peer, best.server, best.plan, best.with_sock)
        runs += 1
        if fails(c):
            best = c
    if best.plan != ("read",):
        c = Case(best.data, best.reads, best.cfg, best.peer, best.server, ("read",), best.with_sock)
        if fails(c):
            best = c
    if len(best.reads) == 1:
        # whole lines first: a request or a header that does not matter goes at once
        i = 0
        while runs < budget:
            lines = best.data.split(b"\n")
            if i >= len(lines):
                break
            c = with_data(best, b"\n".join(lines[:i] + lines[i + 1:]))
            runs += 1
            if lines[i] != best.data and fails(c):
                best = c
            else:
                i += 1
    single = len(best.reads) == 1
    step = max(1, len(best.data) // 2)
    while step >= 1 and runs < budget:
        pos = 0
        progressed = False
        while pos < len(best.data) and runs < budget:
            data = best.data[:pos] + best.data[pos + step:]
            if single:
                c = with_data(best, data)
            else:
                # delete within the reads, keeping the cut points that survive
                reads, at = [], 0
                for r in best.reads:
                    lo, hi = max(pos, at), min(pos + step, at + len(r))
                    reads.append(r[:lo - at] + r[hi - at:] if lo < hi else r)
                    at += len(r)
                c = with_data(best, data, [r for r in reads if r])
            runs += 1
            if fails(c):
                best = c
                progressed = True
            else:
                pos += step
        if not progressed:
            step //= 2
    return best


def test_bulk_random():
    """Most of the cases, from random.Random: cheap enough to make many."""
    seed = int(os.environ.get("TURBOWORKERS_DIFF_SEED") or random.SystemRandom().randrange(1 << 32))
    failures = {}
    for i in range(BULK_CASES):
        d = RandomDraw(random.Random("%d:%d" % (seed, i)))
        case = draw_case(d, _bulk_data)
        found = compare_keyed(case)
        if found is None:
            continue
        key = found[1]
        if key not in failures and len(failures) < MAX_REPORTED:
            failures[key] = (i, case)
        if len(failures) >= MAX_REPORTED:
            break
    if failures:
        report = {}
        for key, (i, case) in failures.items():
            small = shrink(case, key)
            found = compare_keyed(small)
            if found is None or found[1] in report:   # shrunk into one already reported
                continue
            report[found[1]] = ("case %d of seed %d (TURBOWORKERS_DIFF_SEED=%d replays it), shrunk:\n%r\n%s"
                                % (i, seed, seed, small, found[0]))
        pytest.fail("disagreements in %d cases, %d kinds shown:\n\n%s"
                    % (BULK_CASES, len(report), "\n\n".join(report.values())))
    COMPLETED.add("test_bulk_random")


# -- the count, last ----------------------------------------------------------------

def test_generated_case_count(request):
    generators = set(HYPOTHESIS_EXAMPLES) | {"test_bulk_random"}
    collected = {item.name for item in request.session.items}
    if not generators <= collected:
        pytest.skip("only part of the differential suite was selected: %s"
                    % sorted(generators & collected))
    if COMPLETED != generators:
        pytest.skip("a generator test failed (reported above); not counting: %s"
                    % sorted(generators - COMPLETED))
    assert COUNT["cases"] >= MIN_CASES, "only %d generated cases ran" % COUNT["cases"]
