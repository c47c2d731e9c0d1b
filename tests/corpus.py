"""The request corpus of ../shared/corpus/gunicorn-requests and gunicorn settings for its cases.

The corpus README says how a ``.http`` file becomes the bytes on the wire and
what ``expected.json`` holds; this module does exactly that and nothing more,
so the test modules can stay about what they test. ``TURBOWORKERS_CORPUS``
points at another copy of the corpus.
"""
import copy
import json
import os
import pathlib
import re

from gunicorn.config import Config

HERE = pathlib.Path(__file__).resolve().parent
CORPUS_DIR = pathlib.Path(os.environ.get(
    "TURBOWORKERS_CORPUS",
    HERE.parent.parent / "shared" / "corpus" / "gunicorn-requests"))

_ESCAPE = re.compile(rb"\\(r\\n|0|n|t|x[0-9A-Fa-f]{2})?")
_SIMPLE = {b"r\\n": b"\r\n", b"0": b"\0", b"n": b"\n", b"t": b"\t"}


class CorpusFormatError(ValueError):
    """A ``.http`` file holds a backslash the README gives no meaning to."""


def decode_http(raw, name="<corpus file>"):
    """Return the wire bytes a corpus ``.http`` file stands for (README, "Reading a .http file").

    Real newlines are layout only; the escapes are read left to right in one
    pass, so the result of one replacement is never read again as an escape.
    """
    raw = raw.replace(b"\n", b"")

    def one(match):
        esc = match.group(1)
        if esc is None:
            raise CorpusFormatError("%s: stray backslash at offset %d: %r"
                                    % (name, match.start(), raw[match.start():match.start() + 8]))
        if esc[:1] == b"x":
            return bytes([int(esc[1:], 16)])
        return _SIMPLE[esc]

    return _ESCAPE.sub(one, raw)


def available():
    """Why the corpus cannot be used here, or None when it can."""
    if not (CORPUS_DIR / "expected.json").is_file():
        return "request corpus not found at %s (set TURBOWORKERS_CORPUS)" % CORPUS_DIR
    return None


def load_expected():
    """expected.json as a dict keyed ``valid/NNN.http`` / ``invalid/NNN.http``."""
    with open(CORPUS_DIR / "expected.json", encoding="utf-8") as f:
        return json.load(f)


def case_names():
    """Every request file of valid/ and invalid/, sorted, as expected.json keys them."""
    names = []
    for sub in ("valid", "invalid"):
        names.extend("%s/%s" % (sub, p.name) for p in sorted((CORPUS_DIR / sub).glob("*.http")))
    return names


def load_case(name):
    """The wire bytes of one corpus file, e.g. ``load_case("valid/001.http")``."""
    return decode_http((CORPUS_DIR / name).read_bytes(), name)


# -- settings ---------------------------------------------------------------

_BASE_CFG = None


def make_cfg(overrides=None, **more):
    """A fresh ``gunicorn.config.Config`` with ``overrides`` (and ``more``) applied by ``cfg.set``.

    ``Config()`` builds every setting of gunicorn and costs most of a
    millisecond, too much for tens of thousands of generated cases; a clone of
    one default Config costs microseconds. Only the settings that change are
    copied before ``cfg.set`` runs their validator, so no two configs share a
    changed value and the cached network lists of forwarded_allow_ips are reset.
    """
    global _BASE_CFG
    if _BASE_CFG is None:
        _BASE_CFG = Config()
    cfg = copy.copy(_BASE_CFG)
    cfg.settings = dict(_BASE_CFG.settings)
    cfg._forwarded_allow_networks = None
    cfg._proxy_allow_networks = None
    items = dict(overrides or {})
    items.update(more)
    for name, value in items.items():
        if name not in cfg.settings:
            raise AttributeError("No configuration setting for: %s" % name)
        cfg.settings[name] = cfg.settings[name].copy()
        if isinstance(value, (list, tuple)) and not isinstance(cfg.settings[name].default, (list, tuple)):
            # expected.json writes comma-separated settings (forwarded_allow_ips)
            # as the lists they become; their validators take the string form.
            value = ",".join(value)
        cfg.set(name, value)
    return cfg


def needs_gunicorn_parser(overrides):
    """The settings of ``overrides`` that only gunicorn's own parser carries out.

    These are the ones ``supports_config`` of our parser must turn down (the
    worker then falls back to gunicorn's parser for the whole deployment).
    """
    cfg = make_cfg(overrides)
    reasons = []
    if cfg.permit_obsolete_folding:
        reasons.append("permit_obsolete_folding")
    if cfg.strip_header_spaces:
        reasons.append("strip_header_spaces")
    if cfg.proxy_protocol != "off":
        reasons.append("proxy_protocol")
    if getattr(cfg, "protocol", "http") == "uwsgi":
        reasons.append("protocol")
    return reasons


# -- ways to cut one input into reads ----------------------------------------

def split_lines(data):
    """Cut after every LF (the last piece may have none)."""
    pieces = data.split(b"\n")
    out = [p + b"\n" for p in pieces[:-1]]
    if pieces[-1]:
        out.append(pieces[-1])
    return [p for p in out if p]


def split_bytes(data):
    return [data[i:i + 1] for i in range(len(data))]


def split_random(data, rnd, max_cuts=12):
    """Cut at up to ``max_cuts`` positions drawn from ``rnd`` (a random.Random)."""
    if len(data) < 2:
        return [data] if data else []
    cuts = sorted(set(rnd.randrange(1, len(data)) for _ in range(rnd.randint(1, max_cuts))))
    bounds = [0] + cuts + [len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]
