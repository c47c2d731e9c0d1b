"""The arithmetic of the report: medians, ratios, Jain's fairness index."""
import math


def _clean(values):
    return [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def median(values):
    """Median of the values that are not None/NaN; None if there are none."""
    vals = sorted(_clean(values))
    if not vals:
        return None
    mid = len(vals) // 2
    if len(vals) % 2:
        return vals[mid]
    return (vals[mid - 1] + vals[mid]) / 2


def ratio(a, b):
    """a / b, or None when either is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def paired_ratio(a_values, b_values):
    """Median of the per-round ratios a[i] / b[i].

    Runs are interleaved, so round i of A and round i of B ran close in time
    under the same conditions: their ratio cancels the drift between rounds
    that a ratio of two medians would keep. Rounds where either side has no
    figure are left out; None when no round has both.
    """
    return median([ratio(a, b) for a, b in zip(a_values, b_values)])


def jain(counts, n=None):
    """Jain's fairness index (sum x)^2 / (n * sum x^2).

    ``counts`` are the requests each worker served; with ``n`` greater than
    ``len(counts)`` the missing workers count as having served nothing.
    1.0 is a perfectly even spread, 1/n means one worker served everything.
    None when nothing was served at all.
    """
    counts = list(counts)
    if n is None:
        n = len(counts)
    if n < len(counts):
        raise ValueError("n=%d is smaller than the %d counts given" % (n, len(counts)))
    total = sum(counts)
    squares = sum(c * c for c in counts)
    if n == 0 or squares == 0:
        return None
    return total * total / (n * squares)


def best(values):
    """(key, value) of the largest value in a dict, ignoring None; (None, None) if empty."""
    items = [(k, v) for k, v in values.items() if v is not None]
    if not items:
        return None, None
    return max(items, key=lambda kv: kv[1])
