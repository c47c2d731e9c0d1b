"""Drive a request parser over a list of reads and describe, in plain data, what it did.

``run_gunicorn`` runs the reference: gunicorn's own pure-Python parser
(``http_parser = "python"``) through ``gunicorn.http.parser.RequestParser`` and
``gunicorn.http.wsgi.create``, exactly as its sync worker does. ``run_turbo``
runs ``turboworkers._http_parser`` the same way. Both return an ``Outcome``, a
tree of plain values, so a test asserts ``ours == gunicorn`` and a failure
prints both.

The loop mirrors a keep-alive worker: take the next request, build its
environ, read the body the way the test says (or not at all, leaving it to the
parser's drain), snapshot the request, and stop at the first error or when the
parser says the connection is done.
"""
import pprint
import sys

import gunicorn.http.wsgi
from gunicorn.http.parser import RequestParser as GunicornRequestParser

import corpus

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class RecordingSocket:
    """The ``sock`` of a connection: records what the parser layer sends (100 Continue).

    Each write is kept with ``tag``, which the driver sets to the number of
    the request being served, or to ("between", n) while the parser looks
    for the request after n (and drains the body of n).
    """

    def __init__(self):
        self.log = []
        self.tag = ("between", -1)

    @property
    def sent(self):
        return [data for _tag, data in self.log]

    def send(self, data):
        self.log.append((self.tag, bytes(data)))
        return len(data)

    def sendall(self, data):
        self.log.append((self.tag, bytes(data)))


class ChunkSource:
    """A socket-like source: ``recv(n)`` hands out the given reads in order, then b"" for ever.

    A read longer than ``n`` is cut, as a socket would; ``served`` is the list
    of reads the parser really got, which is what the reference parser is fed
    afterwards so both see the very same pieces.
    """

    def __init__(self, chunks):
        self.pending = [bytes(c) for c in chunks if c]
        self.served = []

    def recv(self, n):
        if not isinstance(n, int) or n <= 0:
            raise AssertionError("recv(%r): a parser must ask for at least one byte" % (n,))
        if not self.pending:
            return b""
        head = self.pending[0]
        if len(head) > n:
            self.pending[0] = head[n:]
            head = head[:n]
        else:
            self.pending.pop(0)
        self.served.append(head)
        return head

    def all_reads(self):
        """The reads served so far followed by what was never asked for."""
        return self.served + self.pending


# -- how a test reads a body ---------------------------------------------------
#
# A plan is a tuple: ("read",) read() once; ("read_n", k) read(k) until b"";
# ("readline",) readline() until b""; ("readline_n", k) readline(k) until b"";
# ("iter",) for line in body; ("readlines",) readlines(); ("partial", k) one
# read(k) and the rest left to the parser's drain; ("none",) nothing read.
PLANS = (("read",), ("read_n", 1), ("read_n", 7), ("read_n", 1024), ("readline",),
         ("readline_n", 1), ("readline_n", 5), ("iter",), ("readlines",),
         ("partial", 3), ("none",))

_LOOP_LIMIT = 1 << 20  # a reader returning data for ever is a failure, not a hang


def read_body(body, plan):
    """Read ``body`` per ``plan``: (list of pieces returned, error or None)."""
    pieces = []
    kind = plan[0]
    try:
        if kind == "read":
            pieces.append(body.read())
        elif kind in ("read_n", "readline_n", "readline"):
            for _ in range(_LOOP_LIMIT):
                if kind == "read_n":
                    piece = body.read(plan[1])
                elif kind == "readline_n":
                    piece = body.readline(plan[1])
                else:
                    piece = body.readline()
                pieces.append(piece)
                if not piece:
                    break
            else:
                raise AssertionError("body reader never reached the end")
        elif kind == "iter":
            for n, line in enumerate(body):
                pieces.append(line)
                if n > _LOOP_LIMIT:
                    raise AssertionError("body iterator never reached the end")
        elif kind == "readlines":
            pieces.extend(body.readlines())
        elif kind == "partial":
            pieces.append(body.read(plan[1]))
        elif kind == "none":
            pass
        else:
            raise ValueError("unknown plan %r" % (plan,))
    except AssertionError:
        raise
    except Exception as exc:  # the error is part of the outcome
        return pieces, describe_error(exc)
    for piece in pieces:
        if type(piece) is not bytes:
            raise AssertionError("body %s returned %r, not bytes" % (kind, type(piece)))
    return pieces, None


