"""Conformance of turboworkers._http_parser on gunicorn's own request corpus.

Every request file of the corpus (see its README) is parsed by our parser fed
whole, line by line, byte by byte and in seeded random reads, and must give
the outcome expected.json records: the error class, or each pipelined
request's method, target, version, headers, body and trailers. The same
reads are also given to gunicorn's reference parser and the two outcomes must
be equal in every detail (error messages, environ, body pieces).

expected.json was written for some gunicorn release; the installed gunicorn
decides when they disagree (README). Where they do, the test follows the
installed gunicorn and its id ends in ``gunicorn-overrides-expected``;
``test_expected_json_agrees_with_installed_gunicorn`` names the difference.
With gunicorn 27.0.1 there are two: valid/009.http (Transfer-Encoding:
identity beside Content-Length, refused now because a Transfer-Encoding that
does not end in chunked leaves the length unknown, RFC 9112 6.3) and
valid/027.http (raw bytes >= 0x80 in the target, refused now per RFC 9112
3.2 / RFC 3986 2); both are expected to be refused, as gunicorn does.

Cases whose settings only gunicorn's own parser carries out (obsolete line
folding, strip_header_spaces, the PROXY protocol) must be turned down by
``supports_config``: the worker falls back to gunicorn's parser for those
deployments. They are asserted as such, never skipped.
"""
import random

import pytest

from turboworkers import _ext

if _ext.MODE == "pure":
    pytest.skip("pure mode (TURBOWORKERS_NO_EXTENSIONS=1): the compiled parser is not used",
                allow_module_level=True)

import corpus  # noqa: E402
import gunicorn_oracle as oracle  # noqa: E402

_missing = corpus.available()
if _missing:
    pytest.skip(_missing, allow_module_level=True)

hp = _ext.http_parser

EXPECTED = corpus.load_expected()
NAMES = corpus.case_names()
RANDOM_SEEDS = (1, 2, 3, 4)

# One way of reading the body per way of cutting the input: every file's body
# is read whole, per line, a byte at a time, and in odd steps across the runs.
SPLITS = {
    "whole": (lambda data, name: [data], ("read",)),
    "lines": (lambda data, name: corpus.split_lines(data), ("readline",)),
    "bytes": (lambda data, name: corpus.split_bytes(data), ("read_n", 1)),
}
_RANDOM_PLANS = (("read_n", 7), ("readline_n", 5), ("iter",), ("readlines",))
for _seed in RANDOM_SEEDS:
    SPLITS["random%d" % _seed] = (
        lambda data, name, _s=_seed: corpus.split_random(data, random.Random("%s/%d" % (name, _s))),
        _RANDOM_PLANS[_seed % len(_RANDOM_PLANS)])


def expected_summary(name):
    """expected.json's answer in the form of ``summarise``."""
    entry = EXPECTED[name]
    if entry["expect"] == "error":
        return ("error", entry["error"])
    return ("ok", entry["requests"])


def summarise(outcome):
    """An Outcome as expected.json tells it: the first error's class, or the requests."""
    for req in outcome.requests:
        if req["body_error"] is not None:
            return ("error", req["body_error"][0])
    if outcome.end[0] != "stop":
        return ("error",) + tuple(outcome.end[1:2])
    requests = []
    for req in outcome.requests:
        head = req["request"]
        requests.append({
            "body": b"".join(req["body"]).decode("latin-1"),
            "headers": [[n[1], v[1]] for n, v in head["headers"]],
            "method": head["method"][1],
            "trailers": [[n[1], v[1]] for n, v in req["trailers"]],
            "uri": head["uri"][1],
            "version": [part[1] for part in head["version"][1]],
        })
    return ("ok", requests)


def _cases():
    """(name, split) pairs with the reference outcome, decided at collection.

    The reference is expected.json unless the installed gunicorn, fed the same
    reads, says otherwise; then it is gunicorn's, and the id says so.
    """
    cases = []
    for name in NAMES:
        overrides = EXPECTED[name]["cfg"]
        if corpus.needs_gunicorn_parser(overrides):
            cases.append(pytest.param(name, None, None, id="%s-needs-gunicorn-parser" % name))
            continue
        data = corpus.load_case(name)
        for split, (cut, _plan) in SPLITS.items():
            chunks = cut(data, name)
            assert b"".join(chunks) == data
            reference = expected_summary(name)
            theirs = summarise(oracle.run_gunicorn(chunks, overrides, plan=SPLITS[split][1]))
            case_id = "%s-%s" % (name, split)
            if theirs != reference:
                reference = theirs
                case_id += "-gunicorn-overrides-expected"
            cases.append(pytest.param(name, split, reference, id=case_id))
    return cases


def _assert_same(name, ours, theirs, reads, plan):
    assert ours == theirs, (
        "%s: our parser and gunicorn's differ for the same reads\nreads: %r\nplan: %r\n%s"
        % (name, reads[:40], plan, oracle.describe_difference(ours, theirs)))
    problems = oracle.check_continues(ours, theirs, plan)
    assert not problems, "%s: %s" % (name, problems)


