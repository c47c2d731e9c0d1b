"""_tick.Tick, the gevent worker's fine tick while requests are in flight:
the timerfd really is armed and disarmed (read back from /proc fdinfo)."""
import os
import select

import pytest

from turboworkers import _ext

pytestmark = pytest.mark.skipif(_ext.tick is None, reason="compiled mode only")


def timer_state(pid, fd):
    """(ticks, it_value, it_interval) of a timerfd, from /proc/PID/fdinfo."""
    fields = {}
    with open("/proc/%d/fdinfo/%d" % (pid, fd)) as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    return int(fields["ticks"]), fields["it_value"], fields["it_interval"]


def wait_readable(fd, timeout=10.0):
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(timeout * 1000))


@pytest.fixture
def tick():
    t = _ext.tick.Tick(0.0002)
    yield t
    t.close()


def test_idle_tick_is_disarmed(tick):
    assert not tick.armed
    _, value, interval = timer_state(os.getpid(), tick.fileno())
    assert (value, interval) == ("(0, 0)", "(0, 0)")


def test_prepare_with_a_request_in_flight_arms_a_periodic_timer(tick):
    tick.begin()
    assert tick.active == 1
    # the request may be over before the loop waits: nothing armed yet
    assert not tick.armed
    tick.prepare()
    assert tick.armed
    # (it_value is no sign of being armed: it shows (0, 0) from an
    # expiration until the expiration is read)
    _, _, interval = timer_state(os.getpid(), tick.fileno())
    assert interval == "(0, 200000)"
    assert wait_readable(tick.fileno())
    tick.fire()
    assert tick.fired == 1


def test_fire_reads_the_expirations():
    # a slow tick, so that the next expiration is far off when it is checked
    slow = _ext.tick.Tick(0.5)
    try:
        slow.begin()
        slow.prepare()
        assert wait_readable(slow.fileno())
        assert timer_state(os.getpid(), slow.fileno())[0] >= 1
        slow.fire()
        assert timer_state(os.getpid(), slow.fileno())[0] == 0
        assert not wait_readable(slow.fileno(), timeout=0)
    finally:
        slow.close()


def test_prepare_with_nothing_in_flight_disarms(tick):
    tick.begin()
    tick.prepare()
    tick.fire()
    # still in flight: keeps ticking
    tick.prepare()
    assert tick.armed
    tick.end()
    assert tick.active == 0
    tick.prepare()
    assert not tick.armed
    _, value, interval = timer_state(os.getpid(), tick.fileno())
    assert (value, interval) == ("(0, 0)", "(0, 0)")
    # and the next wait with a request in flight arms it again
    tick.begin()
    tick.prepare()
    assert tick.armed
    _, _, interval = timer_state(os.getpid(), tick.fileno())
    assert interval == "(0, 200000)"


def test_a_request_over_before_the_wait_never_arms_it(tick):
    for _ in range(3):
        tick.begin()
        tick.end()
        tick.prepare()
        assert not tick.armed
    _, value, interval = timer_state(os.getpid(), tick.fileno())
    assert (value, interval) == ("(0, 0)", "(0, 0)")


def test_several_in_flight_keep_it_armed_until_the_last_ends(tick):
    tick.begin()
    tick.begin()
    tick.prepare()
    tick.end()
    tick.prepare()
    assert tick.armed and tick.active == 1
    tick.end()
    tick.prepare()
    assert not tick.armed


def test_end_without_begin_does_not_go_negative(tick):
    tick.end()
    assert tick.active == 0


@pytest.mark.parametrize("interval", [0, -1, 1.0, 5, 1e-7])
def test_interval_out_of_range_is_refused(interval):
    with pytest.raises(ValueError):
        _ext.tick.Tick(interval)


def test_closed_tick_ignores_calls():
    t = _ext.tick.Tick(0.001)
    t.begin()
    t.prepare()
    t.close()
    assert t.fileno() == -1 and not t.armed
    t.fire()
    t.prepare()
    t.end()