def describe_error(exc):
    """(class name, str()) of an error; gunicorn's errors are named by class, others flagged."""
    cls = type(exc)
    name = cls.__name__
    if not cls.__module__.startswith("gunicorn."):
        name = "%s.%s" % (cls.__module__, name)
    try:
        text = str(exc)
    except Exception as inner:  # noqa: BLE001 - a broken __str__ is itself a finding
        text = "<str() raised %s: %s>" % (type(inner).__name__, inner)
    return (name, text)


# -- environ -------------------------------------------------------------------

def _typed(value):
    """A value with its exact type, so "1" never equals 1 nor True equal 1."""
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_typed(v) for v in value))
    return (type(value).__name__, value)


def normalise_environ(environ, body, sock):
    """The environ as comparable data: object values by kind, others with their type.

    ``wsgi.early_hints`` is left out: gunicorn's create() adds it, our worker
    (not the parser) does.
    """
    if type(environ) is not dict:
        return {"<environ is not a dict>": type(environ).__name__}
    out = {}
    for key, value in environ.items():
        if key == "wsgi.early_hints":
            continue
        if key == "wsgi.input":
            ok = value is body and all(callable(getattr(value, m, None))
                                       for m in ("read", "readline", "readlines", "__iter__"))
            out[key] = "<request body>" if ok else "<bad wsgi.input %r>" % (value,)
        elif key == "wsgi.errors":
            ok = all(callable(getattr(value, m, None)) for m in ("write", "writelines", "flush"))
            out[key] = "<error stream>" if ok else "<bad wsgi.errors %r>" % (value,)
        elif key == "gunicorn.socket":
            out[key] = "<the sock passed>" if value is sock else "<another object %r>" % (value,)
        elif key == "wsgi.file_wrapper":
            ok = value is gunicorn.http.wsgi.FileWrapper
            out[key] = "<gunicorn FileWrapper>" if ok else "<bad wsgi.file_wrapper %r>" % (value,)
        else:
            out[key] = _typed(value)
    return out


def snapshot_request(req):
    """The attributes of a parsed request that both parsers expose."""
    return {
        "method": _typed(req.method),
        "uri": _typed(req.uri),
        "path": _typed(req.path),
        "query": _typed(req.query),
        "fragment": _typed(req.fragment),
        "version": _typed(req.version),
        "scheme": _typed(req.scheme),
        "headers": [tuple(_typed(x) for x in h) for h in req.headers],
    }


class Outcome:
    """What a parser did with one connection: ``requests`` served and how it ``end``-ed.

    Each request is a dict (see ``_serve``); ``end`` is ("stop",) when the
    parser said there is no further request, or ("error", class, str).
    What went to the sock (100 Continue) is kept apart, in ``sock.log``, and
    compared by ``check_continues``: gunicorn writes it when the environ is
    built, we when the body is first read.
    """

    def __init__(self, sock=None):
        self.requests = []
        self.end = None
        self.sock = sock

    @property
    def sent(self):
        """Everything written to the connection's sock (100 Continue only)."""
        return list(self.sock.sent) if self.sock is not None else None

    def sent_for(self, tag):
        return sum(1 for t, _ in self.sock.log if t == tag)

    def as_data(self):
        return {"requests": self.requests, "end": self.end}

    def __eq__(self, other):
        return isinstance(other, Outcome) and self.as_data() == other.as_data()

    def __repr__(self):
        return "Outcome(%s)" % pprint.pformat(self.as_data(), width=110)


def _serve(outcome, req, environ, body, plan):
    entry = {"request": snapshot_request(req), "environ": normalise_environ(environ, body, outcome.sock)}
    pieces, error = read_body(body, plan)
    entry["body"] = pieces
    entry["body_error"] = error
    entry["trailers"] = [tuple(_typed(x) for x in t) for t in (req.trailers or [])]
    entry["should_close"] = bool(req.should_close())
    outcome.requests.append(entry)


MAX_REQUESTS = 64  # more pipelined requests than any generated input holds


def run_gunicorn(chunks, cfg_overrides=None, peer_addr=("127.0.0.1", 5000),
                 server_addr=("127.0.0.1", 8000), plan=("read",)):
    """gunicorn's reference parser over ``chunks`` (each one read of the source)."""
    cfg = corpus.make_cfg(cfg_overrides, http_parser="python")
    sock = RecordingSocket()
    outcome = Outcome(sock)
    chunks = [bytes(c) for c in chunks if c]
    parser = GunicornRequestParser(cfg, iter(chunks), peer_addr)
    for n in range(MAX_REQUESTS):
        sock.tag = ("between", n - 1)
        try:
            req = next(parser)
        except StopIteration:
            outcome.end = ("stop",)
            return outcome
        except Exception as exc:
            outcome.end = ("error",) + describe_error(exc)
            return outcome
        sock.tag = n
        try:
            _resp, environ = gunicorn.http.wsgi.create(req, sock, peer_addr, server_addr, cfg)
        except Exception as exc:
            outcome.end = ("error",) + describe_error(exc)
            return outcome
        _serve(outcome, req, environ, req.body, plan)
    outcome.end = ("too many requests",)
    return outcome