@pytest.mark.parametrize("name, split, reference", _cases())
def test_corpus_case(name, split, reference):
    overrides = EXPECTED[name]["cfg"]
    supported, why = hp.supports_config(corpus.make_cfg(overrides))
    if split is None:
        # gunicorn's parser serves these deployments; ours must say it cannot.
        assert supported is False, (
            "%s: cfg %r needs gunicorn's own parser (%s) but supports_config said %r"
            % (name, overrides, ", ".join(corpus.needs_gunicorn_parser(overrides)), (supported, why)))
        assert isinstance(why, str) and why, "supports_config gave no reason: %r" % (why,)
        return
    assert supported is True, "%s: supports_config(%r) refused: %r" % (name, overrides, why)

    data = corpus.load_case(name)
    cut, plan = SPLITS[split]
    ours, reads = oracle.run_turbo(hp, cut(data, name), overrides, plan=plan)
    assert b"".join(reads) == data
    assert summarise(ours) == reference, (
        "%s (%s): ours %r\nreference %r\nreads: %r\nplan: %r\nfull outcome: %r"
        % (name, split, summarise(ours), reference, reads[:40], plan, ours))
    theirs = oracle.run_gunicorn(reads, overrides, plan=plan)
    _assert_same(name, ours, theirs, reads, plan)


def _brief(summary):
    if summary[0] == "error":
        return "error %s" % summary[1]
    return "ok, %d request(s)" % len(summary[1])


def _expected_json_cases():
    cases = []
    for name in NAMES:
        theirs = summarise(oracle.run_gunicorn([corpus.load_case(name)], EXPECTED[name]["cfg"]))
        suffix = "" if theirs == expected_summary(name) else "-gunicorn-overrides-expected"
        cases.append(pytest.param(name, id=name + suffix))
    return cases


@pytest.mark.parametrize("name", _expected_json_cases())
def test_expected_json_agrees_with_installed_gunicorn(name):
    """expected.json against the installed gunicorn's reference parser, input fed whole.

    A disagreement is an expected failure, not an error of ours: the suite
    follows the installed gunicorn (README), and the reason names both answers.
    """
    data = corpus.load_case(name)
    theirs = summarise(oracle.run_gunicorn([data], EXPECTED[name]["cfg"]))
    if theirs != expected_summary(name):
        pytest.xfail("expected.json says %s, %s says %s: the suite follows the installed gunicorn"
                     % (_brief(expected_summary(name)), oracle.python_version_note(), _brief(theirs)))


# -- push mode: feed() with bytes, bytearray and memoryview --------------------

DATA_TYPES = {"bytes": bytes, "bytearray": bytearray, "memoryview": lambda b: memoryview(bytes(b))}


def _push_cases():
    cases = []
    for name in NAMES:
        if corpus.needs_gunicorn_parser(EXPECTED[name]["cfg"]):
            continue
        for tname in DATA_TYPES:
            for how in ("whole", "lines"):
                cases.append(pytest.param(name, tname, how, id="%s-push-%s-%s" % (name, how, tname)))
    return cases


def run_push(name, pieces, convert, plan=("read",)):
    """Our parser in push mode: pieces fed one by one, parse() asked after each.

    Until the head of the first request is complete parse() returns None;
    then the rest of the input and its end are fed at once and the connection
    is served the way a worker does: stop when the request says it closes the
    connection or its body was malformed, else parse() the next one (STOP at
    a clean end). Returns (outcome, reads): ``reads`` are the pieces as the
    parser received them (what was fed between two parse() calls is one
    read), which is what gunicorn is given to compare.
    """
    overrides = EXPECTED[name]["cfg"]
    sock = oracle.RecordingSocket()
    outcome = oracle.Outcome(sock)
    p = hp.RequestParser(hp.ParserConfig(corpus.make_cfg(overrides)), None,
                         ("127.0.0.1", 5000), ("127.0.0.1", 8000), sock=sock)
    pieces = list(pieces)
    reads = []
    environ = None
    try:
        while pieces and environ is None:
            reads.append(pieces.pop(0))
            p.feed(convert(reads[-1]))
            environ = p.parse()
        if pieces:
            reads.append(b"".join(pieces))
            for piece in pieces:
                p.feed(convert(piece))
        p.feed_eof()
        if environ is None:
            environ = p.parse()
        for _ in range(oracle.MAX_REQUESTS):
            if environ is hp.STOP:
                outcome.end = ("stop",)
                return outcome, reads
            if environ is None:
                outcome.end = ("parse() returned None after feed_eof()",)
                return outcome, reads
            oracle._serve(outcome, p.req, environ, environ["wsgi.input"], plan)
            if outcome.requests[-1]["body_error"] is not None or p.req.should_close():
                outcome.end = ("stop",)
                return outcome, reads
            environ = p.parse()
    except Exception as exc:
        outcome.end = ("error",) + oracle.describe_error(exc)
        return outcome, reads
    outcome.end = ("too many requests",)
    return outcome, reads


@pytest.mark.parametrize("name, tname, how", _push_cases())
def test_corpus_push(name, tname, how):
    data = corpus.load_case(name)
    pieces = [data] if how == "whole" else corpus.split_lines(data)
    ours, reads = run_push(name, pieces, DATA_TYPES[tname])
    theirs = oracle.run_gunicorn(reads, EXPECTED[name]["cfg"])
    assert ours == theirs, "%s fed %s as %s:\nreads %r\n%s" % (
        name, how, tname, reads, oracle.describe_difference(ours, theirs))
