"""Result delivery and log shipping: retries, bounds, drop counts, flushes."""

import logging
import threading
import time

import snailjob as sj
from snailjob.errors import TransportError
from snailjob.transport import Reply

from .conftest import dispatch, dispatch_body, wait_for

REPORT = "/report/dispatch/result"
LOGS = "/batch/server/report/log"


def test_result_retried_until_the_server_takes_it(make_client):
    client, transport = make_client([sj.job("r")(lambda args: "value")])
    failures = [3]

    def flaky(uri, body):
        if uri == REPORT and failures[0] > 0:
            failures[0] -= 1
            raise TransportError("UNAVAILABLE: simulated", code="UNAVAILABLE")
        return Reply(1, "", True)

    transport.responder = flaky
    dispatch(client.host_port, dispatch_body("r"))
    wait_for(lambda: client.stats()["results_delivered"] == 1, timeout=10)
    attempts = transport.bodies(REPORT)
    assert len(attempts) == 4 and all(a == attempts[0] for a in attempts)
    assert client.stats()["results_dropped"] == 0


def test_result_dropped_once_its_task_timeout_has_passed(make_client, caplog):
    client, transport = make_client([sj.job("r")(lambda args: 1)], snail_report_margin=0.5)

    def down(uri, body):
        if uri == REPORT:
            raise TransportError("UNAVAILABLE: simulated", code="UNAVAILABLE")
        return Reply(1, "", True)

    transport.responder = down
    with caplog.at_level(logging.ERROR, logger="snailjob"):
        started = time.monotonic()
        dispatch(client.host_port, dispatch_body("r", executorTimeout=1))
        wait_for(lambda: client.stats()["results_dropped"] == 1, timeout=10)
    assert 1.0 <= time.monotonic() - started < 5  # executorTimeout 1 s + margin 0.5 s
    assert "gave up delivering result of task" in caplog.text
    assert len(transport.bodies(REPORT)) >= 3  # retried meanwhile


def test_result_without_timeout_uses_the_retry_window(make_client):
    client, transport = make_client([sj.job("r")(lambda args: 1)], snail_report_retry_seconds=0.5)
    def down(uri, body):
        if uri == REPORT:
            raise TransportError("UNAVAILABLE: down", code="UNAVAILABLE")
        return Reply(1, "", True)

    transport.responder = down
    dispatch(client.host_port, dispatch_body("r", executorTimeout=0))
    wait_for(lambda: client.stats()["results_dropped"] == 1, timeout=10)


def test_job_thread_does_not_wait_for_the_network(make_client):
    gate = threading.Event()
    done_at = {}

    def slow_server(uri, body):
        if uri == REPORT:
            gate.wait(5)
        return Reply(1, "", True)

    @sj.job("fast")
    def fast(args):
        return "x"

    client, transport = make_client([fast])
    transport.responder = slow_server
    original = client._reports.task_done

    def timed(task, outcome):
        original(task, outcome)
        done_at["t"] = time.monotonic()

    client._reports.task_done = timed
    dispatch(client.host_port, dispatch_body("fast"))
    wait_for(lambda: "t" in done_at)
    assert client.stats()["results_pending"] == 1  # queued, the job thread moved on
    gate.set()
    wait_for(lambda: client.stats()["results_delivered"] == 1)


def entries(transport):
    return [entry for body in transport.bodies(LOGS) for entry in body[0]]


def test_logs_flush_at_batch_size_and_on_stop(make_client):
    release = threading.Event()

    @sj.job("chatty")
    def chatty(args):
        for i in range(120):
            sj.SnailLog.REMOTE.info("line %d", i)
        release.wait(5)

    client, transport = make_client([chatty], snail_log_remote_interval=60)
    dispatch(client.host_port, dispatch_body("chatty"))
    wait_for(lambda: len(entries(transport)) == 100)
    sizes = [len(body[0]) for body in transport.bodies(LOGS)]
    assert sizes == [50, 50]
    time.sleep(0.2)
    assert len(entries(transport)) == 100  # the last 20 wait for the interval...
    release.set()
    client.stop(grace=5)
    assert len(entries(transport)) == 120  # ...or for the final flush
    assert transport.closed


def test_logs_flush_after_interval(make_client):
    client, transport = make_client([sj.job("few")(lambda a: sj.SnailLog.REMOTE.info("one"))],
                                    snail_log_remote_interval=0.3)
    dispatch(client.host_port, dispatch_body("few"))
    wait_for(lambda: entries(transport), timeout=5)
    assert len(entries(transport)) == 1