def run_turbo(module, chunks, cfg_overrides=None, peer_addr=("127.0.0.1", 5000),
              server_addr=("127.0.0.1", 8000), plan=("read",), with_sock=True):
    """Our parser (``module`` is turboworkers._http_parser) over ``chunks``, pull mode.

    Returns (outcome, reads): ``reads`` is the list of reads the parser really
    got from the source (a read is cut where the parser asked for fewer bytes),
    to be handed to ``run_gunicorn`` so both parse the same pieces.
    """
    cfg = corpus.make_cfg(cfg_overrides)
    source = ChunkSource(chunks)
    sock = RecordingSocket() if with_sock else None
    outcome = Outcome(sock)
    parser = module.RequestParser(module.ParserConfig(cfg), source, peer_addr, server_addr, sock=sock)
    for n in range(MAX_REQUESTS):
        if sock is not None:
            sock.tag = ("between", n - 1)
        try:
            environ = parser.next_request()
        except Exception as exc:
            outcome.end = ("error",) + describe_error(exc)
            return outcome, source.all_reads()
        if environ is None:
            outcome.end = ("stop",)
            return outcome, source.all_reads()
        body = environ.get("wsgi.input") if type(environ) is dict else None
        req = parser.req
        if sock is not None:
            sock.tag = n
        if req.body is not body:
            outcome.requests.append({"<parser.req.body is not environ['wsgi.input']>": True})
        _serve(outcome, req, environ, body, plan)
    outcome.end = ("too many requests",)
    return outcome, source.all_reads()


def describe_difference(ours, theirs, limit=12):
    """The differing leaves of two outcomes, one line each."""
    lines = []

    def walk(path, o, t):
        if len(lines) >= limit or o == t:
            return
        if isinstance(o, dict) and isinstance(t, dict):
            for k in sorted(set(o) | set(t), key=str):
                walk("%s[%r]" % (path, k), o.get(k, "<absent>"), t.get(k, "<absent>"))
        elif isinstance(o, list) and isinstance(t, list) and len(o) == len(t):
            for i, (a, b) in enumerate(zip(o, t)):
                walk("%s[%d]" % (path, i), a, b)
        else:
            lines.append("  %s:\n    ours:     %r\n    gunicorn: %r" % (path, o, t))

    walk("outcome", ours.as_data(), theirs.as_data())
    return "\n".join(lines)


def _expects_content(request):
    """Whether a request's framing announces content (a snapshot_request dict)."""
    for (_, name), (_, value) in request["headers"]:
        if name == "TRANSFER-ENCODING":
            return True
        if name == "CONTENT-LENGTH":
            value = value.strip(" \t")
            return not (value.isdigit() and int(value) == 0)
    return False


def check_continues(ours, theirs, plan):
    """The 100 Continue writes agree, allowing for the deliberate difference in timing.

    gunicorn writes 100 Continue when it builds the environ; we write it when
    the body is first read (or drained), and may leave it out when the
    framing announces no content (RFC 9110 10.1.1 allows that). So over the
    connection: only 100 Continue; never more than gunicorn; none while
    reading the body of a request gunicorn sent none for; and at least one
    for each request gunicorn sent one for whose body was read and announced
    content. Returns the problems found.
    """
    if ours.sent is None:  # our parser was given no sock
        return []
    problems = []
    if any(s != CONTINUE for s in ours.sent):
        problems.append("we sent something else than 100 Continue: %r" % (ours.sent,))
    if len(ours.sent) > len(theirs.sent):
        problems.append("we sent %d 100 Continue, gunicorn %d" % (len(ours.sent), len(theirs.sent)))
    required = 0
    for n, entry in enumerate(theirs.requests[:len(ours.requests)]):
        if ours.sent_for(n) and not theirs.sent_for(n):
            problems.append("request %d: we sent 100 Continue while reading its body, gunicorn sent none"
                            % n)
        if theirs.sent_for(n) and plan[0] != "none" and _expects_content(entry["request"]):
            required += 1
    if len(ours.sent) < required:
        problems.append("%d request(s) expecting 100-continue announced content and had their body read "
                        "with %r: we sent %d 100 Continue" % (required, plan, len(ours.sent)))
    return problems


def python_version_note():
    return "gunicorn %s on Python %s" % (gunicorn.__version__, sys.version.split()[0])
