"""``snailjob.threads``: the stop event that builds its lock only when
waited on, and the timer thread."""

from __future__ import annotations

import threading
import time
from typing import List

import pytest

from snailjob.threads import StopEvent, TimerWheel


def test_a_stop_event_is_an_event_that_waits_and_wakes_like_one():
    event = StopEvent()
    assert isinstance(event, threading.Event) and not event.is_set()
    assert event.wait(0.01) is False
    event.set()
    assert event.is_set() and event.wait() is True and event.wait(0) is True
    event.clear()
    assert not event.is_set() and event.wait(0.01) is False


@pytest.mark.parametrize("waiters", [1, 8])
def test_a_set_from_another_thread_wakes_every_waiter(waiters):
    event = StopEvent()
    woke: List[bool] = []
    threads = [threading.Thread(target=lambda: woke.append(event.wait(10))) for _ in range(waiters)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    event.set()
    for t in threads:
        t.join(5)
    assert woke == [True] * waiters


def test_set_racing_the_first_wait_is_never_lost():
    # set() and the first wait() of many fresh events at the same time: every wait must return True
    for _ in range(300):
        event = StopEvent()
        result: List[bool] = []
        waiter = threading.Thread(target=lambda e=event, r=result: r.append(e.wait(5)))
        waiter.start()
        event.set()
        waiter.join(6)
        assert result == [True]


def test_the_timer_runs_callbacks_in_deadline_order_and_skips_cancelled_ones():
    wheel = TimerWheel()
    ran: List[str] = []
    done = threading.Event()
    now = time.monotonic()
    wheel.schedule(now + 0.06, lambda: (ran.append("late"), done.set()))
    cancelled = wheel.schedule(now + 0.02, lambda: ran.append("cancelled"))
    wheel.schedule(now + 0.04, lambda: ran.append("middle"))
    wheel.schedule(now + 0.01, lambda: ran.append("early"))
    cancelled.cancel()
    assert done.wait(5)
    wheel.close()
    assert ran == ["early", "middle", "late"]