def test_log_buffer_is_bounded_and_drops_are_reported(make_client, caplog):
    down = threading.Event()
    down.set()
    accepted = []

    def responder(uri, body):
        if uri == LOGS:
            if down.is_set():
                raise TransportError("UNAVAILABLE: simulated", code="UNAVAILABLE")
            accepted.extend(body[0])
        return Reply(1, "", True)

    @sj.job("flood")
    def flood(args):
        for i in range(250):
            sj.SnailLog.REMOTE.info("flood %d", i)

    client, transport = make_client([flood], snail_log_remote_max_buffer=100,
                                    snail_log_remote_buffer_size=50)
    transport.responder = responder
    dispatch(client.host_port, dispatch_body("flood"))
    wait_for(lambda: client.stats()["results_delivered"] == 1)
    assert client.stats()["logs_buffered"] <= 100
    with caplog.at_level(logging.WARNING, logger="snailjob"):
        down.clear()
        wait_for(lambda: client.stats()["logs_buffered"] == 0, timeout=15)
    shipped = [int(f["value"].split()[1]) for e in accepted
               for f in e["fieldList"] if f["name"] == "message"]
    assert client.stats()["logs_dropped"] == 250 - len(shipped) >= 150
    assert shipped == sorted(shipped) and shipped[-1] == 249  # the newest are kept, in order
    assert f"{250 - len(shipped)} log entries were dropped" in caplog.text


class _Answering:
    """A transport that records when each call came and answers ``accepted``."""

    def __init__(self) -> None:
        self.times = []
        self.accepted = True

    def call(self, uri, body, timeout):
        self.times.append(time.monotonic())
        return Reply(1, "", self.accepted)

    def close(self):
        pass


def test_a_repeated_result_is_sent_again_until_its_batch_is_discarded():
    from snailjob.delivery import ResultOutbox

    transport = _Answering()
    outbox = ResultOutbox(transport, rpc_timeout=1)
    outbox.offer(7, REPORT, "[]", expires=time.time() + 60, describe="sentinel", repeat=True)
    outbox.offer(8, REPORT, "[]", expires=time.time() + 60, describe="plain")
    wait_for(lambda: len(transport.times) >= 4, timeout=6)  # the two, then repeats at +1 s and +3 s
    gaps = [round(b - a, 1) for a, b in zip(transport.times[1:], transport.times[2:])]
    assert 0.9 <= transport.times[2] - transport.times[0] < 1.5 and 1.8 <= gaps[1] < 2.5, transport.times
    assert outbox.pending() == 0 and outbox.flush(0.1)  # repeats are not waited for
    assert (outbox.delivered, outbox.repeated) == (2, 2)
    assert outbox.discard_batch(7) == 0  # nothing undelivered; the repeats stop all the same
    count = len(transport.times)
    time.sleep(5.5)
    assert len(transport.times) == count
    outbox.close(1)


def test_repeats_end_at_expiry_and_when_refused():
    from snailjob.delivery import ResultOutbox

    transport = _Answering()
    outbox = ResultOutbox(transport, rpc_timeout=1)
    outbox.offer(7, REPORT, "[]", expires=time.time() + 2.5, describe="sentinel", repeat=True)
    time.sleep(4)
    assert len(transport.times) == 2  # at once and after 1 s; the next (at 3 s) would be past expiry
    transport.accepted = False
    outbox.offer(8, REPORT, "[]", expires=time.time() + 60, describe="sentinel", repeat=True)
    wait_for(lambda: len(transport.times) == 3)
    time.sleep(1.5)
    assert len(transport.times) == 3  # refused: no repeat
    outbox.close(1)


class _AnsweringLater:
    """A transport with ``call_async``: each call ends on another thread,
    failing the first ``failures`` times."""

    def __init__(self, failures=0):
        self.failures = failures
        self.calls = []
        self.active = self.most = 0
        self.lock = threading.Lock()

    def call(self, uri, body, timeout):
        raise AssertionError("call_async expected")

    def call_async(self, uri, body, timeout, done):
        with self.lock:
            self.calls.append(time.monotonic())
            fail = len(self.calls) <= self.failures
            self.active += 1
            self.most = max(self.most, self.active)
        inner = done

        def done(reply, error):
            with self.lock:
                self.active -= 1
            inner(reply, error)
        if fail:
            threading.Thread(target=done, args=(None, TransportError("down", code="UNAVAILABLE"))).start()
        else:
            threading.Timer(0.01, done, args=(Reply(1, "", True), None)).start()

    def close(self):
        pass


