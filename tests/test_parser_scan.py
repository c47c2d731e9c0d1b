"""The parser's block scans (16 bytes at a time) at every alignment, against
gunicorn's reference parser.

The header name, the header value and the end of the head are each found by
a scan that reads 16 bytes at a time and finishes byte by byte near the end of
the buffer. These tests put the byte that matters (a control character, a
non-ASCII byte, a character that cannot be in a name, the colon, the final
CRLF CRLF) at each offset of a 16-byte block, near the end of the received
buffer and far from it, and require the outcome gunicorn's own parser gives:
the same environ, or the same error class and message.
"""
import pytest

from turboworkers import _ext

if _ext.MODE == "pure":
    pytest.skip("pure mode (TURBOWORKERS_NO_EXTENSIONS=1): the compiled parser is not used",
                allow_module_level=True)

import gunicorn_oracle as oracle  # noqa: E402

hp = _ext.http_parser

# bytes a value may not hold, and the ones it may (HTAB, obs-text, DEL's neighbours)
VALUE_BYTES = [0x00, 0x01, 0x08, 0x09, 0x0A, 0x0B, 0x0D, 0x1F, 0x20, 0x7E, 0x7F, 0x80, 0xE9, 0xFF]
# characters that cannot be in a name, and some that can
NAME_BYTES = [b" ", b"\t", b'"', b"(", b"@", b"{", b"\x80", b"\x00", b"_", b"a", b"Z", b"-", b"~", b":"]
# what follows the head in the same read: nothing, a pipelined request, or a
# long tail (the scans then never reach the end of the buffer)
TAILS = [b"", b"GET /next HTTP/1.1\r\nHost: b\r\n\r\n", b"GET /x HTTP/1.1\r\n" + b"X-Pad: " + b"p" * 100]


def outcome_pair(data, cfg=None):
    ours, reads = oracle.run_turbo(hp, [data], cfg)
    theirs = oracle.run_gunicorn(reads, cfg)
    return ours, theirs


def assert_same(data, cfg=None):
    ours, theirs = outcome_pair(data, cfg)
    assert ours == theirs, "%r\n%s" % (data, oracle.describe_difference(ours, theirs))
    return ours


def request(headers, line=b"GET / HTTP/1.1"):
    return line + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"


@pytest.mark.parametrize("tail", TAILS, ids=["alone", "pipelined", "long-tail"])
@pytest.mark.parametrize("byte", VALUE_BYTES, ids=lambda b: "0x%02x" % b)
def test_value_byte_at_each_offset(byte, tail):
    accepted = 0
    for offset in range(0, 40):
        value = bytearray(b"v" * 40)
        value[offset] = byte
        data = request([b"Host: a", b"X-Value: " + bytes(value), b"Accept: */*"]) + tail
        ours = assert_same(data)
        accepted += ours.end == ("stop",) or bool(ours.requests)
    # the cases really differ: control characters are refused, the others kept
    if byte in (0x09, 0x20, 0x7E, 0x80, 0xE9, 0xFF):
        assert accepted == 40
    else:
        assert accepted < 40