def test_calls_that_do_not_wait_are_limited_retried_and_flushed():
    from snailjob.delivery import ResultOutbox

    transport = _AnsweringLater(failures=2)
    outbox = ResultOutbox(transport, rpc_timeout=1, max_in_flight=3)
    for n in range(20):
        outbox.offer(n, REPORT, "[]", expires=time.time() + 60, describe=f"r{n}")
    assert outbox.flush(10)
    assert (outbox.delivered, outbox.retries, len(transport.calls)) == (20, 2, 22)
    assert transport.most == 3
    assert [t.name for t in outbox._threads] == ["snailjob-results"]  # no blocking senders
    outbox.offer(99, REPORT, "[]", expires=time.time() + 60, describe="sentinel", repeat=True)
    wait_for(lambda: outbox.repeated >= 1, timeout=5)  # repeats are started by the results thread
    outbox.close(1)
    assert not outbox._threads[0].is_alive()


class _CallOrStart(_AnsweringLater):
    """``call_async`` answers after ``delay``; ``call`` answers at once on the
    caller's thread, failing while ``call_fails`` is above 0."""

    def __init__(self, delay=0.01, call_fails=0):
        super().__init__()
        self.delay = delay
        self.call_fails = call_fails
        self.blocking = []  # (thread name, body) of each blocking call

    def call(self, uri, body, timeout):
        self.blocking.append((threading.current_thread().name, body))
        if self.call_fails > 0:
            self.call_fails -= 1
            raise TransportError("down", code="UNAVAILABLE")
        return Reply(1, "", True)

    def call_async(self, uri, body, timeout, done):
        with self.lock:
            self.calls.append(body)
        threading.Timer(self.delay, done, args=(Reply(1, "", True), None)).start()


def test_a_result_offered_alone_with_wait_is_delivered_by_the_offering_thread():
    from snailjob.delivery import ResultOutbox

    transport = _CallOrStart()
    outbox = ResultOutbox(transport, rpc_timeout=1)
    outbox.offer(1, REPORT, "a", expires=time.time() + 60, wait=True)
    assert outbox.delivered == 1  # at the server when offer returned
    assert transport.blocking == [(threading.current_thread().name, "a")] and transport.calls == []
    outbox.offer(2, REPORT, "b", expires=time.time() + 60)  # no wait: started in the background
    assert transport.calls == ["b"] and len(transport.blocking) == 1
    assert outbox.flush(5) and outbox.delivered == 2
    outbox.close(1)


def test_a_transport_whose_lone_calls_do_not_block_gets_even_a_lone_result_without_waiting():
    """The native transport: a call on the loop is cheaper than the
    offering thread's blocking call, so ``wait`` never blocks."""
    from snailjob.delivery import ResultOutbox

    transport = _CallOrStart()
    transport.lone_call_blocking = False
    outbox = ResultOutbox(transport, rpc_timeout=1)
    outbox.offer(1, REPORT, "a", expires=time.time() + 60, wait=True)
    assert transport.blocking == [] and transport.calls == ["a"]
    assert outbox.flush(5) and outbox.delivered == 1
    outbox.close(1)


def test_a_result_offered_with_wait_while_another_is_in_flight_does_not_wait():
    from snailjob.delivery import ResultOutbox

    transport = _CallOrStart(delay=0.5)
    outbox = ResultOutbox(transport, rpc_timeout=1)
    outbox.offer(1, REPORT, "a", expires=time.time() + 60)
    outbox.offer(2, REPORT, "b", expires=time.time() + 60, wait=True)
    assert transport.blocking == [] and transport.calls == ["a", "b"]
    assert outbox.flush(5) and outbox.delivered == 2
    outbox.close(1)


def test_a_failed_delivery_by_the_offering_thread_is_retried_not_lost():
    from snailjob.delivery import ResultOutbox

    transport = _CallOrStart(call_fails=1)
    outbox = ResultOutbox(transport, rpc_timeout=1)
    outbox.offer(1, REPORT, "a", expires=time.time() + 60, wait=True)
    assert outbox.delivered == 0 and len(transport.blocking) == 1  # failed once, held for a retry
    assert outbox.flush(10)
    assert (outbox.delivered, outbox.retries, transport.calls) == (1, 1, ["a"])  # the retry went in the background
    outbox.close(1)