@pytest.mark.parametrize("tail", TAILS, ids=["alone", "pipelined", "long-tail"])
@pytest.mark.parametrize("byte", NAME_BYTES, ids=lambda b: repr(b)[2:-1])
def test_name_byte_at_each_offset(byte, tail):
    for length in (1, 5, 15, 16, 17, 31, 32, 33, 63, 64, 65, 70):
        for offset in sorted({0, length // 2, length - 1}):
            name = bytearray(b"x" * length)
            name[offset:offset + 1] = byte
            assert_same(request([b"Host: a", bytes(name) + b": value", b"Accept: */*"]) + tail)


# every known name the parser looks up, in several cases and one byte off
KNOWN = [b"Host", b"User-Agent", b"Accept", b"Accept-Language", b"Accept-Encoding", b"Connection",
         b"Cookie", b"Referer", b"Content-Type", b"Content-Length", b"Transfer-Encoding", b"Expect",
         b"Cache-Control", b"Upgrade-Insecure-Requests", b"Sec-Fetch-Dest", b"X-Forwarded-Proto",
         b"X-Forwarded-For", b"Sec-CH-UA-Platform", b"DNT", b"TE", b"SCRIPT_NAME", b"Keep-Alive"]


@pytest.mark.parametrize("name", KNOWN, ids=lambda b: b.decode())
def test_known_names_in_any_case_and_near_misses(name):
    values = {b"Content-Length": b"0", b"Transfer-Encoding": b"chunked", b"Expect": b"100-continue",
              b"Connection": b"close"}
    value = values.get(name, b"v")
    body = b"0\r\n\r\n" if name == b"Transfer-Encoding" else b""
    variants = [name, name.upper(), name.lower(), name.swapcase()]
    for i in range(len(name)):
        for repl in (b"\x80", b" ", b"_", b"-", b"Q"):
            variants.append(name[:i] + repl + name[i + 1:])
    variants += [name + b"x", b"x" + name, name[:-1]]
    for cfg in (None, {"header_map": "dangerous"}, {"header_map": "drop"}):
        for v in variants:
            if not v or v == b"Host":
                continue
            assert_same(request([b"Host: a", v + b": " + value]) + body, cfg)


ALL_KNOWN = ["Host", "User-Agent", "Accept", "Accept-Language", "Accept-Encoding", "Connection",
             "Cookie", "Referer", "Cache-Control", "Upgrade-Insecure-Requests", "Sec-Fetch-Dest",
             "Sec-Fetch-Mode", "Sec-Fetch-Site", "Sec-Fetch-User", "Origin", "Authorization",
             "Pragma", "If-None-Match", "If-Modified-Since", "X-Forwarded-For",
             "X-Forwarded-Proto", "X-Real-IP", "X-Requested-With", "DNT", "Sec-CH-UA",
             "Sec-CH-UA-Mobile", "Sec-CH-UA-Platform", "TE", "Range", "Keep-Alive"]


def test_every_known_name_is_found():
    # a known name's environ key is the interned constant; a name that is
    # not found gets a key built for it (equal, but another object)
    import sys
    from gunicorn.config import Config
    config = hp.ParserConfig(Config())
    for name in ALL_KNOWN:
        for spelled in (name, name.upper(), name.lower()):
            parser = hp.RequestParser(config, None, ("127.0.0.1", 1), ("127.0.0.1", 2))
            host = [] if name == "Host" else [b"Host: a"]
            env = parser.parse(request(host + [spelled.encode() + b": v"]))
            want = "HTTP_" + name.upper().replace("-", "_")
            key = next(k for k in env if k == want)
            assert key is sys.intern(want), name
        # a name one byte longer or shorter is not that name
        for other in (name + "x", name[:-1] + "x"):
            if other.upper() in (n.upper() for n in ALL_KNOWN):
                continue
            parser = hp.RequestParser(config, None, ("127.0.0.1", 1), ("127.0.0.1", 2))
            env = parser.parse(request([b"Host: a", other.encode() + b": v"]))
            want = "HTTP_" + other.upper().replace("-", "_")
            key = next(k for k in env if k == want)
            assert key is not sys.intern(want), other


def test_secure_scheme_headers_still_matched():
    cfg = {"secure_scheme_headers": {"X-FORWARDED-PROTO": "https", "X-SCHEME": "https"},
           "forwarded_allow_ips": "*"}
    for name in (b"X-Forwarded-Proto", b"x-scheme", b"X-FORWARDED-PROTOx"):
        ours = assert_same(request([b"Host: a", name + b": https"]), cfg)
        assert ours.requests
    ours = assert_same(request([b"Host: a", b"X-Scheme: https", b"X-Forwarded-Proto: http"]), cfg)
    assert ours.end[0] == "error"


@pytest.mark.parametrize("tail", TAILS, ids=["alone", "pipelined", "long-tail"])
def test_head_end_at_each_offset(tail):
    # past 64: the end is found two blocks at a time, then one
    for pad in range(0, 80):
        data = request([b"Host: a", b"X-Pad: " + b"p" * pad]) + tail
        ours = assert_same(data)
        assert ours.requests
        # near misses of CRLF CRLF: a lone CR or LF is refused, as gunicorn does
        for bad in (b"\r\n\r", b"\n\r\n", b"\r\r\n"):
            assert_same(b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"p" * pad + bad + b"\r\n" + tail)


def test_value_of_every_length_with_obs_text():
    for length in range(0, 50):
        for fill in (b"a", b"\xe9"):
            data = request([b"Host: a", b"X-Value: " + fill * length])
            ours = assert_same(data)
            assert ours.requests


# A header of low variety whose bytes are those of its last value is given
# that value without a scan; anything else must be scanned and judged anew.
SHARED = [b"Host", b"User-Agent", b"Accept-Encoding", b"Connection", b"Sec-Fetch-Mode", b"DNT",
          # kept per connection
          b"Cookie", b"Authorization"]


def near_misses(v):
    return [v, v + b" ", v + b"\t", b" " + v, b"\t " + v + b"  ", v + b"x", v[:-1], b"x" + v[1:],
            v + b"\x01", v + b"\x7f", v + b"\r", v + b"\n", v[:1] + b"\x00" + v[2:], v + b"\xe9",
            v.upper(), b"", b"  ", v + b"z\n", v + b"z\nX-Y: 1", v + b"\x01\n"]


@pytest.mark.parametrize("name", SHARED, ids=lambda b: b.decode())
def test_value_seen_last_time_and_near_misses(name):
    for first in (b"keep-alive", b"gzip, deflate, br", b"caf\xe9", b"1", b""):
        for second in near_misses(first) + [first]:
            for then_fold in (False, True):
                headers = [b"Host: a"] if name != b"Host" else []
                one = request(headers + [name + b": " + first])
                two = request(headers + [name + b": " + second] +
                              ([b" folded"] if then_fold else []) + [b"X-After: 1"])
                # first on one connection, then both pipelined: the second
                # request meets what the first left behind
                assert_same(one + two)
                assert_same(one + one + two)


def test_shared_value_across_connections_of_one_worker():
    from gunicorn.config import Config
    config = hp.ParserConfig(Config())
    envs = []
    for value in (b"gzip", b"gzip", b"gzip ", b"br", b"gzip"):
        parser = hp.RequestParser(config, None, ("127.0.0.1", 1), ("127.0.0.1", 2))
        parser.feed(request([b"Host: a", b"Accept-Encoding: " + value]))
        envs.append(parser.parse())
    assert [e["HTTP_ACCEPT_ENCODING"] for e in envs] == ["gzip", "gzip", "gzip", "br", "gzip"]
    # the same bytes give the same object, which is what saves the work
    assert envs[0]["HTTP_ACCEPT_ENCODING"] is envs[1]["HTTP_ACCEPT_ENCODING"]


def test_values_kept_per_connection_stay_with_their_connection():
    from gunicorn.config import Config
    config = hp.ParserConfig(Config())
    one = hp.RequestParser(config, None, ("127.0.0.1", 1), ("127.0.0.1", 2))
    two = hp.RequestParser(config, None, ("127.0.0.1", 3), ("127.0.0.1", 2))
    long_value = b"k=" + b"v" * 8000
    seen = []
    for parser, cookie, auth in ((one, b"a=1", b"Basic x"), (two, b"a=2", b"Basic y"),
                                 (one, b"a=1", b"Basic x"), (two, b"a=1", b"Basic x"),
                                 (one, b"a=1 ", b"Basic  x"), (one, long_value, b"Basic x"),
                                 (one, long_value, b"Basic x"), (one, long_value[:-1], b"")):
        env = parser.parse(request([b"Host: a", b"Cookie: " + cookie, b"Authorization: " + auth]))
        assert env["HTTP_COOKIE"] == cookie.strip().decode()
        assert env["HTTP_AUTHORIZATION"] == auth.strip().decode()
        seen.append(env["HTTP_COOKIE"])
    # the same bytes on the same connection give the same object
    assert seen[2] is seen[0] and seen[6] is seen[5]
    assert seen[3] is not seen[0]


# What one request leaves for the next on the same connection: the
# connection's base environ keeps the method, protocol, query, scheme and
# SCRIPT_NAME of the last request and is updated only when they change.
def test_environ_keys_carried_between_requests_of_a_connection():
    cfg = {"secure_scheme_headers": {"X-FORWARDED-PROTO": "https"}, "forwarded_allow_ips": "*"}
    variants = [
        request([b"Host: a"]),
        request([b"Host: a"], line=b"POST /p?q=1 HTTP/1.1"),
        request([b"Host: a", b"Content-Length: 0", b"Connection: keep-alive"], line=b"PUT /p? HTTP/1.0"),
        request([b"Host: a", b"X-Forwarded-Proto: https"], line=b"GET /s/x HTTP/1.1"),
        request([b"Host: a", b"SCRIPT_NAME: /s"], line=b"GET /s/x HTTP/1.1"),
        request([b"Host: a", b"X-Forwarded-Proto: http"], line=b"HEAD /?a HTTP/1.1"),
        request([b"Host: a"], line=b"DELETE /?a HTTP/1.1"),
    ]
    for overrides in (cfg, dict(cfg, header_map="dangerous")):
        for order in (variants, variants[::-1], variants[1::2] + variants[::2]):
            ours = assert_same(b"".join(order), overrides)
            assert len(ours.requests) == len(order), ours.end
        # each followed by each
        for one in variants:
            for two in variants:
                assert_same(one + two + one, overrides)


@pytest.mark.parametrize("tail", TAILS[:2], ids=["alone", "pipelined"])
@pytest.mark.parametrize("byte", [b"?", b"#", b"%", b"%41", b"%zz", b"\x7f", b"\x80", b"\x01", b"\t",
                                  b"~", b"/"], ids=lambda b: repr(b)[2:-1])
def test_request_target_byte_at_each_offset(byte, tail):
    for length in (1, 2, 15, 16, 17, 31, 33):
        for offset in range(0, length):
            target = bytearray(b"/" + b"t" * length)
            target[offset + 1:offset + 2] = byte
            for extra in (b"", b"?q=%2F#f", b"#f?g"):
                line = b"GET " + bytes(target) + extra + b" HTTP/1.1"
                assert_same(request([b"Host: a"], line=line) + tail)


# The environ of a request whose known headers are those of the request
# before it starts as a copy of a connection's template (the base environ
# with those headers and the values they had); a field whose value is the
# template's object needs nothing more. Every way a request can differ from
# that template: each is put after requests that made the template, and
# before and after requests that use it.
BROWSER = [b"Host: a", b"User-Agent: UA/1.0", b"Accept: */*", b"Accept-Encoding: gzip",
           b"Cookie: s=1", b"Connection: keep-alive"]


def template_near_misses():
    b = BROWSER
    return {
        "same": b,
        "one value differs": b[:2] + [b"Accept: text/html"] + b[3:],
        "value trimmed differently": b[:3] + [b"Accept-Encoding:  gzip \t"] + b[4:],
        "other cookie": b[:4] + [b"Cookie: s=2"] + b[5:],
        "one missing": b[:2] + b[3:],
        "last missing": b[:-1],
        "all missing": [],
        "known added": b + [b"Referer: /r"],
        "unknown added": b + [b"X-Extra: 1"],
        "reordered": b[::-1],
        "known repeated": b + [b"Accept: text/plain"],
        "repeated, first empty": b[:2] + [b"Accept:", b"Accept: */*"] + b[3:],
        "cookie repeated": b + [b"Cookie: t=2"],
        "name of a known key with '_'": b + [b"User_Agent: other"],
        "'_' name first": [b"User_Agent: other"] + b,
        "'_' name alone": [b"User_Agent: other"] + b[:1] + b[2:],
        "SCRIPT_NAME": b + [b"SCRIPT_NAME: /s"],
        "content type and length": b + [b"Content-Type: text/plain", b"Content-Length: 2"],
        "content type only": b + [b"Content-Type: text/plain"],
        "case of names": [h.upper() for h in b],
        "many unknown": b + [b"X-H%d: %d" % (i, i) for i in range(70)],
        "many, repeated across": ([b"X-H%d: %d" % (i, i) for i in range(60)] + b +
                                  [b"Accept: a", b"X-H1: again"] + [b"X-K%d: 1" % i for i in range(10)]),
    }


def body_for(headers):
    return b"ok" if any(h.startswith(b"Content-Length") for h in headers) else b""


@pytest.mark.parametrize("cfg", [None, {"header_map": "dangerous"},
                                 {"forwarded_allow_ips": "*", "forwarder_headers": "USER_AGENT"}],
                         ids=["default", "dangerous", "forwarder"])
def test_environ_template_and_near_misses(cfg):
    cfg = dict(cfg or {}, limit_request_fields=200)
    base = request(BROWSER)
    for name, headers in template_near_misses().items():
        other = request(headers) + body_for(headers)
        for seq in ([base, base, other, base, base],
                    [base, base, other, other, other, base],
                    [other, other, base, base, other],
                    [base, base, base, other, base, other, other, base]):
            ours = assert_same(b"".join(seq), cfg)
            assert ours.end == ("stop",) or ours.end[0] == "error", (name, ours.end)


def test_environ_template_holds_nothing_of_an_earlier_request():
    from gunicorn.config import Config
    parser = hp.RequestParser(hp.ParserConfig(Config()), None, ("127.0.0.1", 1), ("127.0.0.1", 2))
    first = request(BROWSER + [b"Authorization: secret", b"Referer: /a"])
    for _ in range(3):
        env = parser.parse(first)
        assert env["HTTP_AUTHORIZATION"] == "secret" and env["HTTP_REFERER"] == "/a"
    env = parser.parse(request(BROWSER))
    assert "HTTP_AUTHORIZATION" not in env and "HTTP_REFERER" not in env
    env = parser.parse(request(BROWSER[:1]))
    assert sorted(k for k in env if k.startswith("HTTP_")) == ["HTTP_HOST"]
    # an application changing its environ changes nothing for the next request
    env = parser.parse(first)
    env["HTTP_COOKIE"] = "changed"
    env["HTTP_X_NEW"] = "1"
    del env["HTTP_HOST"]
    env = parser.parse(first)
    assert env["HTTP_COOKIE"] == "s=1" and env["HTTP_HOST"] == "a" and "HTTP_X_NEW" not in env


@pytest.mark.parametrize("peer", [("127.0.0.1", 5000), "", b"/tmp/sock"], ids=["tcp", "unix", "bytes"])
@pytest.mark.parametrize("server", [("127.0.0.1", 8000), "unix:/tmp/sock"], ids=["tcp", "unix"])
def test_environ_template_per_peer_and_listener(peer, server):
    data = b"".join([request(BROWSER)] * 3 + [request(BROWSER[:1])] * 3 + [request(BROWSER)])
    ours, reads = oracle.run_turbo(hp, [data], None, peer_addr=peer, server_addr=server)
    theirs = oracle.run_gunicorn(reads, None, peer_addr=peer, server_addr=server)
    assert ours == theirs, oracle.describe_difference(ours, theirs)
    assert len(ours.requests) == 7


def test_environ_template_dropped_and_made_again():
    # values that change on every request make the template not pay: it is
    # dropped for a while, then made again; every request is still right
    def changing(i):
        return request([h.split(b":")[0] + b": " + (b"%d" % i) * (1 + i % 3) for h in BROWSER])
    seq = [request(BROWSER)] * 2 + [changing(i) for i in range(20)] + [request(BROWSER)] * 20
    seq += [changing(i) for i in range(3)] + [request(BROWSER)] * 3 + [changing(i) for i in range(15)]
    assert len(seq) <= oracle.MAX_REQUESTS
    ours = assert_same(b"".join(seq))
    assert len(ours.requests) == len(seq)


def test_methods_taken_without_checks_and_near_misses():
    # GET, POST and HEAD are taken as they are; a method one byte off from
    # them is checked as any other
    methods = [b"GET", b"POST", b"HEAD", b"PUT", b"OPTIONS", b"PATCH"]
    for m in list(methods):
        for i in range(len(m)):
            for repl in (b"t", b"#", b"@", b"\x80", b"_"):
                methods.append(m[:i] + repl + m[i + 1:])
        methods += [m + b"S", m[:-1], m.lower(), b"X" + m]
    for cfg in (None, {"permit_unconventional_http_method": True},
                {"casefold_http_method": True, "permit_unconventional_http_method": True}):
        for m in methods:
            assert_same(request([b"Host: a"], line=m + b" / HTTP/1.1"), cfg)


def test_port_strings_and_listener_addresses():
    # REMOTE_PORT and SERVER_PORT are made without int's conversion; a
    # listener's SERVER_PORT is made once for the address object the workers
    # pass for each of its connections
    from gunicorn.config import Config
    config = hp.ParserConfig(Config())
    one, two = ("0.0.0.0", 8000), ("::", 8443)
    ports = [0, 1, 9, 10, 99, 100, 80, 443, 8000, 65535, 99999, 999999, 1000000, -1, 2 ** 70, True]
    for i, port in enumerate(ports):
        for server in (one, two, one, ("0.0.0.0", 8000), ("127.0.0.1", port)):
            parser = hp.RequestParser(config, None, ("10.0.0.%d" % i, port), server)
            env = parser.parse(request([b"Host: a"]))
            assert env["REMOTE_PORT"] == str(port)
            assert (env["SERVER_NAME"], env["SERVER_PORT"]) == (server[0], str(server[1]))
